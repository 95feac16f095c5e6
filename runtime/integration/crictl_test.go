package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/internal/testgate"
)

const busybox = "registry.k8s.io/e2e-test-images/busybox:1.29-2"

func writeJSON(t *testing.T, dir, name string, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func podConfig(t *testing.T, r *Runtime, name string) string {
	return writeJSON(t, r.Dir, name+"-pod.json", map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "default", "uid": name + "-uid"},
		"hostname":      name,
		"log_directory": filepath.Join(r.Dir, "logs", name),
		"linux":         map[string]any{},
	})
}

func ctrConfig(t *testing.T, r *Runtime, name string, args ...string) string {
	return writeJSON(t, r.Dir, name+"-ctr.json", map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": busybox},
		"command":  args,
		"log_path": name + ".log",
		"linux":    map[string]any{},
	})
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCrictlLifecycle drives a busybox pod through an unmodified crictl: pull, images,
// inspecti, runp, create, start, logs, exec, stop, rm, rmp, rmi.
func TestCrictlLifecycle(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := Start(t)
	r.MustCrictl("pull", busybox)
	if out := r.MustCrictl("images"); !strings.Contains(out, "registry.k8s.io/e2e-test-images/busybox") {
		t.Fatalf("crictl images does not list busybox:\n%s", out)
	}
	if out := r.MustCrictl("inspecti", busybox); !strings.Contains(out, "sha256:") {
		t.Fatalf("inspecti:\n%s", out)
	}
	pod := r.MustCrictl("runp", podConfig(t, r, "life"))
	// The built-in pod network (the default conflist: bridge cni0, 10.88.0.0/16) gave it an address.
	if out := r.MustCrictl("inspectp", "-o", "go-template", "--template", "{{.status.network.ip}}", pod); !strings.HasPrefix(out, "10.88.") {
		t.Fatalf("pod IP %q, want one from 10.88.0.0/16", out)
	}
	ctr := r.MustCrictl("create", pod, ctrConfig(t, r, "echo", "/bin/sh", "-c", "echo hello from ingot; echo to stderr >&2; sleep 300"), podConfig(t, r, "life"))
	r.MustCrictl("start", ctr)
	waitFor(t, "the container's log line", 30*time.Second, func() bool {
		out, _ := r.Crictl("logs", ctr) // crictl prints stdout entries on stdout
		return strings.Contains(out, "hello from ingot")
	})
	if out := r.MustCrictl("exec", "-s", ctr, "/bin/sh", "-c", "echo $((6*7)); hostname"); !strings.Contains(out, "42") || !strings.Contains(out, "life") {
		t.Fatalf("exec output %q", out)
	}
	if out := r.MustCrictl("exec", "-s", ctr, "/bin/sh", "-c", "ip -4 addr show eth0; ip route"); !strings.Contains(out, "inet 10.88.") || !strings.Contains(out, "default via 10.88.0.1") {
		t.Fatalf("pod network inside the container:\n%s", out)
	}
	if out := r.MustCrictl("inspect", ctr); !strings.Contains(out, "CONTAINER_RUNNING") {
		t.Fatalf("inspect:\n%s", out)
	}
	// The log file is in the CRI format the kubelet parses.
	data, err := os.ReadFile(filepath.Join(r.Dir, "logs", "life", "echo.log"))
	if err != nil || !strings.Contains(string(data), " stdout F hello from ingot\n") || !strings.Contains(string(data), " stderr F to stderr\n") {
		t.Fatalf("log file: %v\n%s", err, data)
	}
	r.MustCrictl("stop", "-t", "2", ctr)
	out := r.MustCrictl("inspect", ctr)
	if !strings.Contains(out, "CONTAINER_EXITED") {
		t.Fatalf("after stop:\n%s", out)
	}
	r.MustCrictl("rm", ctr)
	if out := r.MustCrictl("ps", "-a", "-q"); strings.Contains(out, ctr) {
		t.Fatalf("container still listed after rm: %s", out)
	}
	r.MustCrictl("stopp", pod)
	r.MustCrictl("rmp", pod)
	if out := r.MustCrictl("pods", "-q"); out != "" {
		t.Fatalf("pods after rmp: %q", out)
	}
	r.MustCrictl("rmi", busybox)
	if out := r.MustCrictl("images", "-q"); strings.TrimSpace(out) != "" {
		t.Fatalf("images after rmi: %q", out)
	}
}

