// Package testgate decides whether a test tier can run here. On a laptop a tier that cannot run
// skips with one sentence; in CI (CI=true) the same condition fails the test, so a green CI means
// every tier really ran.
package testgate

import (
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true), where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") == "true" }

// Skip skips the test with reason, or fails it under CI.
func Skip(t testing.TB, reason string) {
	t.Helper()
	if InCI() {
		t.Fatalf("cannot run under CI=true: %s", reason)
	}
	t.Skip(reason)
}

// RequireRoot skips (or fails in CI) unless the test runs as root.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "this test needs root (run make test as root)")
	}
}

// RequireCommand skips (or fails in CI) unless name is on PATH, and returns its path.
func RequireCommand(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Skip(t, name+" is not installed (run make deps)")
	}
	return p
}

// Short skips (never fails) heavy tiers under go test -short.
func Short(t testing.TB, what string) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: skipping " + what)
	}
}
