// Package loop attaches a file to a loop block device, read-only, so a filesystem image held in a
// file (the image's squashfs root) can be mounted. It only ever attaches: a device it attached
// detaches itself (LO_FLAGS_AUTOCLEAR) once the last user, the mount, is gone.
package loop

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Control is the kernel's loop-control device (the loop module creates it).
const Control = "/dev/loop-control"

// Device is a loop device attached to a file. Keep it open until the filesystem on it is
// mounted: with autoclear, closing the last descriptor of an unmounted device detaches it.
type Device struct {
	Path string
	f    *os.File
}

// Close drops this descriptor of the device.
func (d *Device) Close() error { return d.f.Close() }

// AttachReadOnly attaches the file at path to a free loop device in one LOOP_CONFIGURE call:
// read-only, autoclear, its name recorded for losetup and /sys/block/loopN/loop/backing_file.
func AttachReadOnly(path string) (*Device, error) {
	backing, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loop: %w", err)
	}
	defer backing.Close() // the device holds its own reference once configured
	ctl, err := os.OpenFile(Control, os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("loop: %w (is the loop module loaded?)", err)
	}
	defer ctl.Close()

	cfg := unix.LoopConfig{Fd: uint32(backing.Fd())}
	cfg.Info.Flags = unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_AUTOCLEAR
	name, _ := filepath.Abs(path)
	copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], name)

	// Another process may take the device LOOP_CTL_GET_FREE handed out before it is configured:
	// then LOOP_CONFIGURE answers EBUSY and the next free one is tried.
	for try := 0; try < 8; try++ {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("loop: %s: get a free device: %w", Control, err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		f, err := os.OpenFile(dev, os.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("loop: %w", err)
		}
		err = unix.IoctlLoopConfigure(int(f.Fd()), &cfg)
		if errors.Is(err, unix.EBUSY) {
			f.Close()
			continue
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("loop: attach %s to %s: %w", path, dev, err)
		}
		return &Device{Path: dev, f: f}, nil
	}
	return nil, fmt.Errorf("loop: attach %s: every free device was taken before it could be configured", path)
}
