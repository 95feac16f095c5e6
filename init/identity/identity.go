// Package identity writes the files that make one node distinct from another booted from the same
// image: /etc/machine-id (created once, kept on the state partition), /etc/hostname and
// /etc/hosts. /etc/os-release is the image's and is written at build time, not here.
package identity

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// KeptMachineID is where the machine-id lives on the state partition.
const KeptMachineID = "/var/lib/ingot/node/machine-id"

// ValidMachineID reports whether s is a machine-id: 32 lowercase hexadecimal characters, not all
// zeros (machine-id(5)).
func ValidMachineID(s string) bool {
	if len(s) != 32 || s == strings.Repeat("0", 32) {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// NewMachineID draws a random machine-id from r (crypto/rand when nil), formatted as a version 4
// UUID without dashes, as systemd does.
func NewMachineID(r io.Reader) (string, error) {
	if r == nil {
		r = rand.Reader
	}
	var b [16]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("generate machine-id: %w", err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return hex.EncodeToString(b[:]), nil
}

// MachineID returns the node's machine-id, kept at kept: read when it holds a valid one, else
// generated from r and written there (0444 in a 0700 directory). It then writes it to etc (the
// root is a tmpfs, so /etc/machine-id is rewritten every boot from the kept copy). created says a
// new identity was made: the first boot, or a state partition that was lost.
func MachineID(kept, etc string, r io.Reader) (id string, created bool, err error) {
	data, err := os.ReadFile(kept)
	switch {
	case err == nil && ValidMachineID(strings.TrimSpace(string(data))):
		id = strings.TrimSpace(string(data))
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return "", false, fmt.Errorf("read machine-id %s: %w", kept, err)
	default:
		// Missing, or not a machine-id (a torn write): a new one.
		if id, err = NewMachineID(r); err != nil {
			return "", false, err
		}
		if err := os.MkdirAll(filepath.Dir(kept), 0o700); err != nil {
			return "", false, fmt.Errorf("keep machine-id: %w", err)
		}
		if err := writeAtomic(kept, []byte(id+"\n"), 0o444); err != nil {
			return "", false, err
		}
		created = true
	}
	if err := writeAtomic(etc, []byte(id+"\n"), 0o444); err != nil {
		return "", false, err
	}
	return id, created, nil
}

// Hosts renders /etc/hosts: localhost on both loopback addresses, and the hostname on 127.0.1.1
// (as Debian does), so the node resolves its own name without DNS.
func Hosts(hostname string) []byte {
	var b strings.Builder
	b.WriteString("# written by ingot-node at boot\n")
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	if hostname != "" && hostname != "localhost" {
		fmt.Fprintf(&b, "127.0.1.1\t%s\n", hostname)
	}
	return []byte(b.String())
}

// WriteHostFiles writes hostname and hosts files under etc (/etc) for hostname.
func WriteHostFiles(etc, hostname string) error {
	if err := writeAtomic(filepath.Join(etc, "hostname"), []byte(hostname+"\n"), 0o644); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(etc, "hosts"), Hosts(hostname), 0o644)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
