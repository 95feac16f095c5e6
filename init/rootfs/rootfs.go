// Package rootfs moves PID 1 off the kernel's initramfs. pivot_root(2), which libcontainer uses for
// every container, fails when the root is the initial rootfs, so the files are copied into a
// tmpfs that becomes the new root, the initramfs copy is freed, and PID 1 re-executes itself
// from the new root.
package rootfs

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// OnInitramfs reports whether / is the kernel's initial rootfs, read from mountinfo.
func OnInitramfs(mountinfo string) (bool, error) {
	data, err := os.ReadFile(mountinfo)
	if err != nil {
		return false, fmt.Errorf("read %s: %w", mountinfo, err)
	}
	return rootIsRootfs(string(data)), nil
}

func rootIsRootfs(mountinfo string) bool {
	for _, line := range strings.Split(mountinfo, "\n") {
		f := strings.Fields(line)
		// mount point is field 4; the fs type follows the " - " separator.
		if len(f) < 5 || f[4] != "/" {
			continue
		}
		for i, x := range f {
			if x == "-" && i+1 < len(f) {
				return f[i+1] == "rootfs"
			}
		}
	}
	return false
}

// keep are the mount points carried over into the new root instead of being copied.
var keep = []string{"/dev", "/proc", "/sys"}

// Switch copies / into a tmpfs mounted at newRoot, moves the kernel filesystems there, frees the
// initramfs, makes newRoot the root and returns; the caller then re-executes itself.
func Switch(newRoot string) error {
	if err := os.MkdirAll(newRoot, 0o755); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	if err := unix.Mount("tmpfs", newRoot, "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("switch root: mount tmpfs on %s: %w", newRoot, err)
	}
	skip := map[string]bool{newRoot: true}
	for _, k := range keep {
		skip[k] = true
	}
	if err := copyTree("/", newRoot, skip); err != nil {
		return fmt.Errorf("switch root: copy initramfs: %w", err)
	}
	for _, k := range keep {
		dst := filepath.Join(newRoot, k)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return fmt.Errorf("switch root: %w", err)
		}
		if err := unix.Mount(k, dst, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("switch root: move %s: %w", k, err)
		}
	}
	// Free the initramfs' memory: everything but the new root goes.
	entries, _ := os.ReadDir("/")
	for _, e := range entries {
		p := "/" + e.Name()
		if p == newRoot || skip[p] {
			continue
		}
		os.RemoveAll(p)
	}
	if err := os.Chdir(newRoot); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switch root: move %s to /: %w", newRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("switch root: chroot: %w", err)
	}
	return os.Chdir("/")
}

func copyTree(src, dst string, skip map[string]bool) error {
	return filepath.Walk(src, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if p == src {
			return nil
		}
		if skip[p] {
			if info.IsDir() {
				if p != dst {
					if err := os.MkdirAll(filepath.Join(dst, p), info.Mode().Perm()); err != nil {
						return err
					}
				}
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, p)
		mode := info.Mode()
		switch {
		case mode.IsDir():
			return os.MkdirAll(target, mode.Perm())
		case mode&os.ModeSymlink != 0:
			link, err := os.Readlink(p)
			if err != nil {
				return err
			}
			return os.Symlink(link, target)
		case mode.IsRegular():
			return copyFile(p, target, mode.Perm())
		case mode&os.ModeDevice != 0:
			st := info.Sys().(*unix.Stat_t)
			return unix.Mknod(target, st.Mode, int(st.Rdev))
		}
		return nil
	})
}

func copyFile(src, dst string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return out.Close()
}
