// Package arch is the table of what differs between target architectures: toolchain, Debian
// architecture, EFI file names, firmware, QEMU machine and console. The builder targets arm64 from
// an amd64 host, so this is data looked up by name, never build tags.
package arch

import (
	"fmt"
	"runtime"
	"sort"
)

// Arch describes one target architecture.
type Arch struct {
	Name    string // Go and Debian architecture name: amd64, arm64
	CC      string // C compiler for the cgo node binary
	Console string // the serial console device the kernel writes to
	// EFI files inside Debian's systemd-boot-efi package, and the removable-media boot path.
	EFIStub     string
	EFIBoot     string
	EFIFallback string
	// QEMU.
	QEMU     string     // system emulator binary
	Machine  []string   // -machine/-cpu arguments
	Firmware []Firmware // candidate UEFI firmware, first found wins
}

// Firmware is a UEFI code image and the variable-store template that goes with it.
type Firmware struct{ Code, Vars string }

var table = map[string]Arch{
	"amd64": {
		Name:        "amd64",
		CC:          "gcc",
		Console:     "ttyS0",
		EFIStub:     "usr/lib/systemd/boot/efi/linuxx64.efi.stub",
		EFIBoot:     "usr/lib/systemd/boot/efi/systemd-bootx64.efi",
		EFIFallback: "EFI/BOOT/BOOTX64.EFI",
		QEMU:        "qemu-system-x86_64",
		Machine:     []string{"-machine", "q35"},
		Firmware: []Firmware{
			{"/usr/share/OVMF/OVMF_CODE_4M.fd", "/usr/share/OVMF/OVMF_VARS_4M.fd"},
			{"/usr/share/OVMF/OVMF_CODE.fd", "/usr/share/OVMF/OVMF_VARS.fd"},
		},
	},
	"arm64": {
		Name:        "arm64",
		CC:          "aarch64-linux-gnu-gcc",
		Console:     "ttyAMA0",
		EFIStub:     "usr/lib/systemd/boot/efi/linuxaa64.efi.stub",
		EFIBoot:     "usr/lib/systemd/boot/efi/systemd-bootaa64.efi",
		EFIFallback: "EFI/BOOT/BOOTAA64.EFI",
		QEMU:        "qemu-system-aarch64",
		// cortex-a57: `-cpu max` under TCG is about ten times slower to boot.
		Machine:  []string{"-machine", "virt", "-cpu", "cortex-a57"},
		Firmware: []Firmware{{"/usr/share/AAVMF/AAVMF_CODE.fd", "/usr/share/AAVMF/AAVMF_VARS.fd"}},
	},
}

// Lookup returns the architecture named name.
func Lookup(name string) (Arch, error) {
	a, ok := table[name]
	if !ok {
		return Arch{}, fmt.Errorf("unknown architecture %q (want one of %v)", name, Names())
	}
	return a, nil
}

// Host returns the architecture of the machine running this program.
func Host() string { return runtime.GOARCH }

// Names lists the supported architectures.
func Names() []string {
	var n []string
	for k := range table {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}
