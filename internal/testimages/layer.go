package testimages

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// node is one entry of a layer: a directory, regular file, symlink or hard link.
type node struct {
	typ  byte // tar.TypeDir, TypeReg, TypeSymlink or TypeLink
	mode int64
	data []byte
	link string // symlink target, or the path a hard link points at (relative to the root)
}

// tree is the content of one layer, keyed by path relative to the root ("bin/sh").
type tree map[string]*node

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

func (t tree) parents(p string) {
	for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := t[d]; !ok {
			t[d] = &node{typ: tar.TypeDir, mode: 0o755}
		}
	}
}

func (t tree) dir(p string, mode int64) {
	p = clean(p)
	t.parents(p)
	t[p] = &node{typ: tar.TypeDir, mode: mode}
}

func (t tree) file(p string, mode int64, data []byte) {
	p = clean(p)
	t.parents(p)
	t[p] = &node{typ: tar.TypeReg, mode: mode, data: data}
}

func (t tree) symlink(p, target string) {
	p = clean(p)
	t.parents(p)
	t[p] = &node{typ: tar.TypeSymlink, mode: 0o777, link: target}
}

// hardlink makes p another name of the regular file target, as busybox applets are installed.
func (t tree) hardlink(p, target string) {
	p = clean(p)
	t.parents(p)
	t[p] = &node{typ: tar.TypeLink, link: clean(target)}
}

// copyFrom adds the file, symlink or directory at root/rel to the tree under dst.
func (t tree) copyFrom(root, rel, dst string, mode int64) error {
	src := path.Join(root, rel)
	fi, err := os.Lstat(src)
	if err != nil {
		return fmt.Errorf("add %s to layer: %w", src, err)
	}
	switch {
	case fi.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(src)
		if err != nil {
			return fmt.Errorf("add %s to layer: %w", src, err)
		}
		t.symlink(dst, target)
	case fi.Mode().IsRegular():
		data, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("add %s to layer: %w", src, err)
		}
		if mode == 0 {
			mode = int64(fi.Mode().Perm())
		}
		t.file(dst, mode, data)
	case fi.IsDir():
		t.dir(dst, int64(fi.Mode().Perm()))
	default:
		return fmt.Errorf("add %s to layer: not a file, directory or symlink", src)
	}
	return nil
}

// tar writes the tree as a reproducible tar: fixed mtime, owner root, entries sorted by path with
// hard links last (a link must follow the file it names: "bin/[" sorts before "bin/busybox").
func (t tree) tar(mtime time.Time) ([]byte, error) {
	names := make([]string, 0, len(t))
	for n := range t {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		li, lj := t[names[i]].typ == tar.TypeLink, t[names[j]].typ == tar.TypeLink
		if li != lj {
			return lj
		}
		return names[i] < names[j]
	})
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := t[n]
		h := &tar.Header{
			Typeflag: e.typ,
			Name:     n,
			Mode:     e.mode,
			ModTime:  mtime,
			Format:   tar.FormatPAX,
		}
		switch e.typ {
		case tar.TypeDir:
			h.Name += "/"
		case tar.TypeReg:
			h.Size = int64(len(e.data))
		case tar.TypeSymlink:
			h.Linkname = e.link
		case tar.TypeLink:
			target, ok := t[e.link]
			if !ok || target.typ != tar.TypeReg {
				return nil, fmt.Errorf("hard link %s: %s is not a file of the same layer", n, e.link)
			}
			h.Linkname = e.link
			h.Mode = target.mode
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("write layer entry %s: %w", n, err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				return nil, fmt.Errorf("write layer entry %s: %w", n, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// layer turns the tree into a gzip-compressed OCI layer.
func (t tree) layer(mtime time.Time) (v1.Layer, error) {
	raw, err := t.tar(mtime)
	if err != nil {
		return nil, err
	}
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(raw)), nil
	}, tarball.WithMediaType(types.OCILayer))
}
