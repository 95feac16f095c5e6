package build

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"ingot.dev/ingot/image/bundle"
	"ingot.dev/ingot/image/initramfs"
	"ingot.dev/ingot/profiles"
)

// KubeletPath is where an image carries the kubelet.
const KubeletPath = "/bin/kubelet"

// kubeletHelpers is the busybox that the kubelet's volume code calls as mount and umount. An image
// with the kubelet but not the busybox bundle gets only these two applets, so no shell comes with
// them.
const kubeletHelpers = "/usr/libexec/ingot/busybox"

// kubelet adds the kubelet for the target arch (built from the Go module proxy into the cache, or
// the profile's own binary) and the mount and umount it calls.
func (j *job) kubelet(ctx context.Context, t *initramfs.Tree) error {
	k := j.o.Profile.Kubelet
	bin, version := k.Binary, "profile"
	if bin == "" {
		var err error
		if bin, err = bundle.Kubelet(ctx, j.o.Cache, j.a.Name); err != nil {
			return fmt.Errorf("bundle kubelet: %w", err)
		}
		version = bundle.KubernetesVersion
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return fmt.Errorf("bundle kubelet: %w", err)
	}
	j.addInput("kubelet "+version, version, data)
	if err := t.File(KubeletPath, data, 0o755); err != nil {
		return err
	}
	if slices.Contains(j.o.Profile.Bundles, profiles.BundleBusybox) {
		return nil // the busybox bundle has mount and umount on PATH already
	}
	root, err := j.deb(ctx, "busybox-static")
	if err != nil {
		return fmt.Errorf("bundle kubelet: mount and umount: %w", err)
	}
	bb, err := os.ReadFile(filepath.Join(root, "bin/busybox"))
	if err != nil {
		return fmt.Errorf("bundle kubelet: mount and umount: %w", err)
	}
	if err := t.File(kubeletHelpers, bb, 0o755); err != nil {
		return err
	}
	for _, applet := range []string{"mount", "umount"} {
		if err := t.Symlink("/bin/"+applet, kubeletHelpers); err != nil {
			return fmt.Errorf("bundle kubelet: %w", err)
		}
	}
	return nil
}
