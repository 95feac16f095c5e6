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

// A cluster's worker VM: an address of its own from QEMU's DHCP server, and its console appended
// to a file rather than a pipe (the VM outlives the program that started it).
func TestArgsDHCPStartAndConsoleFile(t *testing.T) {
	m := &manifest.Manifest{Arch: "amd64", Cmdline: "console=ttyS0"}
	c := Config{Image: "/img", RunDir: t.TempDir(), DHCPStart: "10.0.2.16", ConsoleFile: "/s/worker-1.console",
		GuestFwd: []string{"tcp:10.0.2.100:6443-cmd:/bin/relay 127.0.0.1:6443"}}
	args, err := c.Args(m)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(args, " ")
	for _, want := range []string{
		"-chardev file,id=console0,append=on,path=/s/worker-1.console -serial chardev:console0 -monitor none",
		"-netdev user,id=net0,restrict=on,dhcpstart=10.0.2.16,guestfwd=tcp:10.0.2.100:6443-cmd:/bin/relay 127.0.0.1:6443 ",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("args lack %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "stdio") {
		t.Errorf("a console file and stdio:\n%s", got)
	}
	for _, bad := range []Config{
		{Image: "/img", RunDir: "/r", DHCPStart: "10.0.2"},
		{Image: "/img", RunDir: "/r", DHCPStart: "fd00::2"},
		{Image: "/img", RunDir: "/r", ConsoleFile: "/c", Interactive: true},
	} {
		if _, err := bad.Args(m); err == nil {
			t.Errorf("Args(%+v) accepted it", bad)
		}
	}
}

// Disks and NICs as real machines attach them, for the hardware autodetection tests.
func TestArgsDiskAndNICModels(t *testing.T) {
	m := &manifest.Manifest{Arch: "amd64", Cmdline: "console=ttyS0"}
	for _, c := range []struct {
		cfg  Config
		want []string
	}{
		{Config{DiskModel: DiskNVMe, NIC: NICE1000e}, []string{"-device nvme,drive=disk0,serial=ingot0", "-device e1000e,netdev=net0,romfile="}},
		{Config{DiskModel: DiskAHCI}, []string{"-device ahci,id=ahci0 -device ide-hd,drive=disk0,bus=ahci0.0", "-device virtio-net-pci,netdev=net0,romfile="}},
		{Config{}, []string{"-device virtio-blk-pci,drive=disk0", "-device virtio-net-pci,netdev=net0"}},
		{Config{Disk: "/d/disk.qcow2"}, []string{"-drive if=none,id=disk0,format=qcow2,file=/d/disk.qcow2"}},
		{Config{NIC: NICE1000e, ExtraNICs: []string{NICVirtio, NICE1000e}}, []string{
			"-device e1000e,netdev=net0,romfile=",
			"-netdev user,id=net1,restrict=on,net=10.0.3.0/24 -device virtio-net-pci,netdev=net1,romfile=",
			"-netdev user,id=net2,restrict=on,net=10.0.4.0/24 -device e1000e,netdev=net2,romfile="}},
	} {
		c.cfg.Image, c.cfg.RunDir = "/img", t.TempDir()
		if c.cfg.Disk == "" {
			c.cfg.Disk = "/d/disk.raw"
		}
		args, err := c.cfg.Args(m)
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Join(args, " ")
		for _, w := range c.want {
			if !strings.Contains(got, w) {
				t.Errorf("%+v: args lack %q:\n%s", c.cfg, w, got)
			}
		}
	}
	for _, bad := range []Config{{DiskModel: "scsi"}, {NIC: "rtl8139"}, {ExtraNICs: []string{"ne2k"}}} {
		bad.Image, bad.RunDir, bad.Disk = "/img", "/r", "/d"
		if _, err := bad.Args(m); err == nil {
			t.Errorf("Args(%+v) accepted it", bad)
		}
	}
}
