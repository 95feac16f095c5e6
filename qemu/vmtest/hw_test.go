package vmtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/image/qcow2"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/qemu"
)

// TestHardwareInVM boots images whose profile names no disk or NIC driver, only module sets, on
// disks and NICs of several models: PID 1 must find each device, load its driver, mount /var from
// the state partition on that disk and take an address by DHCP on that NIC, and `ingot-node hw
// show` must list the devices with their drivers. Debian's cloud kernel has NVMe built in but no
// e1000e or AHCI, so those boots use the generic kernel (linux-image-{arch}).
func TestHardwareInVM(t *testing.T) {
	testgate.Short(t, "VM boots")
	for _, c := range []struct {
		name, profile, disk, nic string
		dev                      string // the state partition's device node
		drivers                  []string
		archs                    []string
	}{
		{"cloud/virtio", "testdata/hw-cloud.toml", qemu.DiskVirtio, qemu.NICVirtio, "/dev/vda2", []string{"virtio_blk", "virtio_net", "virtio-pci"}, []string{"amd64", "arm64"}},
		{"generic/nvme+e1000e", "testdata/hw-generic.toml", qemu.DiskNVMe, qemu.NICE1000e, "/dev/nvme0n1p2", []string{"nvme", "e1000e"}, []string{"amd64", "arm64"}},
		// AHCI on amd64 only: a PC's SATA controller; arm64 servers attach NVMe or SAS.
		{"generic/ahci+e1000e", "testdata/hw-generic.toml", qemu.DiskAHCI, qemu.NICE1000e, "/dev/sda2", []string{"ahci", "e1000e", "sd"}, []string{"amd64"}},
	} {
		for _, archName := range c.archs {
			t.Run(archName+"/"+c.name, func(t *testing.T) {
				RequireVM(t, archName)
				img := Image(t, c.profile, archName)
				cfg := qemu.Config{Image: img, Boot: qemu.BootDirect, DiskModel: c.disk, NIC: c.nic}
				hotplug := archName == "amd64" && c.disk == qemu.DiskNVMe
				if hotplug {
					cfg.HotplugPorts = 1
				}
				vm := BootWith(t, cfg)
				took := vm.WaitReady(bootTimeout)
				console := vm.Console.Output()
				phase := regexp.MustCompile(`boot phase done phase=hardware took=(\S+)`).FindStringSubmatch(console)
				loaded := regexp.MustCompile(`hardware: devices matched against the image's drivers devices=(\d+) loaded=(\S*)`).FindStringSubmatch(console)
				if phase == nil || loaded == nil {
					t.Fatalf("no hardware phase on the console:\n%s", tail(console, 3000))
				}
				t.Logf("%s %s: node ready %d ms after QEMU start; hardware phase %s, %s devices, loaded %s", archName, c.name, took.Milliseconds(), phase[1], loaded[1], loaded[2])
				if !strings.Contains(console, "state partition mounted on=/var device="+c.dev) {
					t.Fatalf("/var is not on %s:\n%s", c.dev, tail(console, 3000))
				}
				if !strings.Contains(console, "dhcp lease interface=eth0 address=10.0.2.15/24") {
					t.Fatalf("eth0 got no DHCP lease:\n%s", tail(console, 3000))
				}
				if strings.Contains(console, "a driver did not load") {
					t.Errorf("a driver failed to load:\n%s", tail(console, 3000))
				}
				vm.Prompt(shellTimeout)
				out := vm.MustShell("ingot-node hw show", shellTimeout)
				for _, d := range c.drivers {
					if !regexp.MustCompile(`(?m)^\S+\s+\S+\s+` + regexp.QuoteMeta(d) + `\s`).MatchString(out) {
						t.Errorf("ingot-node hw show lists no device bound to %s:\n%s", d, out)
					}
				}
				if !regexp.MustCompile(`\d+ devices, \d+ with no driver bound`).MatchString(out) {
					t.Errorf("ingot-node hw show has no summary:\n%s", out)
				}
				t.Logf("%s %s: ingot-node hw show:\n%s", archName, c.name, out)
				if !hotplug {
					return
				}
				// A NIC plugged in while the node runs, whose driver (e1000, an older Intel chip)
				// no device at boot needed: the uevent brings it in, and the link appears.
				if strings.Contains(console, "module=e1000 ") || strings.Contains(loaded[2], "e1000,") {
					t.Fatalf("e1000 was loaded before any e1000 device was plugged in:\n%s", loaded[2])
				}
				if err := vm.DeviceAdd(map[string]string{"driver": "e1000", "id": "nic1", "bus": "hp0", "romfile": ""}); err != nil {
					t.Fatal(err)
				}
				vm.WaitFor("hardware: driver loaded for a new device modalias=pci:v00008086d0000100E", shellTimeout)
				vm.WaitFor("module=e1000", shellTimeout)
				links := vm.MustShell("ip -o link show", shellTimeout)
				if !strings.Contains(links, "eth1") {
					t.Fatalf("no eth1 after plugging in an e1000 NIC:\n%s", links)
				}
				t.Logf("%s: hotplugged e1000 NIC got its driver", archName)
			})
		}
	}
}

