package qemu

import (
	"encoding/binary"
	"runtime"
	"testing"
	"time"
)

// cpuid2 builds a struct kvm_cpuid2 with one entry per leaf, ecx and edx as given.
func cpuid2(leaves map[uint32][2]uint32) []byte {
	buf := make([]byte, 8, 8+len(leaves)*cpuidEntrySize)
	binary.LittleEndian.PutUint32(buf, uint32(len(leaves)))
	for leaf, regs := range leaves {
		e := make([]byte, cpuidEntrySize)
		binary.LittleEndian.PutUint32(e[0:], leaf)
		binary.LittleEndian.PutUint32(e[20:], regs[0])
		binary.LittleEndian.PutUint32(e[24:], regs[1])
		buf = append(buf, e...)
	}
	return buf
}

func TestBaselineCPUID(t *testing.T) {
	const (
		sse3, ssse3, sse41, sse42 = 1 << 0, 1 << 9, 1 << 19, 1 << 20
		sse2                      = 1 << 26
		full                      = sse3 | ssse3 | sse41 | sse42
	)
	for _, c := range []struct {
		name   string
		leaves map[uint32][2]uint32
		want   bool
	}{
		{"every baseline feature", map[uint32][2]uint32{0: {0, 0}, 1: {full, sse2}, 7: {0, 0}}, true},
		// What the build machines' KVM reports: a Linux guest hangs in early boot on it.
		{"no SSE3", map[uint32][2]uint32{1: {full &^ sse3, sse2}}, false},
		{"no SSE4.2", map[uint32][2]uint32{1: {full &^ sse42, sse2}}, false},
		{"no SSE2", map[uint32][2]uint32{1: {full, 0}}, false},
		{"features on another leaf", map[uint32][2]uint32{7: {full, sse2}}, false},
		{"no entries", nil, false},
	} {
		if got := baselineCPUID(cpuid2(c.leaves)); got != c.want {
			t.Errorf("%s: baselineCPUID = %v, want %v", c.name, got, c.want)
		}
	}
	// An entry count larger than the buffer is not read past its end.
	short := cpuid2(map[uint32][2]uint32{0: {0, 0}})
	binary.LittleEndian.PutUint32(short, 200)
	if baselineCPUID(short) || baselineCPUID(short[:4]) {
		t.Error("a truncated table taken for a baseline CPU")
	}
}

func TestKVMUsableOverridesAndArch(t *testing.T) {
	t.Setenv("INGOT_ACCEL", "kvm")
	if !KVMUsable(runtime.GOARCH) {
		t.Error("INGOT_ACCEL=kvm not honoured")
	}
	t.Setenv("INGOT_ACCEL", "tcg")
	if KVMUsable(runtime.GOARCH) {
		t.Error("INGOT_ACCEL=tcg not honoured")
	}
	t.Setenv("INGOT_ACCEL", "")
	if KVMUsable("riscv64") {
		t.Fatal("KVM claimed usable for a foreign architecture")
	}
	// The probe answers within its deadline (2 s for the HLT), whatever this host's KVM does.
	start := time.Now()
	usable := KVMUsable(runtime.GOARCH)
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the KVM probe took %v", took)
	}
	t.Logf("KVM usable for the host architecture: %v", usable)
}
