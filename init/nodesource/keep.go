package nodesource

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Keep stores c in dir as the last good node config: node.toml (and a cidata volume's
// meta-data keys) 0600 in a 0700 directory, each written to a temporary file, synced and renamed,
// so a power cut leaves the old copy or the new one, never half of each. Call it only with a
// config that parsed: a bad source must not replace a good kept copy.
func Keep(dir string, c Config) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("keep node config: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("keep node config: %w", err)
	}
	if err := writeAtomic(filepath.Join(dir, FileName), c.TOML); err != nil {
		return err
	}
	md := ""
	if c.Meta.LocalHostname != "" {
		md += "local-hostname: " + c.Meta.LocalHostname + "\n"
	}
	if c.Meta.InstanceID != "" {
		md += "instance-id: " + c.Meta.InstanceID + "\n"
	}
	return writeAtomic(filepath.Join(dir, MetaDataName), []byte(md))
}

// LoadKept returns the config Keep stored in dir, or ErrNotFound.
func LoadKept(dir string) (Config, error) {
	path := filepath.Join(dir, FileName)
	data, err := readLimited(path)
	if errors.Is(err, os.ErrNotExist) {
		return Config{}, ErrNotFound
	}
	c := Config{Source: Kept, Name: path}
	if err != nil {
		return c, fmt.Errorf("read kept node config: %w", err)
	}
	c.TOML = data
	if md, err := readLimited(filepath.Join(dir, MetaDataName)); err == nil {
		c.Meta = ParseMetaData(md)
	}
	return c, nil
}

func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
