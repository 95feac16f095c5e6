package main

import (
	"io"
	"path/filepath"

	"golang.org/x/sys/unix"

	"ingot.dev/ingot/init/hw"
)

// hwShow prints the machine's devices as PID 1's coldplug sees them.
func hwShow(w io.Writer) error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err
	}
	_, m, err := hw.Open(filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:])))
	if err != nil {
		return err
	}
	devs, err := hw.Scan("/sys")
	if err != nil {
		return err
	}
	return hw.Show(w, devs, m)
}
