package oci

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"ingot.dev/ingot/image/debpkg"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
)

func TestMain(m *testing.M) {
	MaybeInit() // libcontainer re-executes this test binary as the container's init
	os.Exit(m.Run())
}

// busyboxRootfs lays out a rootfs with Debian's static busybox for the host arch.
func busyboxRootfs(t *testing.T) string {
	t.Helper()
	f := &debpkg.Fetcher{Cache: cachedir.Default(), Arch: "amd64"}
	p, err := f.Fetch(context.Background(), "busybox-static")
	if err != nil {
		testgate.Skip(t, "cannot fetch busybox-static: "+err.Error())
	}
	root, err := f.Unpack(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(t.TempDir(), "rootfs")
	for _, d := range []string{"bin", "proc", "dev", "sys", "tmp", "etc"} {
		os.MkdirAll(filepath.Join(rootfs, d), 0o755)
	}
	data, err := os.ReadFile(filepath.Join(root, "bin/busybox"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(rootfs, "bin/busybox"), data, 0o755)
	for _, a := range []string{"sh", "echo", "cat", "hostname", "id", "dd", "sleep"} {
		os.Symlink("busybox", filepath.Join(rootfs, "bin", a))
	}
	return rootfs
}

// TestRunBusybox runs a real container through libcontainer from this (cgo) test binary.
func TestRunBusybox(t *testing.T) {
	testgate.RequireRoot(t)
	testgate.Short(t, "a real container")
	rootfs := busyboxRootfs(t)
	spec := Default(rootfs, []string{"/bin/sh", "-c", "echo hello from $(hostname); id -u"})
	spec.Hostname = "ctr-test"
	spec.Linux.CgroupsPath = "/ingot-oci-test/" + filepath.Base(t.TempDir())
	t.Cleanup(func() {
		if err := RemoveCgroup("/ingot-oci-test"); err != nil {
			t.Error(err)
		}
	})
	c, err := Create(t.TempDir(), "test", spec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Destroy()
	p, err := Process(spec.Process, true)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	p.Stdout, p.Stderr = &out, &out
	if err := c.Run(p); err != nil {
		t.Fatalf("run: %v", err)
	}
	st, err := p.Wait()
	if err != nil || !st.Success() {
		t.Fatalf("wait: %v %v: %s", st, err, out.String())
	}
	if got := out.String(); !strings.Contains(got, "hello from ctr-test") || !strings.Contains(got, "\n0\n") {
		t.Fatalf("output %q", got)
	}
}

// TestStatsAndOOM runs a container over its memory limit: Stats reads its cgroup while it runs
// and OOMKilled tells its SIGKILL apart from any other.
func TestStatsAndOOM(t *testing.T) {
	testgate.RequireRoot(t)
	testgate.Short(t, "a real container")
	rootfs := busyboxRootfs(t)
	// dd's 32 MiB buffer cannot fit under a 16 MiB limit (swap included).
	spec := Default(rootfs, []string{"/bin/sh", "-c", "sleep 1; dd if=/dev/zero of=/dev/null bs=32M count=4"})
	limit := int64(16 << 20)
	spec.Linux.Resources.Memory = &specs.LinuxMemory{Limit: &limit, Swap: &limit}
	spec.Linux.CgroupsPath = "/ingot-oci-test/" + filepath.Base(t.TempDir())
	t.Cleanup(func() {
		if err := RemoveCgroup("/ingot-oci-test"); err != nil {
			t.Error(err)
		}
	})
	c, err := Create(t.TempDir(), "oom", spec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Destroy()
	p, err := Process(spec.Process, true)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	p.Stdout, p.Stderr = &out, &out
	if err := c.Run(p); err != nil {
		t.Fatalf("run: %v", err)
	}
	u, err := Stats(c)
	if err != nil {
		t.Fatalf("stats of a running container: %v", err)
	}
	if u.MemoryUsage == 0 || u.MemoryLimit != uint64(limit) {
		t.Errorf("usage %+v: want some memory used and the 16 MiB limit", u)
	}
	if OOMKilled(c) {
		t.Error("OOMKilled before the container went over its limit")
	}
	st, _ := p.Wait()
	ws, _ := st.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL || !OOMKilled(c) {
		t.Fatalf("exit %v, OOMKilled %v: want SIGKILL by the OOM killer\n%s", st, OOMKilled(c), out.String())
	}
}
