package pid1

import (
	"context"
	"slices"
	"strings"
	"time"

	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/init/boot"
	"ingot.dev/ingot/init/install"
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

// bootInstalled asks the firmware to boot the installed disk next (not implemented yet: the
// medium, if still attached and first in the boot order, boots again; remove it).
func (n *Node) bootInstalled(disk string) {
	n.log.Info("remove the install medium if the firmware boots it before " + disk)
}