// TestMetalInVM boots the built-in metal profile as a machine with an NVMe disk and three NICs
// (e1000e, virtio, and an e1000e without a cable), none of whose drivers the profile names: the
// node must reach `node ready` with /var on the NVMe disk, a DHCP lease on each cabled NIC (two
// networks, two default routes at their own metrics), the uncabled NIC reported and left down,
// and its log on both consoles the profile names.
func TestMetalInVM(t *testing.T) {
	testgate.Short(t, "VM boots")
	for _, archName := range []string{"amd64", "arm64"} {
		t.Run(archName, func(t *testing.T) {
			RequireVM(t, archName)
			img := Image(t, "metal", archName)
			m, err := manifest.Read(img)
			if err != nil {
				t.Fatal(err)
			}
			// Firmware: what the NIC drivers name, from Debian's firmware packages.
			var realtek int
			for _, f := range m.Firmware {
				if f.Package == "firmware-realtek" && strings.HasPrefix(f.Path, "rtl_nic/") {
					realtek++
				}
			}
			if realtek == 0 || len(m.FirmwareMissing) > 0 {
				t.Errorf("firmware: %d rtl_nic files from firmware-realtek, missing %v; want some and none", realtek, m.FirmwareMissing)
			}
			t.Logf("%s metal: %d firmware files shipped", archName, len(m.Firmware))
			vm := BootWith(t, qemu.Config{Image: img, Boot: qemu.BootDirect, DiskModel: qemu.DiskNVMe,
				NIC: qemu.NICE1000e, ExtraNICs: []string{qemu.NICVirtio, qemu.NICE1000e}})
			if err := vm.SetLink("net2", false); err != nil {
				t.Fatal(err)
			}
			took := vm.WaitReady(bootTimeout)
			console := vm.Console.Output()
			t.Logf("%s metal: node ready %d ms after QEMU start", archName, took.Milliseconds())
			if !strings.Contains(console, "state partition mounted on=/var device=/dev/nvme0n1p2") {
				t.Fatalf("/var is not on the NVMe disk:\n%s", tail(console, 3000))
			}
			if !regexp.MustCompile(`ethernet links links="eth0 eth1 eth2"`).MatchString(console) {
				t.Fatalf("PID 1 did not find the three NICs:\n%s", tail(console, 3000))
			}
			// The second lease may come after the node is ready: the boot waits for one. The
			// lines come in any order, so each is looked for from the start of the console.
			for _, text := range []string{"address=10.0.2.15/24", "address=10.0.3.15/24", "no carrier after"} {
				ctx, cancel := context.WithTimeout(context.Background(), shellTimeout)
				_, err := vm.Console.WaitFor(ctx, 0, text)
				cancel()
				if err != nil {
					t.Fatalf("no %q on the console: %v\n%s", text, err, tail(vm.Console.Output(), 3000))
				}
			}
			console = vm.Console.Output()
			if n := strings.Count(console, "dhcp lease interface="); n != 2 {
				t.Fatalf("%d DHCP leases, want 2 (two cabled NICs):\n%s", n, tail(console, 3000))
			}
			if !strings.Contains(console, "consoles to=\"tty0 "+map[string]string{"amd64": "ttyS0", "arm64": "ttyAMA0"}[archName]+"\"") {
				t.Errorf("PID 1 does not write to the screen and the serial port:\n%s", tail(console, 3000))
			}
			if strings.Contains(console, "a driver did not load") {
				t.Errorf("a driver failed to load:\n%s", tail(console, 3000))
			}
		})
	}
}

