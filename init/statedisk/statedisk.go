// Package statedisk finds the node's persistent state partition (GPT name INGOT-STATE), formats it
// as ext4 when it is blank, and mounts it. It never formats a partition that holds anything: a
// partition that is neither ext4 nor all zeros is reported and left alone, so a node never
// destroys data it does not understand.
package statedisk

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/ext4"
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
	Blank Kind = iota // all zeros at the start: safe to format
	Ext4              // an ext4 superblock
	Other             // anything else: never formatted
)

func (k Kind) String() string {
	return [...]string{"blank", "ext4", "unknown data"}[k]
}

// Probe reads the start of the device and says what it holds.
func Probe(dev string) (Kind, error) {
	fd, err := os.Open(dev)
	if err != nil {
		return Other, fmt.Errorf("probe %s: %w", dev, err)
	}
	defer fd.Close()
	buf := make([]byte, 1<<20)
	n, err := fd.ReadAt(buf, 0)
	if n < 2048 {
		return Other, fmt.Errorf("probe %s: read %d bytes: %v", dev, n, err)
	}
	buf = buf[:n]
	// ext2/3/4 superblock at 1024, s_magic at offset 56 within it.
	if binary.LittleEndian.Uint16(buf[1024+56:]) == 0xEF53 {
		return Ext4, nil
	}
	if len(bytes.Trim(buf, "\x00")) == 0 {
		return Blank, nil
	}
	return Other, nil
}

// Format writes an empty ext4 filesystem labelled label over the whole device.
func Format(dev, label string) error {
	fd, err := os.OpenFile(dev, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("format %s: %w", dev, err)
	}
	defer fd.Close()
	size, err := fd.Seek(0, 2)
	if err != nil {
		return fmt.Errorf("format %s: size: %w", dev, err)
	}
	if _, err := ext4.Create(file.New(fd, false), size, 0, 512, &ext4.Params{VolumeName: label}); err != nil {
		return fmt.Errorf("format %s as ext4: %w", dev, err)
	}
	if err := fd.Sync(); err != nil {
		return fmt.Errorf("format %s: sync: %w", dev, err)
	}
	return nil
}

// Result says what Prepare did.
type Result struct {
	Device    string
	Formatted bool
	// Grown is set when the blank partition was first grown to the end of its disk; Size is then
	// its new size in bytes.
	Grown bool
	Size  int64
	// GrowErr says why a blank partition could not be grown; it was formatted as it was.
	GrowErr error
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
		// The table on disk is grown but the kernel still sees the old size: the filesystem is
		// made at that size and stays so (nothing resizes ext4 later). Space lost, state safe.
		return false, 0, err
	}
	return true, g.Size, nil
}

// Prepare finds the labelled partition, grows it to the end of its disk and formats it if blank,
// and mounts it at target with flags
// (MS_* mount flags; the node mounts /var nosuid,nodev).
func Prepare(ctx context.Context, label, target string, flags uintptr, wait time.Duration) (Result, error) {
	dev, err := Find(ctx, "/sys/class/block", "/dev", label, wait)
	if err != nil {
		return Result{}, err
	}
	res := Result{Device: dev}
	kind, err := Probe(dev)
	if err != nil {
		return res, err
	}
	switch kind {
	case Blank:
		// Grow before formatting: a blank partition is the only kind Grow moves, and the
		// filesystem is then made at the full size. A failure to grow costs space, not the
		// state: the partition is formatted at the size it has.
		res.Grown, res.Size, res.GrowErr = growDevice(dev, label)
		if err := Format(dev, label); err != nil {
			return res, err
		}
		res.Formatted = true
	case Other:
		return res, fmt.Errorf("state partition %s holds %s; refusing to format it", dev, kind)
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return res, fmt.Errorf("mount %s: %w", target, err)
	}
	if err := unix.Mount(dev, target, "ext4", flags, ""); err != nil {
		return res, fmt.Errorf("mount %s on %s (ext4): %w", dev, target, err)
	}
	return res, nil
}
