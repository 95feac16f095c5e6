package vmtest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"

	"ingot.dev/ingot/image/build"
	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/qemu"
)

// corruptRoot writes a direct-boot image directory like image whose initramfs holds a root
// filesystem with an intact superblock and every byte after it flipped.
func corruptRoot(t *testing.T, image, dir string) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(image, manifest.FileInitramfs))
	if err != nil {
		t.Fatal(err)
	}
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := dec.DecodeAll(data, nil)
	dec.Close()
	if err != nil {
		t.Fatal(err)
	}
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(raw)))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	w := cpio.Newc.Writer(&out)
	found := false
	for _, r := range recs {
		if r.Name == strings.TrimPrefix(build.RootFSPath, "/") {
			found = true
			img := make([]byte, r.FileSize)
			if _, err := r.ReadAt(img, 0); err != nil {
				t.Fatal(err)
			}
			for i := 96; i < len(img); i++ {
				img[i] ^= 0xff
			}
			r = cpio.StaticRecord(img, r.Info)
		}
		if err := w.WriteRecord(r); err != nil {
			t.Fatal(err)
		}
	}
	if !found {
		t.Fatalf("no %s in %s", build.RootFSPath, image)
	}
	if err := cpio.WriteTrailer(w); err != nil {
		t.Fatal(err)
	}
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, manifest.FileInitramfs), enc.EncodeAll(out.Bytes(), nil), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{manifest.FileKernel, manifest.FileManifest, manifest.FileDisk} {
		if err := os.Symlink(filepath.Join(image, name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBootRefusesCorruptRoot boots the dev image with its root filesystem corrupted past the
// superblock: PID 1 says in one console line which image failed and how, and powers off rather
// than booting on without it.
func TestBootRefusesCorruptRoot(t *testing.T) {
	testgate.Short(t, "VM boots")
	archName := hostArch()
	RequireVM(t, archName)
	dir := filepath.Join(t.TempDir(), "corrupt")
	corruptRoot(t, Image(t, "dev", archName), dir)
	vm := Boot(t, dir, qemu.BootDirect)
	vm.WaitFor(`boot failed err="root filesystem /ingot/root.sqfs: mount /dev/loop`, bootTimeout)
	vm.WaitFor(`type squashfs (ro): invalid argument"`, 5*time.Second)
	vm.WaitFor("ingot: power off", powerTimeout)
	out := vm.Console.Output()
	if strings.Contains(out, ReadyLine) || strings.Contains(out, "boot phase done") {
		t.Fatalf("the node booted on after a corrupt root filesystem:\n%s", tail(out, 3000))
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "boot failed") {
			t.Logf("console: %s", strings.TrimSpace(l))
		}
	}
}
