package cgroup

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeTree is a directory standing in for cgroupfs: like the kernel, it takes each write to
// cgroup.subtree_control as one request and adds the controller to what the file lists, and it
// refuses the controllers in refuse.
type fakeTree struct {
	refuse map[string]bool
	writes []string // "dir: +ctrl", in order
}

func (f *fakeTree) write(t *testing.T) func(path, data string) error {
	return func(path, data string) error {
		if filepath.Base(path) != "cgroup.subtree_control" {
			t.Fatalf("wrote %q to %s, not a subtree_control file", data, path)
		}
		if strings.Count(data, "+") != 1 {
			t.Fatalf("wrote %q to %s: one controller per write, so one refusal does not block the rest", data, path)
		}
		f.writes = append(f.writes, filepath.Base(filepath.Dir(path))+": "+data)
		if f.refuse[strings.TrimPrefix(data, "+")] {
			return errors.New("no such file or directory")
		}
		cur, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		list := append(strings.Fields(string(cur)), strings.TrimPrefix(data, "+"))
		return os.WriteFile(path, []byte(strings.Join(list, " ")+"\n"), 0o644)
	}
}

func newGroup(t *testing.T, dir, controllers string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "cgroup.controllers"), []byte(controllers+"\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), nil, 0o644)
}

func TestSetupEnablesEveryController(t *testing.T) {
	root := t.TempDir()
	newGroup(t, root, "cpuset cpu io memory pids")
	// The pod group exists with its own controllers file, as the kernel would create it.
	newGroup(t, filepath.Join(root, Pods), "cpuset cpu io memory pids")
	f := &fakeTree{}
	enabled, err := setup(root, f.write(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(enabled, " "); got != "cpuset cpu io memory pids" {
		t.Fatalf("root enables %q, want every controller it has", got)
	}
	pods, _ := os.ReadFile(filepath.Join(root, Pods, "cgroup.subtree_control"))
	if got := strings.TrimSpace(string(pods)); got != "cpuset cpu io memory pids" {
		t.Fatalf("the pod group enables %q for the runtime's groups, want every controller", got)
	}
	if len(f.writes) != 10 {
		t.Fatalf("writes %v, want one per controller in the root and in the pod group", f.writes)
	}
	for _, g := range []string{Services, Pods} {
		if fi, err := os.Stat(filepath.Join(root, g)); err != nil || !fi.IsDir() {
			t.Fatalf("group %s not created: %v", g, err)
		}
	}
}

// A controller the kernel refuses is named, and the others are still enabled.
func TestEnableReportsRefusalsAndGoesOn(t *testing.T) {
	root := t.TempDir()
	newGroup(t, root, "cpu io memory pids")
	f := &fakeTree{refuse: map[string]bool{"io": true}}
	enabled, err := enable(root, f.write(t))
	if err == nil || !strings.Contains(err.Error(), "io: no such file") || !strings.Contains(err.Error(), root) {
		t.Fatalf("err = %v, want the refused controller and the group named", err)
	}
	if !slices.Equal(enabled, []string{"cpu", "memory", "pids"}) {
		t.Fatalf("enabled %v after io was refused, want cpu memory pids", enabled)
	}
}

func TestControllersMissing(t *testing.T) {
	if _, err := Controllers(t.TempDir()); err == nil || !strings.Contains(err.Error(), "read controllers of") {
		t.Fatalf("err = %v", err)
	}
}
