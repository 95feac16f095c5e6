package pause

import (
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ingot.dev/ingot/internal/testgate"
)

// TestPauseAsPidNamespaceInit starts pause the way a pod runs it: as PID 1 of a fresh pid
// namespace. It must print nothing, stay up (a SIGCHLD with nothing to reap, or a signal it does
// not wait for, changes nothing), reap an orphan that lands on it, and exit 0 on SIGTERM.
func TestPauseAsPidNamespaceInit(t *testing.T) {
	testgate.RequireRoot(t)
	nsenter := testgate.RequireCommand(t, "nsenter")
	bin := writeBinary(t)

	var out bytes.Buffer
	cmd := exec.Command(bin)
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

	// Signals pause does not wait for: an init's default action is to ignore them, and SIGCHLD
	// with no child only sends it back to waiting.
	for _, sig := range []syscall.Signal{syscall.SIGCHLD, syscall.SIGUSR1, syscall.SIGHUP} {
		if err := cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
	}
	waitIdle(t, pid)
	alive("after SIGCHLD, SIGUSR1 and SIGHUP")

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
		t.Fatalf("pause printed:\n%s", out.String())
	}
}

// TestSignalsEndIt: outside a pid namespace too, SIGTERM and SIGINT end pause with status 0, and
// it survives what it ignores.
func TestSignalsEndIt(t *testing.T) {
	bin := writeBinary(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		cmd := exec.Command(bin)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitIdle(t, cmd.Process.Pid)
		cmd.Process.Signal(syscall.SIGCHLD)
		waitIdle(t, cmd.Process.Pid)
		cmd.Process.Signal(sig)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("pause ended with %v on %v, want exit status 0", err, sig)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("pause is still running 10s after %v", sig)
		}
	}
}

// TestBinaryIsAStaticExecutable: both arches' files parse as what the kernel loads: one
// read+execute segment holding the entry point, a non-executable stack, no interpreter.
func TestBinaryIsAStaticExecutable(t *testing.T) {
	for arch, machine := range map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64} {
		b, err := Binary(arch)
		if err != nil {
			t.Fatal(err)
		}
		f, err := elf.NewFile(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", arch, err)
		}
		if f.Machine != machine || f.Type != elf.ET_EXEC || f.Class != elf.ELFCLASS64 {
			t.Fatalf("%s: machine %v type %v class %v", arch, f.Machine, f.Type, f.Class)
		}
		var load, stack int
		for _, p := range f.Progs {
			switch p.Type {
			case elf.PT_LOAD:
				load++
				if p.Flags != elf.PF_R|elf.PF_X || f.Entry < p.Vaddr+textOff || f.Entry >= p.Vaddr+p.Filesz || p.Filesz != uint64(len(b)) || p.Vaddr%p.Align != 0 {
					t.Fatalf("%s: segment %+v does not hold the code at entry %#x", arch, p.ProgHeader, f.Entry)
				}
			case elf.PT_GNU_STACK:
				stack++
				if p.Flags&elf.PF_X != 0 {
					t.Fatalf("%s: executable stack", arch)
				}
			default:
				t.Fatalf("%s: unexpected program header %v", arch, p.Type)
			}
		}
		if load != 1 || stack != 1 {
			t.Fatalf("%s: %d load segments and %d stack headers, want 1 and 1", arch, load, stack)
		}
		if len(b) > 512 {
			t.Fatalf("%s: pause is %d bytes", arch, len(b))
		}
	}
	if _, err := Binary("riscv64"); err == nil || !strings.Contains(err.Error(), "riscv64") {
		t.Fatalf("Binary(riscv64) = %v, want an error naming the arch", err)
	}
}

// TestCodeMatchesSource assembles testdata/pause_<arch>.S with binutils and compares the code
// with the bytes Binary writes, so the bytes are only ever changed through their source.
func TestCodeMatchesSource(t *testing.T) {
	for arch, prefix := range map[string]string{"amd64": "", "arm64": "aarch64-linux-gnu-"} {
		as := testgate.RequireCommand(t, prefix+"as")
		objcopy := testgate.RequireCommand(t, prefix+"objcopy")
		dir := t.TempDir()
		obj, raw := filepath.Join(dir, "pause.o"), filepath.Join(dir, "pause.bin")
		for _, c := range [][]string{{as, "-o", obj, "testdata/pause_" + arch + ".S"}, {objcopy, "-O", "binary", "-j", ".text", obj, raw}} {
			if b, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", strings.Join(c, " "), err, b)
			}
		}
		want, err := os.ReadFile(raw)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(code[arch].text, want) {
			t.Fatalf("%s: the code in elf.go is not what testdata/pause_%s.S assembles to:\n got % x\nwant % x", arch, arch, code[arch].text, want)
		}
	}
}

// writeBinary writes pause for this machine's arch to a temporary file.
func writeBinary(t *testing.T) string {
	t.Helper()
	b, err := Binary(runtime.GOARCH)
	if err != nil {
		t.Skip(err)
	}
	path := filepath.Join(t.TempDir(), "pause")
	if err := os.WriteFile(path, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitIdle waits until pid has taken every signal sent to it (none pending, blocked or not) and
// sleeps in its wait again: a pause that acted on a signal by exiting never gets there.
func waitIdle(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := procStatus(pid)
		if strings.HasPrefix(st["State"], "S") && strings.Trim(st["SigPnd"], "0") == "" && strings.Trim(st["ShdPnd"], "0") == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d did not go back to waiting: state %q, pending %q/%q", pid, st["State"], st["SigPnd"], st["ShdPnd"])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// procStatus is /proc/pid/status as a map, empty when the process is gone.
func procStatus(pid int) map[string]string {
	m := map[string]string{}
	data, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.TrimSpace(v)
		}
	}
	return m
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
func procState(pid int) string { return procStatus(pid)["State"] }
