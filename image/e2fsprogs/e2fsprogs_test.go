package e2fsprogs

import (
	"context"
	"debug/elf"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"ingot.dev/ingot/image/debpkg"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
)

// Collect for both architectures: the three programs, every library they need (libc and
// libext2fs among them) for the right machine, and the loader where the programs look for it.
func TestCollect(t *testing.T) {
	testgate.RequireCommand(t, "dpkg-deb")
	testgate.RequireCommand(t, "apt-get")
	for _, tc := range []struct {
		arch, loader string
		machine      elf.Machine
	}{
		{"amd64", "/lib64/ld-linux-x86-64.so.2", elf.EM_X86_64},
		{"arm64", "/lib/ld-linux-aarch64.so.1", elf.EM_AARCH64},
	} {
		t.Run(tc.arch, func(t *testing.T) {
			fetch := &debpkg.Fetcher{Cache: cachedir.Default(), Arch: tc.arch}
			files, err := Collect(context.Background(), func(ctx context.Context, name string) (string, error) {
				p, err := fetch.Fetch(ctx, name)
				if err != nil {
					return "", err
				}
				return fetch.Unpack(ctx, p)
			})
			if err != nil {
				t.Fatal(err)
			}
			var paths []string
			for _, f := range files {
				paths = append(paths, f.Path)
				e, err := elf.Open(f.Src)
				if err != nil {
					t.Fatalf("%s (%s): %v", f.Path, f.Src, err)
				}
				if e.Machine != tc.machine {
					t.Errorf("%s is for %v, want %v", f.Path, e.Machine, tc.machine)
				}
				e.Close()
			}
			for _, want := range []string{"/bin/mke2fs", "/bin/e2fsck", "/bin/resize2fs", tc.loader} {
				if !slices.Contains(paths, want) {
					t.Errorf("no %s in %v", want, paths)
				}
			}
			for _, lib := range []string{"libc.so.6", "libext2fs.so.2", "libe2p.so.2", "libcom_err.so.2", "libblkid.so.1", "libuuid.so.1"} {
				if !slices.ContainsFunc(paths, func(p string) bool { return filepath.Base(p) == lib }) {
					t.Errorf("no %s in %v", lib, paths)
				}
			}
		})
	}
}

// A package's absolute symbolic link points into the package, never at the host's file of
// that name.
func TestResolveStaysInThePackage(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "lib64"), 0o755)
	os.MkdirAll(filepath.Join(root, "lib/x86_64-linux-gnu"), 0o755)
	os.WriteFile(filepath.Join(root, "lib/x86_64-linux-gnu/ld.so"), []byte("loader"), 0o755)
	os.Symlink("/lib/x86_64-linux-gnu/ld.so", filepath.Join(root, "lib64/ld.so"))
	os.Symlink("/etc/hostname", filepath.Join(root, "lib64/escape"))
	got, err := resolve(root, filepath.Join(root, "lib64/ld.so"))
	if err != nil || got != filepath.Join(root, "lib/x86_64-linux-gnu/ld.so") {
		t.Fatalf("resolve = %q, %v", got, err)
	}
	if got, err := resolve(root, filepath.Join(root, "lib64/escape")); err == nil {
		t.Fatalf("resolve of a link to a file the package lacks = %q; want an error", got)
	}
}
