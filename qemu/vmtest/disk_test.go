package vmtest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/qemu"
)

// gptBytes returns the disk's primary GPT (protective MBR, header, entries: the first 34
// sectors) and its backup (the last 33 sectors).
func gptBytes(t *testing.T, disk string) []byte {
	t.Helper()
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, (34+33)*512)
	if _, err := f.ReadAt(b[:34*512], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.ReadAt(b[34*512:], st.Size()-33*512); err != nil {
		t.Fatal(err)
	}
	return b
}

// varKiB is the size of the filesystem on /var as df reports it, in KiB.
func varKiB(t *testing.T, vm *VM) int64 {
	t.Helper()
	out := vm.MustShell("df -k /var | tail -n 1", shellTimeout)
	f := strings.Fields(out)
	if len(f) < 2 {
		t.Fatalf("df -k /var: %q", out)
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatalf("df -k /var: %q: %v", out, err)
	}
	return n
}

// TestStateFillsDisk boots the dev image on a working disk grown to 2 GiB (ingot qemu
// --disk-size 2G): the node grows INGOT-STATE to the end of the disk before formatting it, so
// /var is about 2 GiB; a second boot finds the state formatted and leaves the partition table
// byte for byte as it was.
func TestStateFillsDisk(t *testing.T) {
	testgate.Short(t, "VM boots")
	for _, archName := range []string{"amd64", "arm64"} {
		t.Run(archName, func(t *testing.T) {
			RequireVM(t, archName)
			img := Image(t, "dev", archName)
			run := t.TempDir()
			disk := filepath.Join(run, manifest.FileDisk)
			const size = 2 << 30
			if err := qemu.WorkingDisk(filepath.Join(img, manifest.FileDisk), disk, true, size); err != nil {
				t.Fatal(err)
			}
			shipped := gptBytes(t, filepath.Join(img, manifest.FileDisk))
			cfg := qemu.Config{Image: img, Boot: qemu.BootDirect, Disk: disk}

			vm := BootWith(t, cfg)
			took := vm.WaitReady(bootTimeout)
			t.Logf("%s: first boot on a 2 GiB disk (grow and format) to %q: %d ms", archName, ReadyLine, took.Milliseconds())
			vm.Prompt(shellTimeout)
			first := varKiB(t, vm)
			// The partition is the disk less the ESP and the GPT (1946 MiB here); df leaves out
			// ext4's own metadata, which go-diskfs' writer makes large: 1718232 KiB, 86% of the
			// disk, on amd64. Without growing, /var would be the image's 64 MiB.
			if lo, hi := int64(size/1024*80/100), int64(size/1024); first < lo || first > hi {
				t.Fatalf("/var is %d KiB on a %d KiB disk; want between %d and %d", first, size/1024, lo, hi)
			}
			token := fmt.Sprintf("state-%d", time.Now().UnixNano())
			vm.MustShell("echo "+token+" > /var/persist && sync", shellTimeout)
			vm.PowerOff(archName, qemu.BootDirect)
			vm.WaitExit(powerTimeout)
			vm.AssertCleanConsole()
			grown := gptBytes(t, disk)
			if bytes.Equal(grown[:34*512], shipped[:34*512]) {
				t.Fatal("the primary GPT is the image's own: the node did not grow the state partition")
			}

			vm = BootWith(t, cfg)
			vm.WaitReady(bootTimeout)
			vm.Prompt(shellTimeout)
			if got := vm.MustShell("cat /var/persist", shellTimeout); got != token {
				t.Fatalf("/var/persist on the second boot = %q, want %q", got, token)
			}
			if second := varKiB(t, vm); second != first {
				t.Fatalf("/var is %d KiB on the second boot, %d KiB on the first", second, first)
			}
			vm.PowerOff(archName, qemu.BootDirect)
			vm.WaitExit(powerTimeout)
			vm.AssertCleanConsole()
			if again := gptBytes(t, disk); !bytes.Equal(again, grown) {
				t.Fatal("the second boot rewrote the partition table")
			}
		})
	}
}
