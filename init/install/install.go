// Package install is the installer mode of a node booted from ingot.iso: it writes the disk image
// the ISO carries onto the machine's disk, checks what the disk then holds against the image's
// sha256, and leaves the rest of the boot to format the new state partition and keep the node
// config there, before the node reboots into the installed image.
//
// The target must be a whole disk that is not the medium, is not in use and is big enough. It is
// wiped where the image does not reach: its first and last MiB (partition tables and their
// backups, filesystem signatures) are zeroed, and every byte of the image's extent is written,
// its zero runs with BLKZEROOUT, so nothing of an earlier install shows through.
package install

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"ingot.dev/ingot/image/isofs"
	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/image/qcow2"
	"ingot.dev/ingot/init/nodesource"
	"ingot.dev/ingot/init/statedisk"
)

// Options say where to install and where to look.
type Options struct {
	Target string        // the disk to write, e.g. /dev/vda
	Sys    string        // sysfs, "/sys"
	Dev    string        // devtmpfs, "/dev"
	Wait   time.Duration // for the medium and the target to appear (USB sticks are slow)
	// Force installs over a disk that holds an ingot install with a formatted state partition,
	// which is otherwise refused: an install medium left in a machine that boots it first must not
	// wipe the node it installed.
	Force bool
}

// Result says what was written.
type Result struct {
	Medium  string // the device the image came from
	Info    manifest.InstallInfo
	Written int64 // bytes of data written (the rest of the image was zeroed)
	Took    time.Duration
}

// Run installs. It fails, naming what is wrong, before the first write when the medium, its
// image or the target is not right; a failure after it leaves a disk that does not boot (its
// first MiB is zeroed first), never one that boots half an image.
func Run(ctx context.Context, o Options) (Result, error) {
	start := time.Now()
	var res Result
	medium, err := findMedium(ctx, o)
	if err != nil {
		return res, err
	}
	res.Medium = medium.Dev
	// Read straight off the medium: no isofs module, no mount to undo.
	dev, err := os.Open(medium.Dev)
	if err != nil {
		return res, fmt.Errorf("install: %w", err)
	}
	defer dev.Close()
	infoFile, err := isofs.Open(dev, manifest.FileInstallInfo)
	if err != nil {
		return res, fmt.Errorf("install: the medium %s: %w", medium.Dev, err)
	}
	data, err := io.ReadAll(io.LimitReader(infoFile, 1<<20))
	if err != nil {
		return res, fmt.Errorf("install: the medium %s: %w", medium.Dev, err)
	}
	if err := json.Unmarshal(data, &res.Info); err != nil {
		return res, fmt.Errorf("install: %s on %s: %w", manifest.FileInstallInfo, medium.Dev, err)
	}
	info := res.Info
	if info.Arch != runtime.GOARCH {
		return res, fmt.Errorf("install: the medium's image is for %s, this machine is %s", info.Arch, runtime.GOARCH)
	}
	if len(info.DiskSHA256) != 64 || info.DiskSize <= 0 || info.Image == "" || strings.ContainsRune(info.Image, '/') {
		return res, fmt.Errorf("install: %s on %s is incomplete", manifest.FileInstallInfo, medium.Dev)
	}
	img, err := isofs.Open(dev, info.Image)
	if err != nil {
		return res, fmt.Errorf("install: the medium %s: %w", medium.Dev, err)
	}
	size, extents, err := qcow2.Extents(img)
	if err != nil {
		return res, fmt.Errorf("install: %s on %s: %w", info.Image, medium.Dev, err)
	}
	if size != info.DiskSize {
		return res, fmt.Errorf("install: %s holds %d bytes, %s says %d", info.Image, size, manifest.FileInstallInfo, info.DiskSize)
	}

	target, err := checkTarget(ctx, o, medium.Dev, size)
	if err != nil {
		return res, err
	}
	// O_EXCL on a block device: refused while anything (a mount, a holder) has it open exclusively.
	f, err := os.OpenFile(o.Target, os.O_RDWR|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if err != nil {
		return res, fmt.Errorf("install: open %s: %w", o.Target, err)
	}
	defer f.Close()
	if res.Written, err = write(f, img, extents, target); err != nil {
		return res, fmt.Errorf("install: write %s: %w", o.Target, err)
	}
	if err := verify(f, size, info.DiskSHA256); err != nil {
		return res, fmt.Errorf("install: %s: %w", o.Target, err)
	}
	// The kernel reads the new partition table, so the state partition can be found by label.
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKRRPART, 0); err != nil {
		return res, fmt.Errorf("install: re-read the partition table of %s: %w", o.Target, err)
	}
	res.Took = time.Since(start)
	return res, nil
}

