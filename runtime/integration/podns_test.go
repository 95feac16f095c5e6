package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"ingot.dev/ingot/internal/testgate"
)

// TestCreateContainerAfterPauseDied kills a pod's pause process from outside (by its host pid,
// as the OOM killer or an operator might) and creates a container in the pod. The runtime must
// refuse with FailedPrecondition naming the pod, never join whatever /proc/<old pause pid>/ns
// now is, and report the pod not ready so the kubelet recreates it.
func TestCreateContainerAfterPauseDied(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := Start(t)
	r.MustCrictl("pull", busybox)
	podCfg := podConfig(t, r, "orphaned")
	pod := r.MustCrictl("runp", podCfg)
	var info struct {
		Info struct {
			Pid int `json:"pid"`
		} `json:"info"`
	}
	out := r.MustCrictl("inspectp", "-o", "json", pod)
	if err := json.Unmarshal([]byte(out), &info); err != nil || info.Info.Pid <= 1 {
		t.Fatalf("pause pid from inspectp (%v):\n%s", err, out)
	}
	pause := info.Info.Pid
	if err := syscall.Kill(pause, syscall.SIGKILL); err != nil {
		t.Fatalf("kill pause (pid %d): %v", pause, err)
	}
	// Gone from /proc: the shim has reaped it, and the pid is free for any process to take.
	waitFor(t, fmt.Sprintf("pause (pid %d) to be reaped", pause), 30*time.Second, func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", pause))
		return os.IsNotExist(err)
	})

	out, err := r.Crictl("create", pod, ctrConfig(t, r, "late", "/bin/sh", "-c", "sleep 300"), podCfg)
	if err == nil {
		t.Fatalf("container %s created in a pod whose pause process is gone", out)
	}
	msg := err.Error()
	if !strings.Contains(msg, "code = FailedPrecondition") || !strings.Contains(msg, pod) ||
		!strings.Contains(msg, fmt.Sprintf("its pause process (pid %d) is gone", pause)) {
		t.Fatalf("create failed with\n  %s\nwant FailedPrecondition naming the pod %s and its dead pause process", msg, pod)
	}
	if out := r.MustCrictl("ps", "-a", "-q", "-p", pod); out != "" {
		t.Fatalf("containers left in the pod after the refused create: %q", out)
	}
	if out := r.MustCrictl("inspectp", "-o", "go-template", "--template", "{{.status.state}}", pod); out != "SANDBOX_NOTREADY" {
		t.Fatalf("pod state %q after its pause process died, want SANDBOX_NOTREADY", out)
	}
}
