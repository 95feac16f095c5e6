// Package rootfs moves PID 1 off the kernel's initramfs onto the image's read-only root: the
// squashfs the builder put at Image, attached to a loop device read-only and mounted read-only, so
// the payload (the node binary, kubelet, modules, tools) stays compressed instead of being
// unpacked into RAM. Only /etc and /root become tmpfs, holding a copy of the image's files; /run,
// /tmp and /var are mounted by the boot plan later. pivot_root(2), which libcontainer uses for
// every container, fails while the root is the initial rootfs, which is another reason to leave
// it. There is no fallback: a missing or bad image stops the boot with an error naming it.
package rootfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"ingot.dev/ingot/init/loop"
)

// Where the image builder puts the root filesystem and what PID 1 needs to mount it.
const (
	// Image is the squashfs inside the initramfs.
	Image = "/ingot/root.sqfs"
	// Modules lists the kernel modules to load before Image can be mounted (loop and squashfs
	// on Debian's cloud kernels), one name a line; their files and a modules.dep for them are in
	// the initramfs' /lib/modules/<release>.
	Modules = "/ingot/modules.load"
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

// keep are the mount points carried over into the new root.
func keep() []string { return []string{"/dev", "/proc", "/sys"} }

// Writable are the directories of the read-only root that become a tmpfs holding a copy of the
// image's files: /etc gets machine-id, hostname, hosts and resolv.conf written at boot, /root is
// the dev shell's home.
func Writable() []string { return []string{"/etc", "/root"} }

// superblock is what Check reads of a squashfs superblock (little-endian, 96 bytes).
type superblock struct {
	Magic        [4]byte
	Inodes       uint32
	MkfsTime     uint32
	BlockSize    uint32
	Fragments    uint32
	Compression  uint16
	BlockLog     uint16
	Flags        uint16
	IDs          uint16
	Major, Minor uint16
	RootInode    uint64
	BytesUsed    uint64
}

// Check reads the superblock of the squashfs at img and refuses what the kernel would not
// mount, or would mount and then fail to read: not a squashfs, another version, or a file cut
// short of the size the superblock records. It does not read the whole image.
func Check(img string) error {
	f, err := os.Open(img)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("root filesystem %s: not in the initramfs: %w", img, err)
	}
	if err != nil {
		return fmt.Errorf("root filesystem %s: %w", img, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("root filesystem %s: %w", img, err)
	}
	var sb superblock
	if err := binary.Read(f, binary.LittleEndian, &sb); err != nil {
		return fmt.Errorf("root filesystem %s: not a squashfs image: %d bytes, too short for a superblock", img, st.Size())
	}
	if string(sb.Magic[:]) != "hsqs" {
		return fmt.Errorf("root filesystem %s: not a squashfs image (it starts with %q)", img, sb.Magic[:])
	}
	if sb.Major != 4 || sb.Minor != 0 {
		return fmt.Errorf("root filesystem %s: squashfs version %d.%d; the kernel reads 4.0", img, sb.Major, sb.Minor)
	}
	if sb.BytesUsed > uint64(st.Size()) {
		return fmt.Errorf("root filesystem %s: truncated: its superblock counts %d bytes, the file has %d", img, sb.BytesUsed, st.Size())
	}
	return nil
}

// Mount mounts the squashfs at img read-only on target (a directory) through a read-only loop
// device, then puts a tmpfs with a copy of the image's files on each of target's Writable
// directories.
func Mount(img, target string) error {
	if err := Check(img); err != nil {
		return err
	}
	dev, err := loop.AttachReadOnly(img)
	if err != nil {
		return fmt.Errorf("root filesystem %s: %w", img, err)
	}
	// Once mounted, the mount holds the device; closing ours lets autoclear detach it when the
	// filesystem is unmounted.
	defer dev.Close()
	const flags = unix.MS_RDONLY | unix.MS_NODEV
	if err := unix.Mount(dev.Path, target, "squashfs", flags, ""); err != nil {
		return fmt.Errorf("root filesystem %s: mount %s on %s type squashfs (ro): %w", img, dev.Path, target, err)
	}
	for _, w := range Writable() {
		if err := writableCopy(filepath.Join(target, w)); err != nil {
			unix.Unmount(target, unix.MNT_DETACH)
			return fmt.Errorf("root filesystem %s: %w", img, err)
		}
	}
	return nil
}

// entry is one file, directory or symlink of a directory copied into its tmpfs.
type entry struct {
	rel  string
	mode fs.FileMode
	data []byte // contents or link target
}

// writableCopy reads dir (a few kilobytes of configuration) into memory, mounts a tmpfs on it with
// the directory's mode and writes the copy back. A directory the image lacks is left alone.
func writableCopy(dir string) error {
	st, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var entries []entry
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		e := entry{rel: rel, mode: info.Mode()}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			e.data = []byte(t)
		case info.Mode().IsRegular():
			if e.data, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return fmt.Errorf("copy %s: %w", dir, err)
	}
	data := fmt.Sprintf("mode=%#o", uint32(st.Mode().Perm()))
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, data); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.rel)
		var err error
		switch {
		case e.mode.IsDir():
			if err = os.Mkdir(p, e.mode.Perm()); err == nil {
				err = os.Chmod(p, e.mode.Perm())
			}
		case e.mode&fs.ModeSymlink != 0:
			err = os.Symlink(string(e.data), p)
		case e.mode.IsRegular():
			if err = os.WriteFile(p, e.data, e.mode.Perm()); err == nil {
				err = os.Chmod(p, e.mode.Perm())
			}
		default:
			err = fmt.Errorf("%v is neither a file, a directory nor a symlink", e.mode.Type())
		}
		if err != nil {
			return fmt.Errorf("copy %s into its tmpfs: %w", p, err)
		}
	}
	return nil
}