// Medium is the install medium's device when one is attached now (no waiting), or "".
func Medium(sys, dev string) string {
	for _, v := range (nodesource.Reader{Sys: sys, Dev: dev}).Volumes() {
		if v.FSType == nodesource.FSISO9660 && v.Label == manifest.ISOLabel {
			return v.Dev
		}
	}
	return ""
}

// findMedium waits for the ISO 9660 volume labelled manifest.ISOLabel.
func findMedium(ctx context.Context, o Options) (nodesource.Volume, error) {
	deadline := time.Now().Add(o.Wait)
	for {
		if d := Medium(o.Sys, o.Dev); d != "" {
			return nodesource.Volume{Dev: d, FSType: nodesource.FSISO9660, Label: manifest.ISOLabel}, nil
		}
		if time.Now().After(deadline) {
			return nodesource.Volume{}, fmt.Errorf("install: no install medium (an ISO 9660 volume labelled %s) after %s", manifest.ISOLabel, o.Wait)
		}
		select {
		case <-ctx.Done():
			return nodesource.Volume{}, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// checkTarget waits for the target and checks it is a whole disk, not the medium (or on its
// disk), big enough, with nothing of it mounted. It returns its size.
func checkTarget(ctx context.Context, o Options, medium string, need int64) (int64, error) {
	name := filepath.Base(o.Target)
	if !strings.HasPrefix(o.Target, o.Dev+"/") || name == "" || strings.ContainsAny(name, "/.") {
		return 0, fmt.Errorf("install: target %q: want a disk under %s, as %s/sda", o.Target, o.Dev, o.Dev)
	}
	sys := filepath.Join(o.Sys, "class/block", name)
	deadline := time.Now().Add(o.Wait)
	for {
		if _, err := os.Stat(sys); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("install: target %s: no such disk after %s", o.Target, o.Wait)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		return 0, fmt.Errorf("install: target %s is a partition; name the whole disk", o.Target)
	}
	med := filepath.Base(medium)
	if med == name || strings.HasPrefix(med, name) && isPartitionOf(o.Sys, med, name) {
		return 0, fmt.Errorf("install: target %s is the install medium", o.Target)
	}
	b, err := os.ReadFile(filepath.Join(sys, "size"))
	if err != nil {
		return 0, fmt.Errorf("install: target %s: %w", o.Target, err)
	}
	var sectors int64
	fmt.Sscan(string(b), &sectors)
	size := sectors * 512
	if size < need {
		return 0, fmt.Errorf("install: target %s holds %d MiB, the image needs %d MiB", o.Target, size>>20, (need+1<<20-1)>>20)
	}
	if !o.Force {
		if part, ok := formattedState(o.Target); ok {
			return 0, fmt.Errorf("install: target %s already holds an ingot install whose state partition (partition %d) is formatted; "+
				"it is not overwritten: boot the disk, or add %s=1 to the kernel command line to wipe it", o.Target, part, ForceArg)
		}
	}
	if m, err := mountedFrom(name); err != nil {
		return 0, fmt.Errorf("install: %w", err)
	} else if m != "" {
		return 0, fmt.Errorf("install: target %s is in use: %s is mounted", o.Target, m)
	}
	return size, nil
}

// ForceArg is the kernel argument that sets Options.Force.
const ForceArg = "ingot.install.force"

// formattedState reports whether the disk's GPT names a partition INGOT-STATE that holds an ext4
// superblock, and which partition it is.
func formattedState(dev string) (int, bool) {
	p, err := statedisk.FindPartition(dev, statedisk.Label)
	if err != nil {
		return 0, false
	}
	f, err := os.Open(dev)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	magic := make([]byte, 2) // ext2/3/4 s_magic, 56 bytes into the superblock at 1024
	if _, err := f.ReadAt(magic, p.Start()+1024+56); err != nil || binary.LittleEndian.Uint16(magic) != 0xef53 {
		return 0, false
	}
	return p.Number, true
}

// isPartitionOf reports whether block device part is a partition of disk.
func isPartitionOf(sys, part, disk string) bool {
	_, err := os.Stat(filepath.Join(sys, "class/block", disk, part))
	return err == nil
}

// mountedFrom returns a mount source that is the disk or one of its partitions, or "".
func mountedFrom(disk string) (string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		_, after, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		f := strings.Fields(after)
		if len(f) >= 2 && strings.HasPrefix(filepath.Base(f[1]), disk) && strings.HasPrefix(f[1], "/dev/") {
			return f[1], nil
		}
	}
	return "", nil
}

const mib = 1 << 20

// write zeroes the disk's first MiB (so an interrupted install never boots), its last MiB, then
// writes the image's extents: data copied, zero runs zeroed; the first MiB's data goes last.
func write(f *os.File, img io.ReaderAt, extents []qcow2.Extent, diskSize int64) (int64, error) {
	if err := zero(f, 0, mib); err != nil {
		return 0, err
	}
	if err := zero(f, diskSize-mib, mib); err != nil {
		return 0, err
	}
	var written int64
	buf := make([]byte, 4*mib)
	var head []qcow2.Extent
	for _, e := range extents {
		// The first MiB holds the partition table: split there and write that part last.
		if e.Offset < mib {
			n := min(e.Length, mib-e.Offset)
			head = append(head, qcow2.Extent{Offset: e.Offset, Length: n, Host: e.Host})
			if e.Length == n {
				continue
			}
			if e.Host >= 0 {
				e.Host += n
			}
			e.Offset, e.Length = e.Offset+n, e.Length-n
		}
		n, err := writeExtent(f, img, e, buf)
		if err != nil {
			return written, err
		}
		written += n
	}
	if err := f.Sync(); err != nil {
		return written, err
	}
	for _, e := range head {
		n, err := writeExtent(f, img, e, buf)
		if err != nil {
			return written, err
		}
		written += n
	}
	return written, f.Sync()
}

func writeExtent(f *os.File, img io.ReaderAt, e qcow2.Extent, buf []byte) (int64, error) {
	if e.Host < 0 {
		return 0, zero(f, e.Offset, e.Length)
	}
	var done int64
	for done < e.Length {
		n := min(int64(len(buf)), e.Length-done)
		if _, err := img.ReadAt(buf[:n], e.Host+done); err != nil && !errors.Is(err, io.EOF) {
			return done, fmt.Errorf("read the image at %d: %w", e.Host+done, err)
		}
		if _, err := f.WriteAt(buf[:n], e.Offset+done); err != nil {
			return done, err
		}
		done += n
	}
	return done, nil
}

// zero makes a range read as zeros: BLKZEROOUT (the device's write-zeroes, or the kernel writing
// zero pages), or plain writes where the device refuses it.
func zero(f *os.File, off, n int64) error {
	rng := [2]uint64{uint64(off), uint64(n)}
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&rng[0]))); errno == 0 {
		return nil
	}
	buf := make([]byte, min(n, 4*mib))
	for done := int64(0); done < n; {
		k := min(int64(len(buf)), n-done)
		if _, err := f.WriteAt(buf[:k], off+done); err != nil {
			return fmt.Errorf("zero %d bytes at %d: %w", k, off+done, err)
		}
		done += k
	}
	return nil
}

// verify reads the image's extent of the disk back, past the page cache, and compares its sha256.
func verify(f *os.File, size int64, want string) error {
	// Written pages leave the cache, so what is read is what the device holds.
	if err := unix.IoctlSetInt(int(f.Fd()), unix.BLKFLSBUF, 0); err != nil {
		return fmt.Errorf("flush buffers: %w", err)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, size)); err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("written image reads back as sha256:%s, want sha256:%s", got, want)
	}
	return nil
}
