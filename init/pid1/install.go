package pid1

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/init/boot"
	"ingot.dev/ingot/init/install"
	"ingot.dev/ingot/init/nodesource"
	"ingot.dev/ingot/init/slots"
	"ingot.dev/ingot/init/statedisk"
)

// installMediumWait bounds the wait for the install medium and the target disk: a USB stick's
// disk appears a few seconds after its controller's driver loads.
const installMediumWait = 20 * time.Second

// installTarget is the disk the kernel command line asks the node to install onto (ingot.install=,
// set by the ISO's install entry), or "".
func installTarget(cmdline string) string {
	for _, arg := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(arg, manifest.InstallArg+"="); ok {
			return v
		}
	}
	return ""
}

// installStep is the installer mode: it runs before the state partition is looked for, so the
// new disk's is the one the rest of the boot formats, mounts and keeps the node config in.
type installStep struct {
	n      *Node
	target string
}

func (s installStep) String() string {
	return "install the medium's image onto " + s.target
}

func (s installStep) Do(ctx context.Context) error {
	s.n.log.Info("installing", "target", s.target)
	force := slices.Contains(strings.Fields(procCmdline()), install.ForceArg+"=1")
	res, err := install.Run(ctx, install.Options{Target: s.target, Sys: "/sys", Dev: "/dev", Wait: installMediumWait, Force: force})
	if err != nil {
		s.n.installErr = err
		return err
	}
	s.n.installed = s.target
	s.n.log.Info("installed: image written and read back with a matching sha256",
		"target", s.target, "from", res.Medium, "profile", res.Info.Profile, "version", res.Info.Version,
		"written_mib", res.Written>>20, "image_mib", res.Info.DiskSize>>20, "took", res.Took.Round(time.Millisecond))
	return nil
}

// installSteps is the install phase: empty unless the kernel command line names a target.
func (n *Node) installSteps() []boot.Step {
	target := installTarget(procCmdline())
	if target == "" {
		return nil
	}
	return []boot.Step{installStep{n: n, target: target}}
}

// bootInstalled asks the firmware to boot the installed disk next and first from now on (a
// Boot#### option for its ESP's loader, BootNext and the head of BootOrder): the medium would
// otherwise boot again. Without UEFI variables (a direct boot) it says what to do instead.
func (n *Node) bootInstalled(disk string) {
	if !slots.UEFI(slots.EFIVars) {
		n.log.Warn("not booted by UEFI: remove the install medium, or the firmware may boot it again", "disk", disk)
		return
	}
	loader := `EFI/BOOT/BOOTX64.EFI`
	if runtime.GOARCH == "arm64" {
		loader = `EFI/BOOT/BOOTAA64.EFI`
	}
	num, err := slots.BootDisk(slots.EFIVars, disk, loader)
	if err != nil {
		n.log.Warn("the firmware's boot order is unchanged: remove the install medium, or it may boot again", "disk", disk, "err", err)
		return
	}
	n.log.Info("firmware boots the installed disk next and first", "disk", disk, "option", fmt.Sprintf("Boot%04X", num))
}

// installFromNodeConfig is the installer mode asked for by the node config's [install] disk
// rather than the kernel command line: it runs after the node config is read, and only on a live
// boot from the medium (/var is a tmpfs: no state partition anywhere), so an installed node whose
// kept config still names the disk never installs again. It writes the image, then formats the
// new disk's state partition and keeps the node config there, as the boot does after an install
// asked for on the command line.
func (n *Node) installFromNodeConfig(ctx context.Context) {
	c := n.node.Config
	if c == nil || c.Install.Disk == "" || installTarget(procCmdline()) != "" {
		return
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/var", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		return
	}
	if install.Medium("/sys", "/dev") == "" {
		n.log.Info("the node config names an install disk, but no install medium is attached; not installing", "disk", c.Install.Disk)
		return
	}
	if err := (installStep{n: n, target: c.Install.Disk}).Do(ctx); err != nil {
		return // installErr says why
	}
	const mnt = "/run/ingot/installed-var"
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		n.installed, n.installErr = "", fmt.Errorf("after the install: %w", err)
		return
	}
	res, err := statedisk.Prepare(ctx, statedisk.NodeTools, statedisk.Label, mnt, unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOATIME, 5*time.Second, nil)
	if err != nil {
		n.installed, n.installErr = "", fmt.Errorf("after the install: the new state partition: %w", err)
		return
	}
	defer unix.Unmount(mnt, 0)
	n.log.Info("state partition of the installed disk ready", "device", res.Device, "formatted", res.Formatted, "grown", res.Grown)
	kept, err := nodesource.LoadKept(nodesource.KeptDir)
	if err == nil {
		err = nodesource.Keep(filepath.Join(mnt, strings.TrimPrefix(nodesource.KeptDir, "/var")), kept)
	}
	if err != nil {
		n.installed, n.installErr = "", fmt.Errorf("after the install: keep the node config on the installed disk: %w", err)
	}
}