// TestQCOW2InVM: the dev image's disk converted to QCOW2 (as `ingot build --qcow2` writes
// disk.qcow2) boots under UEFI from a `-drive format=qcow2` to `node ready`, formats its state
// partition there, and QEMU's own check finds the file sound after the node powered off.
func TestQCOW2InVM(t *testing.T) {
	testgate.Short(t, "VM boots")
	qemuImg := testgate.RequireCommand(t, "qemu-img")
	for _, archName := range []string{"amd64", "arm64"} {
		t.Run(archName, func(t *testing.T) {
			RequireUEFI(t, archName)
			img := Image(t, "dev", archName)
			disk := filepath.Join(t.TempDir(), manifest.FileQCOW2)
			if err := qcow2.Write(disk, filepath.Join(img, manifest.FileDisk)); err != nil {
				t.Fatal(err)
			}
			st, _ := os.Stat(disk)
			raw, _ := os.Stat(filepath.Join(img, manifest.FileDisk))
			t.Logf("%s: disk.raw %d MiB (sparse), disk.qcow2 %d MiB", archName, raw.Size()>>20, st.Size()>>20)
			vm := BootWith(t, qemu.Config{Image: img, Boot: qemu.BootUEFI, Disk: disk})
			took := vm.WaitReady(bootTimeout)
			t.Logf("%s: node ready %d ms after QEMU start, from QCOW2", archName, took.Milliseconds())
			if !strings.Contains(vm.Console.Output(), "state partition mounted on=/var device=/dev/vda2") {
				t.Fatalf("/var is not on the QCOW2 disk:\n%s", tail(vm.Console.Output(), 3000))
			}
			if err := vm.Powerdown(); err != nil {
				t.Fatal(err)
			}
			vm.Wait()
			if out, err := exec.Command(qemuImg, "check", disk).CombinedOutput(); err != nil {
				t.Fatalf("qemu-img check after the node wrote to it: %v\n%s", err, out)
			}
		})
	}
}

// TestPXEInVM: a diskless machine boots the image over the network: the UEFI firmware's PXE
// client takes its boot file name from QEMU's DHCP server and fetches the UKI from its TFTP
// server, and the node reaches `node ready` with /var in memory.
func TestPXEInVM(t *testing.T) {
	testgate.Short(t, "VM boots")
	for _, archName := range []string{"amd64", "arm64"} {
		t.Run(archName, func(t *testing.T) {
			RequireUEFI(t, archName)
			img := Image(t, "dev", archName)
			vm := BootWith(t, qemu.Config{Image: img, Boot: qemu.BootPXE})
			took := vm.WaitReady(bootTimeout)
			t.Logf("%s: node ready %d ms after QEMU start, over PXE", archName, took.Milliseconds())
			if !strings.Contains(vm.Console.Output(), "no usable state partition") {
				t.Errorf("a diskless node should say /var is in memory:\n%s", tail(vm.Console.Output(), 3000))
			}
		})
	}
}