// TestKillDaemonAndRecover kills the daemon with SIGKILL while a container writes a line every
// 100 ms, restarts it, and checks that the container kept running, no line was lost and the new
// daemon knows the pod and the container.
func TestKillDaemonAndRecover(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := Start(t)
	r.MustCrictl("pull", busybox)
	pod := r.MustCrictl("runp", podConfig(t, r, "survivor"))
	ctr := r.MustCrictl("create", pod, ctrConfig(t, r, "counter", "/bin/sh", "-c", "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.1; done"), podConfig(t, r, "survivor"))
	r.MustCrictl("start", ctr)
	waitFor(t, "the first lines", 30*time.Second, func() bool {
		out, _ := r.Crictl("logs", ctr)
		return strings.Contains(out, "line 5\n")
	})
	r.Kill()
	time.Sleep(time.Second) // the container keeps writing while no daemon runs
	r.Restart()
	if out := r.MustCrictl("inspect", ctr); !strings.Contains(out, "CONTAINER_RUNNING") {
		t.Fatalf("container not running after the daemon's restart:\n%s", out)
	}
	if out := r.MustCrictl("pods", "-q"); !strings.Contains(out, pod) {
		t.Fatalf("pod not recovered: %q", out)
	}
	time.Sleep(500 * time.Millisecond)
	r.MustCrictl("stop", "-t", "1", ctr)
	out := r.MustCrictl("logs", ctr)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 15 {
		t.Fatalf("only %d lines logged across the restart:\n%s", len(lines), out)
	}
	for i, l := range lines {
		if want := fmt.Sprintf("line %d", i+1); l != want {
			t.Fatalf("line %d is %q, want %q (a line was lost or reordered)", i+1, l, want)
		}
	}
}

// TestCrictlStatsAndUpdate reads a running container's usage (crictl stats) and changes its
// memory limit in place (crictl update), as the kubelet does for an in-place resize.
func TestCrictlStatsAndUpdate(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := Start(t)
	r.MustCrictl("pull", busybox)
	pod := r.MustCrictl("runp", podConfig(t, r, "stats"))
	ctr := r.MustCrictl("create", pod, ctrConfig(t, r, "sleeper", "sleep", "300"), podConfig(t, r, "stats"))
	r.MustCrictl("start", ctr)
	var stats struct {
		Stats []struct {
			Attributes struct{ ID string }
			Memory     struct{ WorkingSetBytes struct{ Value string } }
		}
	}
	if err := json.Unmarshal([]byte(r.MustCrictl("stats", "-o", "json", "--id", ctr)), &stats); err != nil {
		t.Fatal(err)
	}
	if len(stats.Stats) != 1 || stats.Stats[0].Attributes.ID != ctr || stats.Stats[0].Memory.WorkingSetBytes.Value == "" {
		t.Fatalf("crictl stats: %+v", stats)
	}
	const limit = 48 << 20
	r.MustCrictl("update", "--memory", fmt.Sprint(limit), ctr)
	// cgroup v1 keeps the limit in memory.limit_in_bytes, v2 in memory.max.
	var got string
	for _, p := range []string{"/sys/fs/cgroup/memory", "/sys/fs/cgroup"} {
		dir := filepath.Join(p, r.CgroupRoot, pod, ctr)
		for _, f := range []string{"memory.limit_in_bytes", "memory.max"} {
			if data, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
				got = strings.TrimSpace(string(data))
			}
		}
	}
	if got != fmt.Sprint(limit) {
		t.Fatalf("memory limit after crictl update: %q, want %d", got, limit)
	}
	if out := r.MustCrictl("inspect", ctr); !strings.Contains(out, fmt.Sprint(limit)) {
		t.Errorf("crictl inspect does not report the new limit:\n%s", out)
	}
}
