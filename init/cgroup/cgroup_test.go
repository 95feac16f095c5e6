package cgroup

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A plain directory stands in for cgroupfs: writes to subtree_control replace the file, so the
// test checks that every controller is requested and the groups are created.
func TestSetup(t *testing.T) {
	root := t.TempDir()
	os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpu memory pids\n"), 0o644)
	os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), nil, 0o644)
	// The pod group exists with its own controllers file, as the kernel would create it.
	os.MkdirAll(filepath.Join(root, Pods), 0o755)
	os.WriteFile(filepath.Join(root, Pods, "cgroup.controllers"), []byte("cpu memory pids\n"), 0o644)
	os.WriteFile(filepath.Join(root, Pods, "cgroup.subtree_control"), nil, 0o644)
	enabled, err := Setup(root)
	if err != nil {
		t.Fatal(err)
	}
	// A plain file keeps only the last write: "+pids".
	if strings.Join(enabled, " ") != "+pids" {
		t.Fatalf("enabled = %v", enabled)
	}
	if _, err := os.Stat(filepath.Join(root, Services)); err != nil {
		t.Fatal(err)
	}
}

func TestControllersMissing(t *testing.T) {
	if _, err := Controllers(t.TempDir()); err == nil || !strings.Contains(err.Error(), "read controllers of") {
		t.Fatalf("err = %v", err)
	}
}
