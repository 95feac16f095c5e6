package integration

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ingot.dev/ingot/internal/testgate"
)

// TestPauseAsPidNamespaceInit starts the node binary as `pause` the way a pod runs it: as PID 1
// of a fresh pid namespace. It must act as pause, not as the node's init: print nothing (no boot),
// stay up, reap an orphan that lands on it, and exit 0 on SIGTERM.
//
// The namespaces are private (mount with private propagation, uts, net, ipc), so a binary that
// wrongly boots mounts, sets the hostname or unmounts only inside them, never on the host.
func TestPauseAsPidNamespaceInit(t *testing.T) {
	testgate.RequireRoot(t)
	nsenter := testgate.RequireCommand(t, "nsenter")
	bin := NodeBinary(t)

	var out bytes.Buffer
	cmd := exec.Command(bin, "pause")
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWNET | syscall.CLONE_NEWIPC,
		// Unshareflags (not Cloneflags) for the mount namespace: Go then makes every mount
		// private, so nothing the child mounts or unmounts propagates to the host.
		Unshareflags: syscall.CLONE_NEWNS,
		Pdeathsig:    syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
	})
	alive := func(when string) {
		t.Helper()
		select {
		case <-exited:
			t.Fatalf("pause exited %s (%v); it printed:\n%s", when, waitErr, out.String())
		default:
		}
	}

	// An orphan: sh runs in pause's pid namespace, starts a background sleep and exits; the sleep
	// is reparented to the namespace's init, pause, which must reap it when it ends.
	sh := exec.Command(nsenter, "--target", strconv.Itoa(pid), "--pid", "--", "/bin/sh", "-c", "sleep 2 </dev/null >/dev/null 2>&1 &")
	if b, err := sh.CombinedOutput(); err != nil {
		alive("before the orphan was started")
		t.Fatalf("start an orphan in pause's pid namespace: %v\n%s", err, b)
	}
	orphans := childrenOf(t, pid)
	if len(orphans) != 1 {
		alive("while looking for the orphan")
		t.Fatalf("pause (pid %d) has children %v, want the one orphaned sleep", pid, orphans)
	}
	orphan := orphans[0]
	deadline := time.Now().Add(15 * time.Second)
	for {
		state := procState(orphan)
		if state == "" {
			break // reaped
		}
		if time.Now().After(deadline) {
			t.Fatalf("the orphan %d is still there 15s after it was started (state %q): pause does not reap it", orphan, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
	alive("after reaping the orphan")

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Fatalf("pause ended with %v on SIGTERM, want exit status 0; it printed:\n%s", waitErr, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("pause is still running 10s after SIGTERM; it printed:\n%s", out.String())
	}
	if out.Len() != 0 {
		t.Fatalf("pause printed (the node's init boot?):\n%s", out.String())
	}
}

// childrenOf lists the processes whose parent is pid (host pids), from /proc/*/status: a child
// may hang off any thread of pid, and PPid names the thread group.
func childrenOf(t *testing.T, pid int) []int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var kids []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", n))
		if err != nil {
			continue // gone meanwhile
		}
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "PPid:"); ok && strings.TrimSpace(v) == strconv.Itoa(pid) {
				kids = append(kids, n)
			}
		}
	}
	return kids
}

// procState is the State line of /proc/pid/status ("S (sleeping)", "Z (zombie)"), empty when the
// process is gone.
func procState(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "State:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
