package vmtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/image/build"
	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/profiles"
	"ingot.dev/ingot/qemu"
)

// buildISO builds a built-in profile with ingot.iso (installing onto installDisk when set) into
// a directory of the test's.
func buildISO(t *testing.T, profile, archName, installDisk string) string {
	t.Helper()
	p, raw, err := profiles.Builtin(profile)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := build.Run(context.Background(), build.Options{Profile: p, ProfileTOML: raw, Arch: archName, Out: dir,
		Cache: cachedir.Default(), NodeBinary: NodeBinary(archName), ISO: true, InstallDisk: installDisk}); err != nil {
		t.Fatalf("build %s with an ISO for %s: %v", profile, archName, err)
	}
	return dir
}

// TestISOInVM: the metal image's ISO boots under UEFI from a virtual CD and from a virtual USB
// stick to a live `node ready`; booted from the CD with an empty virtio disk and a node config,
// the ISO built to install onto /dev/vda (amd64), or the live ISO given [install] disk in the
// node config (arm64), writes the image there, checks it by sha256 and
// reboots into it though the medium is still in; the next boot from that disk alone reaches
// `node ready` with the node config applied;
// and booting the medium again with that disk attached refuses to overwrite the installed node.
func TestISOInVM(t *testing.T) {
	testgate.Short(t, "VM boots")
	for _, archName := range []string{"amd64", "arm64"} {
		t.Run(archName, func(t *testing.T) {
			RequireUEFI(t, archName)
			live := buildISO(t, "metal", archName, "")
			iso := filepath.Join(live, manifest.FileISO)
			st, _ := os.Stat(iso)
			t.Logf("%s: ingot.iso %d MiB", archName, st.Size()>>20)
			for _, how := range []string{"cd", "usb"} {
				cfg := qemu.Config{Image: live, Boot: qemu.BootUEFI}
				if how == "cd" {
					cfg.CDROM = iso
				} else {
					cfg.USBStick = iso
				}
				vm := BootWith(t, cfg)
				took := vm.WaitReady(bootTimeout)
				t.Logf("%s: live node ready %d ms after QEMU start, from a %s", archName, took.Milliseconds(), how)
				vm.Kill()
				vm.Wait()
			}

			// The install target named two ways: on amd64 by the ISO's install entry (ingot.install=
			// on the kernel command line), on arm64 by the node config's [install] disk, booting
			// the live entry.
			inst, config := live, "hostname = \"installed-node\"\n[install]\ndisk = \"/dev/vda\"\n"
			if archName == "amd64" {
				inst, config = buildISO(t, "metal", archName, "/dev/vda"), "hostname = \"installed-node\"\n"
			}
			run := t.TempDir()
			target := filepath.Join(run, "target.raw")
			if err := qemu.EmptyDisk(target, 4<<30, true); err != nil {
				t.Fatal(err)
			}
			nodeToml := filepath.Join(run, "node.toml")
			os.WriteFile(nodeToml, []byte(config), 0o644)
			vm := BootWith(t, qemu.Config{Image: inst, Boot: qemu.BootUEFI, CDROM: filepath.Join(inst, manifest.FileISO),
				Disk: target, FwCfg: map[string]string{"opt/ingot/node.toml": nodeToml}})
			vm.WaitFor("installed: image written and read back with a matching sha256", bootTimeout)
			vm.WaitFor("rebooting into the installed image", bootTimeout)
			line := vm.Console.Output()
			if i := strings.Index(line, "installed: image written"); i >= 0 {
				t.Logf("%s: %s", archName, strings.SplitN(line[i:], "\n", 2)[0])
			}
			// The node reboots in place, the medium still in and first in the boot order the VM
			// started with: the firmware boots the installed disk (BootNext, BootOrder).
			vm.WaitFor("firmware boots the installed disk next and first", bootTimeout)
			vm.WaitFor("state partition mounted on=/var device=/dev/vda2", bootTimeout)
			vm.WaitReady(bootTimeout)
			if n := strings.Count(vm.Console.Output(), "ingot: installing target="); n != 1 {
				t.Fatalf("the installer ran %d times; after the install the disk should boot:\n%s", n, tail(vm.Console.Output(), 3000))
			}
			vm.Kill()
			vm.Wait()

			// The disk alone, without the medium or the node config source.
			vm = BootWith(t, qemu.Config{Image: inst, Boot: qemu.BootUEFI, Disk: target})
			took := vm.WaitReady(bootTimeout)
			console := vm.Console.Output()
			t.Logf("%s: installed node ready %d ms after QEMU start", archName, took.Milliseconds())
			if !strings.Contains(console, "state partition mounted on=/var device=/dev/vda2") {
				t.Fatalf("/var is not on the installed disk:\n%s", tail(console, 3000))
			}
			if !strings.Contains(console, "installed-node") {
				t.Fatalf("the node config given at install time is not applied:\n%s", tail(console, 3000))
			}
			vm.Kill()
			vm.Wait()

			// The medium booted first again (a machine whose firmware forgot the disk): the
			// installed node is not wiped. The install entry's installer refuses the disk; the live
			// entry runs on the disk's state partition, whose kept config names the disk, and does
			// not install either.
			vm = BootWith(t, qemu.Config{Image: inst, Boot: qemu.BootUEFI, CDROM: filepath.Join(inst, manifest.FileISO), Disk: target})
			if archName == "amd64" {
				vm.WaitFor("install failed; the node stays up", bootTimeout)
				if !strings.Contains(vm.Console.Output(), "already holds an ingot install") {
					t.Fatalf("the installer did not say why it refused:\n%s", tail(vm.Console.Output(), 3000))
				}
				// Up, running nothing, but the power button still works.
				vm.WaitFor("watching for the power button", shellTimeout)
				if err := vm.Powerdown(); err != nil {
					t.Fatal(err)
				}
				select {
				case <-vm.Done():
				case <-time.After(shellTimeout):
					t.Fatalf("the power button did not power off a node whose install failed:\n%s", tail(vm.Console.Output(), 3000))
				}
			} else {
				vm.WaitReady(bootTimeout)
				if strings.Contains(vm.Console.Output(), "ingot: installing") {
					t.Fatalf("a live boot with an installed disk installed again:\n%s", tail(vm.Console.Output(), 3000))
				}
			}
		})
	}
}
