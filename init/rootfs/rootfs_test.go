package rootfs

import (
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"ingot.dev/ingot/image/initramfs"
	"ingot.dev/ingot/image/squashfs"
	"ingot.dev/ingot/internal/testgate"
)

func TestRootIsRootfs(t *testing.T) {
	initramfs := "1 1 0:2 / / rw - rootfs rootfs rw,size=1000k\n2 1 0:5 / /proc rw - proc proc rw\n"
	tmpfs := "20 1 0:25 / / rw,relatime - tmpfs tmpfs rw,mode=755\n"
	if !rootIsRootfs(initramfs) {
		t.Error("initramfs root not detected")
	}
	if rootIsRootfs(tmpfs) {
		t.Error("tmpfs root taken for the initramfs")
	}
}

// image writes a small root filesystem image as the builder would and returns its path.
func image(t *testing.T) string {
	t.Helper()
	testgate.RequireCommand(t, squashfs.Tool)
	tr := initramfs.New()
	for _, err := range []error{
		tr.File("/init", []byte("node binary"), 0o755),
		tr.Symlink("/bin/ingot-node", "/init"),
		tr.File("/etc/ingot/profile.toml", []byte("name = \"dev\"\n"), 0o644),
		tr.File("/etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644),
		tr.Symlink("/etc/mtab", "/proc/self/mounts"),
		tr.Dir("/root", 0o700),
		tr.Dir("/var", 0o755),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	data, err := squashfs.Write(context.Background(), tr, 0)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "root.sqfs")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCheckRefusesBadImages: what PID 1 says, before any mount, about an image that is missing,
// is not a squashfs, is another version or was cut short.
func TestCheckRefusesBadImages(t *testing.T) {
	good, err := os.ReadFile(image(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	used := binary.LittleEndian.Uint64(good[40:48]) // bytes_used; mksquashfs pads the file to 4 KiB
	v3 := append([]byte(nil), good...)
	v3[28] = 3
	for _, c := range []struct {
		name, path, want string
	}{
		{"good", write("good", good), ""},
		{"missing", filepath.Join(dir, "nothing"), "root filesystem " + dir + "/nothing: not in the initramfs: open " + dir + "/nothing: no such file or directory"},
		{"empty", write("empty", nil), "root filesystem " + dir + "/empty: not a squashfs image: 0 bytes, too short for a superblock"},
		{"cpio", write("cpio", []byte(strings.Repeat("070701", 20))), "root filesystem " + dir + `/cpio: not a squashfs image (it starts with "0707")`},
		{"version", write("version", v3), "root filesystem " + dir + "/version: squashfs version 3.0; the kernel reads 4.0"},
		{"truncated", write("truncated", good[:used-1]), "root filesystem " + dir + "/truncated: truncated: its superblock counts "},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Check(c.path)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("a good image refused: %v", err)
			case c.want != "" && (err == nil || !strings.HasPrefix(err.Error(), c.want)):
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}

// inMountNamespace re-runs the test named run in a mount namespace of its own and reports its
// output; it returns true in that child, where the test body runs.
func inMountNamespace(t *testing.T, run string) bool {
	t.Helper()
	testgate.RequireRoot(t)
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		testgate.Skip(t, "no /dev/loop-control on this host (modprobe loop)")
	}
	if os.Getenv("INGOT_TEST_ROOTFS_NS") == run {
		return true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^"+run+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "INGOT_TEST_ROOTFS_NS="+run)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS} // also makes / private
	out, err := cmd.CombinedOutput()
	t.Logf("in a private mount namespace:\n%s", out)
	if err != nil {
		t.Fatalf("%v", err)
	}
	return false
}

// TestMountReadOnlyWithWritableEtc mounts an image as PID 1 does: the root is read-only on a
// read-only loop device, /etc and /root are tmpfs holding the image's files and can be written.
func TestMountReadOnlyWithWritableEtc(t *testing.T) {
	if !inMountNamespace(t, "TestMountReadOnlyWithWritableEtc") {
		return
	}
	img := image(t)
	target := t.TempDir()
	if err := Mount(img, target); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(target, unix.MNT_DETACH)

	if data, err := os.ReadFile(filepath.Join(target, "init")); err != nil || string(data) != "node binary" {
		t.Errorf("/init: %q, %v", data, err)
	}
	if l, err := os.Readlink(filepath.Join(target, "bin/ingot-node")); err != nil || l != "/init" {
		t.Errorf("/bin/ingot-node: %q, %v", l, err)
	}
	if err := os.WriteFile(filepath.Join(target, "init"), nil, 0o755); !errors.Is(err, unix.EROFS) {
		t.Errorf("writing /init: %v, want a read-only file system", err)
	}
	if data, err := os.ReadFile(filepath.Join(target, "etc/ingot/profile.toml")); err != nil || string(data) != "name = \"dev\"\n" {
		t.Errorf("/etc/ingot/profile.toml on the writable /etc: %q, %v", data, err)
	}
	if l, err := os.Readlink(filepath.Join(target, "etc/mtab")); err != nil || l != "/proc/self/mounts" {
		t.Errorf("/etc/mtab: %q, %v", l, err)
	}
	if err := os.WriteFile(filepath.Join(target, "etc/hostname"), []byte("node\n"), 0o644); err != nil {
		t.Errorf("writing /etc/hostname: %v", err)
	}
	if st, err := os.Stat(filepath.Join(target, "root")); err != nil || st.Mode().Perm() != 0o700 {
		t.Errorf("/root: %v, %v; want a 0700 directory", st, err)
	}

	mounts, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	var dev string
	for _, l := range strings.Split(string(mounts), "\n") {
		f := strings.Fields(l)
		if len(f) < 4 {
			continue
		}
		switch f[1] {
		case target:
			dev = f[0]
			if f[2] != "squashfs" || !strings.HasPrefix(f[3], "ro,") {
				t.Errorf("root mounted as %q", l)
			}
		case target + "/etc", target + "/root":
			if f[2] != "tmpfs" || !strings.Contains(f[3], "rw,nosuid,nodev") {
				t.Errorf("%s mounted as %q", f[1], l)
			}
		}
	}
	if !strings.HasPrefix(dev, "/dev/loop") {
		t.Fatalf("the root is not mounted from a loop device:\n%s", mounts)
	}
	sys := filepath.Join("/sys/block", filepath.Base(dev))
	if ro, _ := os.ReadFile(filepath.Join(sys, "ro")); strings.TrimSpace(string(ro)) != "1" {
		t.Errorf("%s is not read-only (ro=%q)", dev, ro)
	}
	if ac, _ := os.ReadFile(filepath.Join(sys, "loop/autoclear")); strings.TrimSpace(string(ac)) != "1" {
		t.Errorf("%s does not detach itself (autoclear=%q)", dev, ac)
	}
	if bf, _ := os.ReadFile(filepath.Join(sys, "loop/backing_file")); strings.TrimSpace(string(bf)) != img {
		t.Errorf("%s is backed by %q, want %s", dev, bf, img)
	}
}

// TestMountRefusesCorruptImage: an image whose superblock is intact but whose tables are not is
// refused by the kernel at mount; the error names the image, the device and the mount, and
// nothing is left mounted.
func TestMountRefusesCorruptImage(t *testing.T) {
	if !inMountNamespace(t, "TestMountRefusesCorruptImage") {
		return
	}
	img := image(t)
	data, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	// Everything after the superblock, the tables included, becomes 0xff.
	for i := 96; i < len(data); i++ {
		data[i] = 0xff
	}
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	target := t.TempDir()
	err = Mount(img, target)
	want := "root filesystem " + img + ": mount /dev/loop"
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.Contains(err.Error(), " on "+target+" type squashfs (ro): ") {
		t.Fatalf("err = %v, want %q… on %s type squashfs (ro): …", err, want, target)
	}
	t.Logf("refused: %v", err)
	mounts, _ := os.ReadFile("/proc/self/mounts")
	if strings.Contains(string(mounts), " "+target+" ") {
		t.Fatalf("%s is mounted after a refused image:\n%s", target, mounts)
	}
}

// TestFreeExcept: freeing the initramfs keeps the new root, what is skipped, and the binary's
// directory with the directories above it, and removes everything else, siblings included.
func TestFreeExcept(t *testing.T) {
	root := t.TempDir()
	for _, f := range []string{"init", "ingot/root.sqfs", "lib/modules/6.1/loop.ko", "lib/ingot/ingot-node", "lib/x", ".root/keep", "proc/keep"} {
		p := filepath.Join(root, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	freeExcept(root, map[string]bool{filepath.Join(root, ".root"): true, filepath.Join(root, "proc"): true}, filepath.Join(root, "lib/ingot"))
	var left []string
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			left = append(left, rel)
		}
		return nil
	})
	if want := []string{".root/keep", "lib/ingot/ingot-node", "proc/keep"}; !slices.Equal(left, want) {
		t.Fatalf("left %v, want %v", left, want)
	}
}
