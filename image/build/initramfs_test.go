package build

import (
	"testing"

	"ingot.dev/ingot/init/rootfs"
)

// The builder and PID 1 agree on where the root filesystem and its modules are.
func TestRootFSPathsMatchInit(t *testing.T) {
	if BinDir != rootfs.BinDir || NodeBinaryPath != rootfs.Binary {
		t.Fatalf("builder puts the node binary at %s in %s, PID 1 binds %s holding %s", NodeBinaryPath, BinDir, rootfs.BinDir, rootfs.Binary)
	}
	if RootFSPath != rootfs.Image || EarlyModulesPath != rootfs.Modules {
		t.Fatalf("builder writes %s and %s, PID 1 reads %s and %s", RootFSPath, EarlyModulesPath, rootfs.Image, rootfs.Modules)
	}
}
