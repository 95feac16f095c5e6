package qemu

import "testing"

// The probe must answer (either way) within its deadline and never for a foreign architecture.
func TestKVMProbe(t *testing.T) {
	if KVMUsable("riscv64") {
		t.Fatal("KVM claimed usable for a foreign architecture")
	}
	t.Logf("KVM usable for the host architecture: %v", KVMUsable("amd64"))
}
