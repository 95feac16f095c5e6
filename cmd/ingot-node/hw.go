package main

import (
	"io"
	"path/filepath"

	"golang.org/x/sys/unix"

	"ingot.dev/ingot/init/hw"
	"ingot.dev/ingot/init/kmod"
)

// hwShow prints the machine's devices as PID 1's coldplug sees them.
func hwShow(w io.Writer) error {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return err
	}
	dir := filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
	deps, err := kmod.ReadDeps(dir)
	if err != nil {
		return err
	}
	aliases, err := kmod.ReadAliases(dir)
	if err != nil {
		return err
	}
	devs, err := hw.Scan("/sys")
	if err != nil {
		return err
	}
	return hw.Show(w, devs, hw.NewMatcher(deps, aliases))
}
