package vmtest

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/qemu"
)

// BenchmarkBoot times, per architecture and boot path, QEMU start to a console line: the node's
// ready line for the dev image, and the boot floor's line (FloorImage: the same kernel, command
// line, devices and disk layout, with a busybox init that only prints) measured the same way in
// the same run, so "ingot's own part" is ready minus floor. Node boots come in two kinds: first
// (a fresh copy of the image's disk, so the node formats /var) and warm (a disk that has booted
// and powered off cleanly before). Each reports the median and the slowest of b.N boots.
//
//	make bench   (or: go test -run '^$' -bench Boot -benchtime 5x ./qemu/vmtest)
func BenchmarkBoot(b *testing.B) {
	for _, archName := range []string{"amd64", "arm64"} {
		for _, boot := range []string{qemu.BootDirect, qemu.BootUEFI} {
			b.Run(archName+"/floor-"+boot, func(b *testing.B) {
				RequireVM(b, archName)
				floor := filepath.Join(b.TempDir(), "floor")
				FloorImage(b, Image(b, "dev", archName), floor)
				reportBoots(b, func() time.Duration {
					vm := Boot(b, floor, boot)
					vm.WaitFor(FloorLine, bootTimeout)
					d := time.Since(vm.Started)
					vm.Kill()
					return d
				})
			})
			b.Run(archName+"/first-"+boot, func(b *testing.B) {
				RequireVM(b, archName)
				img := Image(b, "dev", archName)
				reportBoots(b, func() time.Duration {
					vm := Boot(b, img, boot)
					d := vm.WaitReady(bootTimeout)
					vm.Kill()
					return d
				})
			})
			b.Run(archName+"/warm-"+boot, func(b *testing.B) {
				RequireVM(b, archName)
				img := Image(b, "dev", archName)
				disk := filepath.Join(b.TempDir(), "disk.raw")
				if err := qemu.CopySparse(filepath.Join(img, manifest.FileDisk), disk); err != nil {
					b.Fatal(err)
				}
				warmBoot := func() (*VM, time.Duration) {
					vm := BootWith(b, qemu.Config{Image: img, Boot: boot, Disk: disk})
					return vm, vm.WaitReady(bootTimeout)
				}
				vm, _ := warmBoot() // the first boot formats /var
				vm.PowerOff(archName, boot)
				vm.WaitExit(powerTimeout)
				reportBoots(b, func() time.Duration {
					vm, d := warmBoot()
					// A clean power off, as a warm node had before: the next boot finds /var clean.
					vm.PowerOff(archName, boot)
					vm.WaitExit(powerTimeout)
					return d
				})
			})
		}
	}
}

// reportBoots runs boot b.N times with the timer stopped around it and reports the median and the
// slowest, in milliseconds.
func reportBoots(b *testing.B, boot func() time.Duration) {
	b.Helper()
	var ds []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ds = append(ds, boot())
	}
	b.StopTimer()
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Milliseconds()), "ms-median")
	b.ReportMetric(float64(ds[len(ds)-1].Milliseconds()), "ms-max")
}

// BenchmarkImageSize reports, per profile and architecture, the UKI's size beside the kernel's
// (both as the image ships them) and what the UKI adds over the kernel. Nothing is timed.
func BenchmarkImageSize(b *testing.B) {
	for _, profile := range []string{"minimal", "dev", "worker"} {
		for _, archName := range []string{"amd64", "arm64"} {
			b.Run(profile+"/"+archName, func(b *testing.B) {
				img := Image(b, profile, archName)
				size := func(name string) float64 {
					fi, err := os.Stat(filepath.Join(img, name))
					if err != nil {
						b.Fatal(err)
					}
					return float64(fi.Size()) / 1e6
				}
				uki, kernel := size(manifest.FileUKI), size(manifest.FileKernel)
				b.ReportMetric(uki, "MB-uki")
				b.ReportMetric(kernel, "MB-kernel")
				b.ReportMetric(uki-kernel, "MB-uki-over-kernel")
				b.Logf("%s %s: UKI %.1f MB, kernel %.1f MB: +%.1f MB", profile, archName, uki, kernel, uki-kernel)
			})
		}
	}
}
