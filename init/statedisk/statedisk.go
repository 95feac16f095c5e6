// Package statedisk finds the node's persistent state partition (GPT name INGOT-STATE), formats it
// as ext4 when it is blank, and mounts it. It never formats a partition that holds anything: a
// partition that is neither ext4 nor all zeros is reported and left alone, so a node never
// destroys data it does not understand.
package statedisk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Label is the GPT partition name of the state partition.
const Label = "INGOT-STATE"

// ErrNotFound means no partition carries the label.
var ErrNotFound = errors.New("no state partition")

// NoDiskWait is how long Find waits for a first disk to appear at all. Disk drivers probe
// asynchronously after they load: an NVMe controller or an AHCI port takes seconds to show its
// disk under emulation, and real SAS or USB storage can take as long.
const NoDiskWait = 15 * time.Second

// Find returns the device node (/dev/vda2) of the partition whose GPT name is label, looking in
// sysfs. Partitions appear asynchronously after the block driver loads, so it polls until wait
// has passed once a disk is there, and up to NoDiskWait while there is no disk at all (a loop
// device or a RAM disk is not one).
func Find(ctx context.Context, sysBlock, devDir, label string, wait time.Duration) (string, error) {
	start := time.Now()
	deadline := start.Add(wait)
	sawDisk := false
	for {
		entries, _ := os.ReadDir(sysBlock)
		for _, e := range entries {
			if !sawDisk && isDisk(filepath.Join(sysBlock, e.Name())) {
				// The wait counts from the first disk: its partitions follow it closely.
				sawDisk = true
				if d := time.Now().Add(wait); d.After(deadline) {
					deadline = d
				}
			}
			data, err := os.ReadFile(filepath.Join(sysBlock, e.Name(), "uevent"))
			if err != nil {
				continue
			}
			var name, partname string
			for _, line := range strings.Split(string(data), "\n") {
				if v, ok := strings.CutPrefix(line, "DEVNAME="); ok {
					name = v
				}
				if v, ok := strings.CutPrefix(line, "PARTNAME="); ok {
					partname = v
				}
			}
			if partname == label && name != "" {
				return filepath.Join(devDir, name), nil
			}
		}
		if now := time.Now(); now.After(deadline) && (sawDisk || now.After(start.Add(NoDiskWait))) {
			return "", fmt.Errorf("%w labelled %s", ErrNotFound, label)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// isDisk reports whether a /sys/class/block entry is a whole disk of a storage device: not a
// partition, a loop device, a RAM disk or a compressed RAM disk.
func isDisk(dir string) bool {
	name := filepath.Base(dir)
	for _, p := range []string{"loop", "ram", "zram", "nbd", "dm-", "md"} {
		if strings.HasPrefix(name, p) {
			return false
		}
	}
	_, err := os.Stat(filepath.Join(dir, "partition"))
	return errors.Is(err, fs.ErrNotExist)
}

// Kind is what a partition holds.
type Kind int

const (
	Blank      Kind = iota // all zeros at the start: safe to format
	Unfinished             // a first format that did not finish (the format record is there)
	Ext4                   // an ext4 superblock, and no format record
	Other                  // anything else: never formatted
)

func (k Kind) String() string {
	return [...]string{"blank", "an unfinished format", "ext4", "unknown data"}[k]
}

// Probe reads the start and the end of the device and says what it holds.
func Probe(dev string) (Kind, error) {
	fd, err := os.Open(dev)
	if err != nil {
		return Other, fmt.Errorf("probe %s: %w", dev, err)
	}
	defer fd.Close()
	size, err := fd.Seek(0, io.SeekEnd)
	if err != nil {
		return Other, fmt.Errorf("probe %s: size: %w", dev, err)
	}
	if size < minSize {
		return Other, fmt.Errorf("probe %s: %d bytes is too small for a state partition (at least %d)", dev, size, minSize)
	}
	head := make([]byte, blankProbe)
	if _, err := fd.ReadAt(head, 0); err != nil {
		return Other, fmt.Errorf("probe %s: %w", dev, err)
	}
	tail := make([]byte, recordSize)
	if _, err := fd.ReadAt(tail, size-recordSize); err != nil {
		return Other, fmt.Errorf("probe %s: %w", dev, err)
	}
	return classify(head, tail, size), nil
}

// classify says what a partition of size bytes holds from its first MiB and its last 4 KiB.
func classify(head, tail []byte, size int64) Kind {
	sb, isExt4 := parseSuperblock(head[1024:2048])
	switch {
	case isExt4 && sb.blocks > uint64((size-recordSize)/sb.blockSize):
		// The filesystem covers the last block (it grew with its disk): what is there is file
		// data, which a workload can make look like a record. Format never makes one this big.
		return Ext4
	case bytes.HasPrefix(tail, []byte(formatRecord)):
		// Checked before the superblock: mke2fs writes the primary superblock last, but the
		// record is cleared only once the whole filesystem is on the disk.
		return Unfinished
	case isExt4:
		return Ext4
	case allZero(head):
		return Blank
	}
	return Other
}

// Result says what Prepare did.
type Result struct {
	Device string
	// Found is what the partition held: Blank or Unfinished ones were formatted.
	Found      Kind
	Formatted  bool
	FormatTook time.Duration
	// Grown is set when the partition was grown to the end of its disk; Size is then its new
	// size in bytes.
	Grown bool
	Size  int64
	// GrowErr says why the partition could not be grown; the node goes on at the size it has.
	GrowErr error
	// Checked is what e2fsck -p did before the mount (Checked.Why is "" when it did not run).
	Checked Check
	// Resized is set when the filesystem was grown online to fill its grown partition.
	Resized bool
	// ResizeErr says why it could not be; /var keeps its old size.
	ResizeErr error
}

// growDevice grows partition dev to the end of its disk and tells the kernel its new size.
func growDevice(dev, label string) (bool, int64, error) {
	disk, _, err := wholeDisk("/sys/class/block", "/dev", dev)
	if err != nil {
		return false, 0, err
	}
	g, err := Grow(disk, label)
	if err != nil || !g.Grown {
		return false, 0, err
	}
	if err := resizePartition(disk, g); err != nil {
		// The table on disk is grown but the kernel still sees the old size until the next
		// boot, which finds the table grown and the filesystem smaller, and resizes it then.
		return false, 0, err
	}
	return true, g.Size, nil
}

// Prepare finds the labelled partition and mounts it at target with flags (MS_* mount flags; the
// node mounts /var nosuid,nodev,noatime) and MountOptions:
//   - a blank partition, or one whose first format was cut short, is grown to the end of its disk
//     and formatted;
//   - an ext4 one is checked with e2fsck -p first when it was not cleanly unmounted; one e2fsck
//     cannot repair is left alone (ErrNotRepaired). When its disk has grown, the partition
//     grows to the end of the disk, and the filesystem with it once mounted;
//   - anything else is never touched.
//
// onFormat, when not nil, is called just before a format starts (PID 1 says so on the console).
func Prepare(ctx context.Context, t Tools, label, target string, flags uintptr, wait time.Duration, onFormat func(Result)) (Result, error) {
	dev, err := Find(ctx, "/sys/class/block", "/dev", label, wait)
	if err != nil {
		return Result{}, err
	}
	res := Result{Device: dev}
	res.Found, err = Probe(dev)
	if err != nil {
		return res, err
	}
	switch res.Found {
	case Blank, Unfinished:
		// Grow before formatting, so the filesystem is made at the full size. A failure to
		// grow costs space, not the state: the partition is formatted at the size it has.
		res.Grown, res.Size, res.GrowErr = growDevice(dev, label)
		if onFormat != nil {
			onFormat(res)
		}
		start := time.Now()
		if err := t.Format(ctx, dev, label); err != nil {
			return res, err
		}
		res.Formatted, res.FormatTook = true, time.Since(start)
	case Ext4:
		if res.Checked, err = t.CheckBeforeMount(ctx, dev); err != nil {
			return res, err
		}
		res.Grown, res.Size, res.GrowErr = growDevice(dev, label)
	case Other:
		return res, fmt.Errorf("state partition %s holds %s; refusing to format it", dev, res.Found)
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return res, fmt.Errorf("mount %s: %w", target, err)
	}
	if err := unix.Mount(dev, target, "ext4", flags, MountOptions); err != nil {
		return res, fmt.Errorf("mount %s on %s (ext4, %s): %w", dev, target, MountOptions, err)
	}
	if !res.Formatted {
		// Also after a boot that grew the partition but was cut before the filesystem followed.
		res.Resized, res.ResizeErr = t.Resize(ctx, dev)
	}
	return res, nil
}