// Where the node binary lives. The image stores it once, in the initramfs at Binary; /init is a
// symlink to it there and in the squashfs, whose BinDir is an empty directory that Switch
// bind-mounts the initramfs' BinDir onto. The copy the kernel unpacked into RAM is then the one
// every ingot-node process runs, so starting one never decompresses it again from the squashfs.
// A directory is bound, not the file: libcontainer seals its own executable through an overlayfs
// whose lower layer is the directory readlink(/proc/self/exe) names, and an overlay sees the
// mounts on that directory but not a file bound over one of its entries.
const (
	Init   = "/init"
	BinDir = "/lib/ingot"
	Binary = BinDir + "/ingot-node"
)

// Switch mounts the squashfs at img on newRoot (Mount), bind-mounts the initramfs' BinDir onto the
// squashfs' BinDir, moves the kernel filesystems there, frees the rest of the initramfs, and makes
// newRoot the root; the caller then re-executes itself from it. The loop device keeps the image's
// pages alive after its name is removed from the initramfs: they are the compressed root, and
// cost RAM as long as the node runs, as does the binary.
func Switch(img, newRoot string) error {
	if err := os.MkdirAll(newRoot, 0o755); err != nil {
		return fmt.Errorf("switch root: %w", err)
	}
	if err := Mount(img, newRoot); err != nil {
		return err
	}
	// Bound read-only like the rest of the root: a bind mount takes MS_RDONLY only on a remount.
	bin := filepath.Join(newRoot, BinDir)
	for _, flags := range []uintptr{unix.MS_BIND, unix.MS_BIND | unix.MS_REMOUNT | unix.MS_RDONLY | unix.MS_NODEV} {
		if err := unix.Mount(BinDir, bin, "", flags, ""); err != nil {
			unix.Unmount(newRoot, unix.MNT_DETACH)
			return fmt.Errorf("root filesystem %s: bind the node binary's %s onto the root's: %w", img, BinDir, err)
		}
	}
	skip := map[string]bool{newRoot: true}
	for _, k := range keep() {
		skip[k] = true
		if err := unix.Mount(k, filepath.Join(newRoot, k), "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("switch root: move %s into %s: %w", k, newRoot, err)
		}
	}
	// Free the initramfs' memory: everything but the new root and the binary goes.
	freeExcept("/", skip, BinDir)
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

// freeExcept removes everything under dir except the paths in skip and keep and the directories
// leading to keep.
func freeExcept(dir string, skip map[string]bool, keep string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		switch {
		case skip[p] || p == keep:
		case strings.HasPrefix(keep, p+"/") && e.IsDir():
			freeExcept(p, skip, keep)
		default:
			os.RemoveAll(p)
		}
	}
}
