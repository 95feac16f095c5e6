// Package nodesource finds the node's own configuration (node.toml) at boot and keeps the last
// good copy on the state partition. Sources, in order: QEMU fw_cfg, a config drive (a vfat or ISO
// 9660 volume labelled INGOT-CONFIG) and a NoCloud cidata volume; `ingot.node=` on the kernel
// command line names one. It returns raw bytes and never parses TOML (profiles/nodeconfig does)
// and never logs a config's content: it may hold secrets.
//
// Everything is rooted at paths in Reader, so the search runs without root against a fake sysfs
// and image files written by a test; only mounting a volume needs the real thing.
package nodesource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"ingot.dev/ingot/profiles/nodeconfig"
)

// Source names where a node config came from; the values are those of `ingot.node=`.
type Source string

const (
	FwCfg  Source = "fwcfg"
	Drive  Source = "drive"
	Cidata Source = "cidata"
	None   Source = "none" // ingot.node=none: read no source (the kept config still applies)
	Kept   Source = "kept" // the copy on the state partition
)

// Names the sources are found by.
const (
	FwCfgName    = "opt/ingot/node.toml"
	DriveLabel   = "INGOT-CONFIG"
	CidataLabel  = "cidata"
	FileName     = "node.toml"
	MetaDataName = "meta-data"
	// KeptDir holds the last good node.toml (and a cidata volume's meta-data) on /var.
	KeptDir = "/var/lib/ingot/node"
	// MaxSize bounds what is read from any source: a node config is a few KiB.
	MaxSize = nodeconfig.MaxSize
)

// ErrNotFound means no source is present: the normal case for a node without per-node settings.
var ErrNotFound = errors.New("no node config source")

// DefaultOrder is the search order when the command line names no source.
func DefaultOrder() []Source { return []Source{FwCfg, Drive, Cidata} }

// Order returns the sources to try for a kernel command line: the one `ingot.node=` names, none
// for ingot.node=none, else DefaultOrder.
func Order(cmdline string) ([]Source, error) {
	var named string
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "ingot.node="); ok {
			named = v // the last one wins, as with other kernel parameters
		}
	}
	switch Source(named) {
	case "":
		return DefaultOrder(), nil
	case FwCfg, Drive, Cidata:
		return []Source{Source(named)}, nil
	case None:
		return nil, nil
	}
	return DefaultOrder(), fmt.Errorf("ingot.node=%s: unknown source (want fwcfg, drive, cidata or none)", named)
}

// Config is what a source held.
type Config struct {
	Source Source
	// Name identifies the file in messages ("fw_cfg:opt/ingot/node.toml",
	// "/dev/vdb:node.toml"): the prefix of file:line:key errors.
	Name string
	// TOML is node.toml's bytes; nil when a cidata volume holds only meta-data.
	TOML []byte
	Meta MetaData
}

// MetaData are the two keys ingot reads from a NoCloud meta-data file.
type MetaData struct {
	LocalHostname string
	InstanceID    string
}

// ParseMetaData reads `local-hostname:` and `instance-id:` from NoCloud meta-data. The file is
// YAML, but these are flat top-level scalars, so a line reader is enough and ingot carries no
// YAML parser; every other line is ignored.
func ParseMetaData(data []byte) MetaData {
	var m MetaData
	for _, line := range strings.Split(string(data), "\n") {
		if line == "" || line[0] == ' ' || line[0] == '\t' || line[0] == '#' {
			continue
		}
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		if i := strings.Index(val, " #"); i >= 0 {
			val = strings.TrimSpace(val[:i])
		}
		if len(val) >= 2 && (val[0] == '"' || val[0] == '\'') && val[len(val)-1] == val[0] {
			val = val[1 : len(val)-1]
		}
		switch strings.TrimSpace(key) {
		case "local-hostname":
			m.LocalHostname = val
		case "instance-id":
			m.InstanceID = val
		}
	}
	return m
}

// Reader searches for a node config.
type Reader struct {
	Sys string // sysfs root, "/sys"
	Dev string // device directory, "/dev"
	// ReadVolume returns the named files of a volume (missing ones absent from the map); nil
	// mounts it read-only on a temporary directory.
	ReadVolume func(ctx context.Context, v Volume, names ...string) (map[string][]byte, error)
	// Wait is how long to look for a volume that ingot.node= names alone: disks appear
	// asynchronously, and a named source is expected to be there. Without a named source one
	// look is enough (by then the state partition's disk is up, and a missing source is normal).
	Wait time.Duration
}

// System is the Reader of the running node.
func System() Reader { return Reader{Sys: "/sys", Dev: "/dev", Wait: 3 * time.Second} }

