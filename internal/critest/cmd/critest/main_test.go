package main

import (
	"os/exec"
	"strings"
	"testing"

	"ingot.dev/ingot/internal/testgate"
)

// TestMakeTargetsAreStrict: `make critest` passes -strict, so a failing spec fails the target,
// and `make critest-vm` runs the whole VM suite, whose failing specs fail the test.
func TestMakeTargetsAreStrict(t *testing.T) {
	testgate.RequireCommand(t, "make")
	for target, want := range map[string]string{
		"critest":    "go run ./internal/critest/cmd/critest -strict ",
		"critest-vm": "INGOT_CRITEST_VM=full INGOT_CRITEST_FOCUS='' go test ",
	} {
		// -n prints the recipes (the node binaries' too, when out of date) without running them.
		out, err := exec.Command("make", "-n", "-C", "../../../..", target).CombinedOutput()
		if err != nil {
			t.Fatalf("make -n %s: %v\n%s", target, err, out)
		}
		if !strings.Contains(string(out), want) {
			t.Errorf("make %s runs\n%s\nwant a line with %q", target, out, want)
		}
	}
}
