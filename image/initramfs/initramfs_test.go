package initramfs

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	"github.com/u-root/u-root/pkg/cpio"

	"ingot.dev/ingot/image/debpkg"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
)

func TestTreeReproducibleAndOrdered(t *testing.T) {
	build := func(order []string) []byte {
		tr := New()
		for _, p := range order {
			if err := tr.File(p, []byte(p), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := tr.CharDev("/dev/console", 0o600, 5, 1); err != nil {
			t.Fatal(err)
		}
		if err := tr.Symlink("/bin/sh", "busybox"); err != nil {
			t.Fatal(err)
		}
		b, err := tr.Compressed(0)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a := build([]string{"/etc/b", "/etc/a", "/lib/modules/x/y.ko"})
	b := build([]string{"/lib/modules/x/y.ko", "/etc/a", "/etc/b"})
	if !bytes.Equal(a, b) {
		t.Fatal("same tree added in a different order gave different bytes")
	}

	tr := New()
	tr.File("/a/b/c", []byte("x"), 0o644)
	var raw bytes.Buffer
	if err := tr.WriteCPIO(&raw, 42); err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw.Bytes())))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range recs {
		names = append(names, r.Name)
		if r.MTime != 42 {
			t.Errorf("%s mtime %d", r.Name, r.MTime)
		}
	}
	// Parents must come before children or the kernel drops the child.
	if want := []string{"a", "a/b", "a/b/c"}; len(names) < 3 || names[0] != want[0] || names[1] != want[1] || names[2] != want[2] {
		t.Fatalf("records = %v", names)
	}
}

func TestTreeRejects(t *testing.T) {
	tr := New()
	if err := tr.File("relative", nil, 0o644); err == nil {
		t.Error("relative path accepted")
	}
	tr.File("/x", nil, 0o644)
	if err := tr.File("/x", nil, 0o644); err == nil {
		t.Error("duplicate accepted")
	}
	if err := tr.File("/x/y", nil, 0o644); err == nil {
		t.Error("file under a file accepted")
	}
}

func TestBusyboxApplets(t *testing.T) {
	fake := []byte("junk\x00[\x00[[\x00acpid\x00ash\x00cat\x00chmod\x00cp\x00echo\x00ls\x00mount\x00sh\x00zcat\x00\x00more junk")
	got, err := BusyboxApplets(fake)
	if err != nil || len(got) != 12 || got[2] != "acpid" || got[11] != "zcat" {
		t.Fatalf("applets = %v, %v", got, err)
	}
	// Against the real binary the image builder ships: Debian's busybox-static, from the cache.
	f := &debpkg.Fetcher{Cache: cachedir.Default(), Arch: runtime.GOARCH}
	deb, err := f.Fetch(context.Background(), "busybox-static")
	if err != nil {
		testgate.Skip(t, "cannot fetch busybox-static: "+err.Error())
	}
	root, err := f.Unpack(context.Background(), deb)
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(filepath.Join(root, "bin/busybox"))
	if err != nil {
		t.Fatal(err)
	}
	names, err := BusyboxApplets(bin)
	if err != nil || len(names) < 100 || !slices.Contains(names, "sh") || !slices.Contains(names, "mount") {
		t.Fatalf("busybox-static: %d applets (want over 100, sh and mount among them), %v", len(names), err)
	}
}
