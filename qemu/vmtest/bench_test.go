package vmtest

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"ingot.dev/ingot/qemu"
)

// BenchmarkBoot measures, per architecture and boot path, the time from QEMU start to the node's
// ready line, next to the floor measured in the same run: the same kernel with an initramfs
// holding only busybox, whose /init powers off at once (QEMU start to QEMU exit).
//
//	go test -run '^$' -bench Boot -benchtime 3x ./qemu/vmtest
func BenchmarkBoot(b *testing.B) {
	for _, archName := range []string{"amd64", "arm64"} {
		b.Run(archName+"/floor", func(b *testing.B) {
			RequireVM(b, archName)
			floor := filepath.Join(b.TempDir(), "floor")
			FloorImage(b, Image(b, "dev", archName), floor)
			b.ResetTimer()
			var total time.Duration
			for i := 0; i < b.N; i++ {
				run := b.TempDir()
				vm, err := qemu.Start(context.Background(), qemu.Config{Image: floor, Boot: qemu.BootDirect, RunDir: run})
				if err != nil {
					b.Fatal(err)
				}
				select {
				case <-vm.Done():
				case <-time.After(3 * time.Minute):
					vm.Kill()
					b.Fatalf("floor VM did not power off:\n%s", vm.Console.Output())
				}
				total += time.Since(vm.Started)
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/boot")
		})
		for _, boot := range []string{qemu.BootDirect, qemu.BootUEFI} {
			b.Run(archName+"/ready-"+boot, func(b *testing.B) {
				RequireVM(b, archName)
				img := Image(b, "dev", archName)
				b.ResetTimer()
				var total time.Duration
				for i := 0; i < b.N; i++ {
					vm := Boot(b, img, boot)
					total += vm.WaitReady(bootTimeout)
					vm.Kill()
				}
				b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/boot")
			})
		}
	}
}
