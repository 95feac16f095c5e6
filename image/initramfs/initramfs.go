// Package initramfs assembles the node's root filesystem as a reproducible, zstd-compressed newc
// cpio archive: entries sorted by path, parents before children, fixed owner, inode numbers and
// modification time, so the same inputs always give the same bytes.
package initramfs

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"
)

type kind int

const (
	kindDir kind = iota
	kindFile
	kindSymlink
	kindCharDev
)

type entry struct {
	kind         kind
	mode         uint64
	data         []byte
	major, minor uint64
}

// Tree is an in-memory root filesystem under construction. Paths are absolute ("/bin/sh").
type Tree struct {
	entries map[string]entry
}

// New returns an empty tree holding only "/".
func New() *Tree { return &Tree{entries: map[string]entry{}} }

func clean(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("initramfs path %q is not absolute", p)
	}
	c := path.Clean(p)
	if c == "/" {
		return "", fmt.Errorf("initramfs path %q names the root", p)
	}
	return c, nil
}

func (t *Tree) add(p string, e entry) error {
	c, err := clean(p)
	if err != nil {
		return err
	}
	if old, ok := t.entries[c]; ok {
		if old.kind == kindDir && e.kind == kindDir {
			return nil
		}
		return fmt.Errorf("initramfs path %s added twice", c)
	}
	for d := path.Dir(c); d != "/"; d = path.Dir(d) {
		if old, ok := t.entries[d]; ok {
			if old.kind != kindDir {
				return fmt.Errorf("initramfs path %s: parent %s is not a directory", c, d)
			}
			continue
		}
		t.entries[d] = entry{kind: kindDir, mode: 0o755}
	}
	t.entries[c] = e
	return nil
}

// Has reports whether the tree holds p.
func (t *Tree) Has(p string) bool {
	c, err := clean(p)
	if err != nil {
		return false
	}
	_, ok := t.entries[c]
	return ok
}

// Dir adds a directory (and its parents).
func (t *Tree) Dir(p string, mode os.FileMode) error {
	return t.add(p, entry{kind: kindDir, mode: uint64(mode.Perm())})
}

// File adds a regular file with the given contents.
func (t *Tree) File(p string, data []byte, mode os.FileMode) error {
	return t.add(p, entry{kind: kindFile, mode: uint64(mode.Perm()), data: data})
}

// CopyFile adds the host file src at p.
func (t *Tree) CopyFile(p, src string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("initramfs %s: %w", p, err)
	}
	return t.File(p, data, mode)
}

// Symlink adds a symbolic link at p pointing at target.
func (t *Tree) Symlink(p, target string) error {
	return t.add(p, entry{kind: kindSymlink, mode: 0o777, data: []byte(target)})
}

// CharDev adds a character device node. The kernel needs /dev/console in the archive to give
// init its stdio before anything is mounted.
func (t *Tree) CharDev(p string, mode os.FileMode, major, minor uint64) error {
	return t.add(p, entry{kind: kindCharDev, mode: uint64(mode.Perm()), major: major, minor: minor})
}

// Paths lists every path in the tree, sorted.
func (t *Tree) Paths() []string {
	var ps []string
	for p := range t.entries {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// Node is one entry of a Tree as Each hands it out.
type Node struct {
	Path string      // absolute, cleaned
	Mode os.FileMode // type bits (os.ModeDir, os.ModeSymlink, os.ModeCharDevice) and permissions
	// Data is a file's contents or a symlink's target.
	Data         []byte
	Major, Minor uint64 // a character device's numbers
}

// Each calls fn for every entry in path order (parents before children), so another writer (the
// squashfs payload) lays out exactly the tree the cpio would hold.
func (t *Tree) Each(fn func(Node) error) error {
	for _, p := range t.Paths() {
		e := t.entries[p]
		n := Node{Path: p, Mode: os.FileMode(e.mode).Perm(), Data: e.data, Major: e.major, Minor: e.minor}
		switch e.kind {
		case kindDir:
			n.Mode |= os.ModeDir
		case kindSymlink:
			n.Mode |= os.ModeSymlink
		case kindCharDev:
			n.Mode |= os.ModeDevice | os.ModeCharDevice
		}
		if err := fn(n); err != nil {
			return err
		}
	}
	return nil
}

// WriteCPIO writes the tree as an uncompressed newc archive with every mtime set to mtime.
func (t *Tree) WriteCPIO(w io.Writer, mtime int64) error {
	cw := cpio.Newc.Writer(w)
	for i, p := range t.Paths() {
		e := t.entries[p]
		info := cpio.Info{Ino: uint64(i + 1), NLink: 1, MTime: uint64(mtime), Name: strings.TrimPrefix(p, "/")}
		var rec cpio.Record
		switch e.kind {
		case kindDir:
			info.Mode = cpio.S_IFDIR | e.mode
			info.NLink = 2
			rec = cpio.Record{Info: info}
		case kindFile:
			info.Mode = cpio.S_IFREG | e.mode
			rec = cpio.StaticRecord(e.data, info)
		case kindSymlink:
			info.Mode = cpio.S_IFLNK | e.mode
			rec = cpio.StaticRecord(e.data, info)
		case kindCharDev:
			info.Mode = cpio.S_IFCHR | e.mode
			info.Rmajor, info.Rminor = e.major, e.minor
			rec = cpio.Record{Info: info}
		}
		if err := cw.WriteRecord(rec); err != nil {
			return fmt.Errorf("write initramfs entry %s: %w", p, err)
		}
	}
	if err := cpio.WriteTrailer(cw); err != nil {
		return fmt.Errorf("write initramfs trailer: %w", err)
	}
	return nil
}

// Compressed returns the archive compressed with zstd. One encoder goroutine and a fixed level keep
// the output identical across runs and machines.
func (t *Tree) Compressed(mtime int64) ([]byte, error) {
	var raw bytes.Buffer
	if err := t.WriteCPIO(&raw, mtime); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	enc, err := zstd.NewWriter(&out, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedBetterCompression))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	if _, err := enc.Write(raw.Bytes()); err != nil {
		return nil, fmt.Errorf("compress initramfs: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("compress initramfs: %w", err)
	}
	return out.Bytes(), nil
}

// BusyboxApplets reads the applet names compiled into a busybox binary. Busybox keeps them as one
// sorted run of NUL-terminated strings starting with "[" and "[["; reading them from the binary
// works for any target architecture without running it.
func BusyboxApplets(bin []byte) ([]string, error) {
	start := bytes.Index(bin, []byte("\x00[\x00[[\x00"))
	if start < 0 {
		return nil, fmt.Errorf("busybox: applet name table not found")
	}
	var names []string
	rest := bin[start+1:]
	for {
		i := bytes.IndexByte(rest, 0)
		if i <= 0 {
			break
		}
		name := string(rest[:i])
		if !validApplet(name) || (len(names) > 0 && name <= names[len(names)-1]) {
			break
		}
		names = append(names, name)
		rest = rest[i+1:]
	}
	if len(names) < 10 {
		return nil, fmt.Errorf("busybox: applet name table too short (%d names)", len(names))
	}
	return names, nil
}

func validApplet(s string) bool {
	if s == "[" || s == "[[" {
		return true
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return s != ""
}
