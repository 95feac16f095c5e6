package slots

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"ingot.dev/ingot/init/statedisk"
)

// ESPLabel is the ESP's GPT partition name (image/disk writes it).
const ESPLabel = "INGOT-ESP"

// MountDir is where the node mounts its ESP while it works on it; it is not mounted otherwise,
// so a power cut finds the FAT with nothing half-written by a forgotten mount.
const MountDir = "/run/ingot/esp"

// WithESP mounts the node's ESP (read-write when rw), runs fn on it, and unmounts it, which
// writes back everything fn wrote.
func WithESP(ctx context.Context, rw bool, fn func(ESP) error) error {
	dev, err := statedisk.Find(ctx, "/sys/class/block", "/dev", ESPLabel, time.Second)
	if err != nil {
		return fmt.Errorf("ESP: %w", err)
	}
	if err := os.MkdirAll(MountDir, 0o700); err != nil {
		return err
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if !rw {
		flags |= unix.MS_RDONLY
	}
	// flush: vfat writes each file back when it is closed, not at some later moment.
	data := "umask=0077,flush"
	if err := unix.Mount(dev, MountDir, "vfat", flags, data); err != nil {
		return fmt.Errorf("mount ESP %s on %s: %w", dev, MountDir, err)
	}
	ferr := fn(ESP{Dir: MountDir})
	unix.Sync()
	if err := unix.Unmount(MountDir, 0); err != nil && ferr == nil {
		ferr = fmt.Errorf("unmount ESP: %w", err)
	}
	return ferr
}
