package qemu

import (
	"strings"
	"testing"

	"ingot.dev/ingot/image/manifest"
)

// A node config reaches the guest through fw_cfg, or through an extra read-only drive.
func TestArgsFwCfgAndDrives(t *testing.T) {
	c := Config{Image: "/img", RunDir: t.TempDir(), Disk: "/d/disk.raw",
		FwCfg:  map[string]string{"opt/ingot/node.toml": "/c/node.toml", "opt/a": "/c/a"},
		Drives: []string{"/c/config.img"}}
	args, err := c.Args(&manifest.Manifest{Arch: "amd64", Cmdline: "console=ttyS0"})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(args, " ")
	for _, want := range []string{
		"-drive if=none,id=disk0,format=raw,file=/d/disk.raw -device virtio-blk-pci,drive=disk0 " +
			"-drive if=none,id=drive1,format=raw,readonly=on,file=/c/config.img -device virtio-blk-pci,drive=drive1",
		"-fw_cfg name=opt/a,file=/c/a -fw_cfg name=opt/ingot/node.toml,file=/c/node.toml",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("args lack %q:\n%s", want, got)
		}
	}
}
