package qemu

import (
	"encoding/binary"
	"os"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// KVM ioctls (linux/kvm.h).
const (
	kvmGetAPIVersion       = 0xAE00
	kvmCreateVM            = 0xAE01
	kvmGetVCPUMmapSize     = 0xAE04
	kvmCreateVCPU          = 0xAE41
	kvmSetUserMemoryRegion = 0x4020AE46
	kvmRun                 = 0xAE80
	kvmGetRegs             = 0x8090AE81
	kvmSetRegs             = 0x4090AE82
	kvmGetSregs            = 0x8138AE83
	kvmSetSregs            = 0x4138AE84
	kvmGetSupportedCPUID   = 0xC008AE05
	kvmExitHLT             = 5
)

// KVMUsable reports whether KVM can really run a guest for the target architecture. On the build
// machines /dev/kvm opens, creates VMs and even runs a HLT, yet a Linux guest hangs in early boot;
// the same KVM reports no SSE3 in its supported CPUID, which no real x86_64 CPU of this century
// lacks. So the probe asks for the baseline features a 64-bit Linux kernel expects and then runs
// one HLT instruction in a real-mode guest, with a deadline. INGOT_ACCEL=kvm or tcg overrides it.
func KVMUsable(target string) bool {
	switch os.Getenv("INGOT_ACCEL") {
	case "kvm":
		return true
	case "tcg":
		return false
	}
	if target != runtime.GOARCH || runtime.GOARCH != "amd64" {
		return false
	}
	if !cpuidBaseline() {
		return false
	}
	done := make(chan bool, 1)
	go func() { done <- runHLT() }()
	select {
	case ok := <-done:
		return ok
	case <-time.After(2 * time.Second):
		return false // the vCPU thread stays stuck in KVM_RUN; the fds leak with it
	}
}

// cpuidBaseline checks KVM's supported CPUID leaf 1 for SSE2, SSE3, SSSE3, SSE4.1 and SSE4.2.
func cpuidBaseline() bool {
	kvm, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(kvm)
	const n = 256
	buf := make([]byte, 8+n*cpuidEntrySize)
	binary.LittleEndian.PutUint32(buf, n)
	if _, err := ioctl(kvm, kvmGetSupportedCPUID, uintptr(unsafe.Pointer(&buf[0]))); err != nil {
		return false
	}
	return baselineCPUID(buf)
}

// cpuidEntrySize is sizeof(struct kvm_cpuid_entry2): function, index, flags, eax, ebx, ecx, edx
// and three padding words, 4 bytes each.
const cpuidEntrySize = 40

// baselineCPUID reads a struct kvm_cpuid2 (nent, padding, then the entries) and reports whether
// leaf 1 has SSE2 (edx) and SSE3, SSSE3, SSE4.1 and SSE4.2 (ecx).
func baselineCPUID(buf []byte) bool {
	if len(buf) < 8 {
		return false
	}
	got := int(binary.LittleEndian.Uint32(buf))
	for i := 0; i < got && 8+(i+1)*cpuidEntrySize <= len(buf); i++ {
		e := buf[8+i*cpuidEntrySize:]
		if binary.LittleEndian.Uint32(e[0:]) != 1 {
			continue
		}
		ecx, edx := binary.LittleEndian.Uint32(e[20:]), binary.LittleEndian.Uint32(e[24:])
		const sse3, ssse3, sse41, sse42, sse2 = 1 << 0, 1 << 9, 1 << 19, 1 << 20, 1 << 26
		return ecx&(sse3|ssse3|sse41|sse42) == sse3|ssse3|sse41|sse42 && edx&sse2 != 0
	}
	return false
}

func ioctl(fd int, req, arg uintptr) (uintptr, error) {
	r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
	if e != 0 {
		return 0, e
	}
	return r, nil
}

func runHLT() bool {
	kvm, err := unix.Open("/dev/kvm", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	defer unix.Close(kvm)
	if v, err := ioctl(kvm, kvmGetAPIVersion, 0); err != nil || v != 12 {
		return false
	}
	vmfd, err := ioctl(kvm, kvmCreateVM, 0)
	if err != nil {
		return false
	}
	defer unix.Close(int(vmfd))
	mem, err := unix.Mmap(-1, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return false
	}
	defer unix.Munmap(mem)
	mem[0] = 0xf4 // hlt
	region := make([]byte, 32)
	binary.LittleEndian.PutUint64(region[8:], 0x1000)                                    // guest_phys_addr
	binary.LittleEndian.PutUint64(region[16:], 4096)                                     // memory_size
	binary.LittleEndian.PutUint64(region[24:], uint64(uintptr(unsafe.Pointer(&mem[0])))) // userspace_addr
	if _, err := ioctl(int(vmfd), kvmSetUserMemoryRegion, uintptr(unsafe.Pointer(&region[0]))); err != nil {
		return false
	}
	vcpu, err := ioctl(int(vmfd), kvmCreateVCPU, 0)
	if err != nil {
		return false
	}
	defer unix.Close(int(vcpu))
	size, err := ioctl(kvm, kvmGetVCPUMmapSize, 0)
	if err != nil {
		return false
	}
	run, err := unix.Mmap(int(vcpu), 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return false
	}
	defer unix.Munmap(run)
	sregs := make([]byte, 312)
	if _, err := ioctl(int(vcpu), kvmGetSregs, uintptr(unsafe.Pointer(&sregs[0]))); err != nil {
		return false
	}
	binary.LittleEndian.PutUint64(sregs[0:], 0)  // cs.base
	binary.LittleEndian.PutUint16(sregs[12:], 0) // cs.selector
	if _, err := ioctl(int(vcpu), kvmSetSregs, uintptr(unsafe.Pointer(&sregs[0]))); err != nil {
		return false
	}
	regs := make([]byte, 144)
	binary.LittleEndian.PutUint64(regs[128:], 0x1000) // rip
	binary.LittleEndian.PutUint64(regs[136:], 0x2)    // rflags
	if _, err := ioctl(int(vcpu), kvmSetRegs, uintptr(unsafe.Pointer(&regs[0]))); err != nil {
		return false
	}
	if _, err := ioctl(int(vcpu), kvmRun, 0); err != nil {
		return false
	}
	return binary.LittleEndian.Uint32(run[8:]) == kvmExitHLT
}