// Read tries sources in order and returns the first present one. A present source that cannot be
// read is an error naming it (the caller falls back to the kept config); no source at all is
// ErrNotFound.
func (r Reader) Read(ctx context.Context, order []Source) (Config, error) {
	var vols []Volume
	scanned := false
	for _, s := range order {
		if s == FwCfg {
			c, err := r.fwcfg()
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return c, err
		}
		if !scanned {
			vols, scanned = r.Volumes(), true
		}
		if len(order) == 1 && !has(vols, s) {
			vols = r.waitFor(ctx, s)
		}
		for _, v := range vols {
			if v.Is(s) {
				return r.volume(ctx, s, v)
			}
		}
	}
	return Config{}, ErrNotFound
}

func has(vols []Volume, s Source) bool {
	for _, v := range vols {
		if v.Is(s) {
			return true
		}
	}
	return false
}

// waitFor rescans the block devices until a volume of source s shows up or Wait has passed.
func (r Reader) waitFor(ctx context.Context, s Source) []Volume {
	deadline := time.Now().Add(r.Wait)
	for {
		vols := r.Volumes()
		if has(vols, s) || !time.Now().Before(deadline) {
			return vols
		}
		select {
		case <-ctx.Done():
			return vols
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Is reports whether the volume's label makes it source s (Drive or Cidata), ignoring case. A FAT
// label holds 11 characters, one fewer than INGOT-CONFIG: a vfat config drive carries
// "INGOT-CONFI", which is what formatters that truncate (go-diskfs) write.
func (v Volume) Is(s Source) bool {
	switch s {
	case Drive:
		return strings.EqualFold(v.Label, DriveLabel) || v.FSType == FSVfat && strings.EqualFold(v.Label, DriveLabel[:fatLabelLen])
	case Cidata:
		return strings.EqualFold(v.Label, CidataLabel)
	}
	return false
}

func (r Reader) fwcfg() (Config, error) {
	path := filepath.Join(r.Sys, "firmware/qemu_fw_cfg/by_name", FwCfgName, "raw")
	c := Config{Source: FwCfg, Name: "fw_cfg:" + FwCfgName}
	data, err := readLimited(path)
	if errors.Is(err, os.ErrNotExist) {
		return Config{}, ErrNotFound
	}
	if err != nil {
		return c, fmt.Errorf("read node config from fw_cfg %s: %w", FwCfgName, err)
	}
	c.TOML = data
	return c, nil
}

func (r Reader) volume(ctx context.Context, s Source, v Volume) (Config, error) {
	c := Config{Source: s, Name: v.Dev + ":" + FileName}
	read := r.ReadVolume
	if read == nil {
		read = mountAndRead
	}
	names := []string{FileName}
	if s == Cidata {
		names = append(names, MetaDataName)
	}
	files, err := read(ctx, v, names...)
	if err != nil {
		return c, fmt.Errorf("read node config from %s: %w", v, err)
	}
	c.TOML = files[FileName]
	if s == Cidata {
		md, ok := files[MetaDataName]
		if !ok && c.TOML == nil {
			return c, fmt.Errorf("read node config from %s: neither %s nor %s", v, MetaDataName, FileName)
		}
		c.Meta = ParseMetaData(md)
	} else if c.TOML == nil {
		return c, fmt.Errorf("read node config from %s: no %s on it", v, FileName)
	}
	return c, nil
}

// Volumes lists the FAT and ISO 9660 volumes among the block devices (disks and partitions) in
// sysfs, in sysfs order.
func (r Reader) Volumes() []Volume {
	var out []Volume
	dir := filepath.Join(r.Sys, "class/block")
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		name := e.Name()
		data, err := os.ReadFile(filepath.Join(dir, name, "uevent"))
		if err == nil {
			for _, line := range strings.Split(string(data), "\n") {
				if v, ok := strings.CutPrefix(line, "DEVNAME="); ok {
					name = v
				}
			}
		}
		// RAM disks and unbound loop devices never hold a config; skipping them spares the opens.
		if strings.HasPrefix(name, "ram") || strings.HasPrefix(name, "zram") {
			continue
		}
		if v, ok, err := ProbeLabel(filepath.Join(r.Dev, name)); err == nil && ok {
			out = append(out, v)
		}
	}
	return out
}

// mountAndRead mounts the volume read-only, nosuid, nodev and noexec on a temporary directory,
// reads the named files and unmounts it again.
func mountAndRead(ctx context.Context, v Volume, names ...string) (map[string][]byte, error) {
	dir, err := os.MkdirTemp("", "ingot-config-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(dir)
	data := ""
	if v.FSType == FSVfat {
		// The two code pages the node's kernel modules provide (nls_cp437, nls_ascii), named so a
		// kernel default of utf8 cannot make the mount fail.
		data = "codepage=437,iocharset=ascii"
	}
	flags := uintptr(unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := unix.Mount(v.Dev, dir, v.FSType, flags, data); err != nil {
		return nil, fmt.Errorf("mount %s (%s) on %s: %w", v.Dev, v.FSType, dir, err)
	}
	defer unix.Unmount(dir, 0)
	out := map[string][]byte{}
	for _, n := range names {
		b, err := readLimited(filepath.Join(dir, n))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[n] = b
	}
	return out, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("read %s: larger than %d bytes", path, MaxSize)
	}
	return b, nil
}
