package squashfs

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	dsquash "github.com/diskfs/go-diskfs/filesystem/squashfs"

	"ingot.dev/ingot/image/initramfs"
	"ingot.dev/ingot/internal/testgate"
)

// sample is a small root filesystem with every kind of entry the image builder adds.
func sample(t *testing.T, reversed bool) *initramfs.Tree {
	t.Helper()
	steps := []func(*initramfs.Tree) error{
		func(tr *initramfs.Tree) error { return tr.File("/init", []byte("#!node binary\n"), 0o755) },
		func(tr *initramfs.Tree) error {
			return tr.File("/etc/ingot/profile.toml", []byte("name = \"dev\"\n"), 0o644)
		},
		func(tr *initramfs.Tree) error {
			return tr.File("/lib/modules/6.1.0/kernel/fs/overlay.ko", bytes.Repeat([]byte("module "), 40000), 0o644)
		},
		func(tr *initramfs.Tree) error { return tr.File("/bin/busybox", []byte("busybox"), 0o755) },
		func(tr *initramfs.Tree) error { return tr.Symlink("/bin/sh", "busybox") },
		func(tr *initramfs.Tree) error { return tr.Symlink("/usr/bin", "/bin") },
		func(tr *initramfs.Tree) error { return tr.Symlink("/bin/ingot-node", "/init") },
		func(tr *initramfs.Tree) error { return tr.Dir("/root", 0o700) },
		func(tr *initramfs.Tree) error { return tr.Dir("/var", 0o755) },
		func(tr *initramfs.Tree) error { return tr.CharDev("/dev/console", 0o600, 5, 1) },
		func(tr *initramfs.Tree) error { return tr.File("/etc/empty", nil, 0o600) },
	}
	tr := initramfs.New()
	for i := range steps {
		if reversed {
			i = len(steps) - 1 - i
		}
		if err := steps[i](tr); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

// TestWriteListsBackAndIsReproducible writes a tree, reads the image back with go-diskfs's reader
// (an implementation independent of the writer) and finds every entry with its type, mode,
// owner, mtime, contents and symlink target; the same tree built in another order gives the same
// bytes.
func TestWriteListsBackAndIsReproducible(t *testing.T) {
	testgate.RequireCommand(t, Tool)
	const mtime = 1700000000
	img, err := Write(context.Background(), sample(t, false), mtime)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Write(context.Background(), sample(t, true), mtime)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(img, again) {
		t.Fatalf("the same tree gave different images: %d and %d bytes", len(img), len(again))
	}
	if string(img[:4]) != Magic {
		t.Fatalf("image starts with %q, not the squashfs magic", img[:4])
	}

	p := filepath.Join(t.TempDir(), "root.sqfs")
	if err := os.WriteFile(p, img, 0o644); err != nil {
		t.Fatal(err)
	}
	st, err := file.OpenFromPath(p, true)
	if err != nil {
		t.Fatal(err)
	}
	sq, err := dsquash.Read(st, int64(len(img)), 0, 0)
	if err != nil {
		t.Fatalf("go-diskfs cannot read the image: %v", err)
	}

	want := map[string]initramfs.Node{}
	sample(t, false).Each(func(n initramfs.Node) error { want[n.Path] = n; return nil })
	got := map[string]fs.FileInfo{}
	// go-diskfs takes io/fs paths: "." is the root, no leading slash.
	var walk func(dir string)
	walk = func(dir string) {
		entries, err := sq.ReadDir(dir)
		if err != nil {
			t.Fatalf("read directory %s: %v", dir, err)
		}
		for _, e := range entries {
			fi, err := e.Info()
			if err != nil {
				t.Fatal(err)
			}
			p := path.Join(dir, e.Name())
			got["/"+p] = fi
			if fi.IsDir() {
				walk(p)
			}
		}
	}
	walk(".")

	var names []string
	for p := range got {
		names = append(names, p)
	}
	sort.Strings(names)
	if len(got) != len(want) {
		t.Errorf("image holds %d entries, the tree %d: %v", len(got), len(want), names)
	}
	for p, w := range want {
		fi, ok := got[p]
		if !ok {
			t.Errorf("%s is missing from the image (it holds %v)", p, names)
			continue
		}
		if fi.Mode() != w.Mode {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), w.Mode)
		}
		if !fi.ModTime().Equal(time.Unix(mtime, 0)) {
			t.Errorf("%s: mtime %v, want %v", p, fi.ModTime().UTC(), time.Unix(mtime, 0).UTC())
		}
		sys := fi.Sys().(*dsquash.StatT)
		if sys.UID != 0 || sys.GID != 0 {
			t.Errorf("%s: owner %d:%d, want 0:0", p, sys.UID, sys.GID)
		}
		switch {
		case w.Mode&fs.ModeSymlink != 0:
			if sys.LinkTarget != string(w.Data) {
				t.Errorf("%s: symlink to %q, want %q", p, sys.LinkTarget, w.Data)
			}
		case w.Mode.IsRegular():
			data, err := sq.ReadFile(p[1:])
			if err != nil {
				t.Errorf("read %s: %v", p, err)
			} else if !bytes.Equal(data, w.Data) {
				t.Errorf("%s: %d bytes read back differ from the %d written", p, len(data), len(w.Data))
			}
		}
	}
}

// The version recorded among an image's inputs is the installed mksquashfs's.
func TestVersion(t *testing.T) {
	testgate.RequireCommand(t, Tool)
	_, v, err := Version(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^[0-9]+\.[0-9]+(\.[0-9]+)?$`).MatchString(v) {
		t.Fatalf("version %q", v)
	}
}

// A tree whose timestamp squashfs cannot hold is refused before anything runs.
func TestWriteRefusesNegativeMtime(t *testing.T) {
	_, err := Write(context.Background(), sample(t, false), -1)
	if err == nil || err.Error() != "squashfs: mtime -1 does not fit squashfs's unsigned 32-bit timestamps" {
		t.Fatalf("err = %v", err)
	}
}
