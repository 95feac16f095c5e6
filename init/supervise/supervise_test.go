package supervise

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ingot.dev/ingot/internal/testgate"
)

// The tests share one process and wait4(-1) collects any child, so none of them runs in parallel
// and none uses os/exec: each test owns the only reaper while it runs.

// deadline is generous on purpose: tests wait on conditions, and only a broken supervisor should
// ever reach it.
const deadline = 30 * time.Second

func TestMain(m *testing.M) {
	// Make the test binary behave like PID 1: orphans of the services are reparented here, so
	// the orphan test can check that the reaper collects them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "set child subreaper: %v\n", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// syncBuffer is a bytes.Buffer the supervisor writes while the test reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type harness struct {
	sup     *Supervisor
	console *syncBuffer
	logs    *syncBuffer
}

// newHarness returns a supervisor whose Run loop is running; cleanup stops it and checks that
// every service exited.
func newHarness(t *testing.T, opts ...Option) *harness {
	t.Helper()
	h := &harness{console: &syncBuffer{}, logs: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h.sup = New(log, h.console, opts...)
	// Not t.Context(): it is cancelled before cleanups run, and Stop needs the reaper.
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- h.sup.Run(ctx) }()
	t.Cleanup(func() {
		if err := h.sup.Stop(context.Background(), deadline); err != nil {
			t.Errorf("Stop: %v", err)
		}
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("console:\n%s\nlog:\n%s", h.console, h.logs)
		}
	})
	return h
}

func shSpec(name, script string, p Policy, env ...string) Spec {
	return Spec{
		Name:    name,
		Path:    "/bin/sh",
		Args:    []string{"-c", script},
		Env:     append([]string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"}, env...),
		Restart: p,
	}
}

func (h *harness) start(t *testing.T, spec Spec) *Service {
	t.Helper()
	svc, err := h.sup.Start(t.Context(), spec)
	if err != nil {
		t.Fatalf("Start(%s): %v", spec.Name, err)
	}
	return svc
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(deadline)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", deadline, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func waitDoneT(t *testing.T, svc *Service) Status {
	t.Helper()
	select {
	case <-svc.Done():
	case <-time.After(deadline):
		t.Fatalf("service %s did not finish: %+v", svc.Name(), svc.Status())
	}
	return svc.Status()
}

func TestOutputPrefixAndTail(t *testing.T) {
	h := newHarness(t, WithOutputSize(32))
	spec := shSpec("out", `for i in 1 2 3 4 5 6 7 8 9; do echo line$i; done; echo err >&2; printf partial`, Never)
	spec.Echo = true
	svc := h.start(t, spec)

	st := waitDoneT(t, svc)
	if st.State != Exited || st.LastExit == nil || st.LastExit.Failed() {
		t.Errorf("status = %+v, want exited with status 0", st)
	}
	// The reader may still be draining the pipe after the exit was reaped.
	waitFor(t, "the partial last line on the console", func() bool {
		return strings.Contains(h.console.String(), "out: partial\n")
	})
	con := h.console.String()
	for i := 1; i <= 9; i++ {
		if line := fmt.Sprintf("out: line%d\n", i); !strings.Contains(con, line) {
			t.Errorf("console lacks %q", line)
		}
	}
	if !strings.Contains(con, "out: err\n") {
		t.Errorf("console lacks stderr line %q", "out: err")
	}
	var all strings.Builder
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&all, "line%d\n", i)
	}
	all.WriteString("err\npartial")
	want := all.String()[all.Len()-32:]
	if got := string(svc.Output()); got != want {
		t.Errorf("Output() = %q, want the last 32 bytes %q", got, want)
	}
}

func TestRestartWithBackoff(t *testing.T) {
	h := newHarness(t)
	begin := time.Now()
	svc := h.start(t, shSpec("crashy", `echo run; exit 3`, OnFailure))

	waitFor(t, "3 restarts", func() bool { return svc.Status().Restarts >= 3 })
	// Three backoffs of 100, 200 and 400ms must have passed: a lower bound cannot flake.
	if took := time.Since(begin); took < 700*time.Millisecond {
		t.Errorf("3 restarts took %v, want at least 700ms of backoff", took)
	}
	st := svc.Status()
	if st.LastExit == nil || st.LastExit.Code != 3 {
		t.Errorf("LastExit = %v, want exit status 3", st.LastExit)
	}
	waitFor(t, "4 runs in the output", func() bool { return strings.Count(string(svc.Output()), "run\n") >= 4 })
}

func TestPolicies(t *testing.T) {
	for _, tc := range []struct {
		name        string
		policy      Policy
		script      string
		wantRestart bool
	}{
		{"always-success", Always, "exit 0", true},
		{"always-do-not-restart", Always, "exit 125", false},
		{"on-failure-success", OnFailure, "exit 0", false},
		{"on-failure-failure", OnFailure, "exit 1", true},
		{"on-failure-signal", OnFailure, "kill -TERM $$", true},
		{"on-failure-do-not-restart", OnFailure, "exit 125", false},
		{"never-failure", Never, "exit 1", false},
		{"never-success", Never, "exit 0", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			svc := h.start(t, shSpec(tc.name, tc.script, tc.policy))
			if tc.wantRestart {
				waitFor(t, "a restart", func() bool { return svc.Status().Restarts >= 1 })
				return
			}
			st := waitDoneT(t, svc)
			if st.State != Exited || st.Restarts != 0 || st.LastExit == nil {
				t.Errorf("status = %+v, want exited without restarts", st)
			}
		})
	}
}

func TestMissingBinary(t *testing.T) {
	h := newHarness(t)
	once := h.start(t, Spec{Name: "missing", Path: "/nonexistent/ingot-no-such-binary", Restart: Never})
	again := h.start(t, Spec{Name: "missing-retried", Path: "/nonexistent/ingot-no-such-binary", Restart: OnFailure})

	st := waitDoneT(t, once)
	if st.State != Exited || st.LastExit == nil || !errors.Is(st.LastExit.Err, fs.ErrNotExist) {
		t.Errorf("status = %+v (exit %v), want exited with a not-exist start error", st, st.LastExit)
	}
	waitFor(t, "retries of the missing binary", func() bool { return again.Status().Restarts >= 2 })
	if !strings.Contains(h.logs.String(), "ingot-no-such-binary") {
		t.Errorf("log does not name the missing binary")
	}
}

func TestOrphanReaped(t *testing.T) {
	h := newHarness(t)
	// The subshell exits right after forking sleep, so sleep is orphaned immediately and
	// reparented to this process (a subreaper, like PID 1).
	svc := h.start(t, shSpec("parent", `(sleep 0.2 & echo $!); exit 0`, Never))
	waitDoneT(t, svc)

	var pid int
	waitFor(t, "the orphan's pid in the output", func() bool {
		pid, _ = strconv.Atoi(strings.TrimSpace(string(svc.Output())))
		return pid > 0
	})
	waitFor(t, fmt.Sprintf("the reaper to log orphan %d", pid), func() bool {
		return strings.Contains(h.logs.String(), fmt.Sprintf("msg=\"reaped orphan\" pid=%d ", pid))
	})
	waitFor(t, "no zombie children", func() bool { return len(zombieChildren(t)) == 0 })
}

// zombieChildren lists the pids of zombies whose parent is this process.
func zombieChildren(t *testing.T) []int {
	t.Helper()
	stats, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		t.Fatal(err)
	}
	var zombies []int
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // exited meanwhile
		}
		// The command name may contain spaces and parentheses; the fields after the last ')'
		// are "state ppid ...".
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) >= 2 && f[0] == "Z" && f[1] == strconv.Itoa(os.Getpid()) {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			zombies = append(zombies, pid)
		}
	}
	return zombies
}

func TestStopTerminatesProcessGroup(t *testing.T) {
	h := newHarness(t)
	dir := t.TempDir()
	mark, pidfile := filepath.Join(dir, "mark"), filepath.Join(dir, "pid")
	// The service's child traps TERM; it only gets one if Stop signals the whole group, because
	// the parent shell dies of its own TERM without passing anything on.
	script := `sh -c 'trap "echo term > $MARK; exit 0" TERM; echo $$ > $PIDFILE.tmp; mv $PIDFILE.tmp $PIDFILE; while :; do sleep 0.05; done' & wait`
	svc := h.start(t, shSpec("group", script, Always, "MARK="+mark, "PIDFILE="+pidfile))

	var child int
	waitFor(t, "the child to write its pid", func() bool {
		b, err := os.ReadFile(pidfile)
		child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && child > 0
	})
	t.Cleanup(func() {
		// If Stop failed to end it, do not leave it running: it is ours only while it is still
		// our child (orphans come back to this subreaper), so its pid cannot have been reused.
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child)); err == nil {
			f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
			if len(f) >= 2 && f[1] == strconv.Itoa(os.Getpid()) {
				unix.Kill(child, unix.SIGKILL)
			}
		}
	})
	if err := h.sup.Stop(t.Context(), deadline); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	st := svc.Status()
	if st.State != Stopped || st.PID != 0 || st.LastExit == nil || st.LastExit.Signal != syscall.SIGTERM {
		t.Errorf("status = %+v (exit %v), want stopped by SIGTERM", st, st.LastExit)
	}
	waitFor(t, "the child's TERM trap to run", func() bool {
		b, _ := os.ReadFile(mark)
		return string(b) == "term\n"
	})
	waitFor(t, "the child to be reaped", func() bool {
		_, err := os.Stat(fmt.Sprintf("/proc/%d", child))
		return errors.Is(err, fs.ErrNotExist)
	})
	if _, err := h.sup.Start(t.Context(), shSpec("late", "exit 0", Never)); !errors.Is(err, ErrStopped) {
		t.Errorf("Start after Stop: err = %v, want ErrStopped", err)
	}
}

func TestStopKillsAfterGrace(t *testing.T) {
	h := newHarness(t)
	// An ignored signal stays ignored across exec, so sleep ignores TERM too.
	spec := shSpec("stubborn", `trap "" TERM; echo ready; exec sleep 1000`, Always)
	spec.Echo = true
	svc := h.start(t, spec)
	waitFor(t, "the service to be ready", func() bool { return strings.Contains(h.console.String(), "stubborn: ready\n") })

	const grace = 300 * time.Millisecond
	begin := time.Now()
	if err := h.sup.Stop(t.Context(), grace); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if took := time.Since(begin); took < grace {
		t.Errorf("Stop returned after %v, before the %v grace period", took, grace)
	}
	st := svc.Status()
	if st.State != Stopped || st.LastExit == nil || st.LastExit.Signal != syscall.SIGKILL {
		t.Errorf("status = %+v (exit %v), want stopped by SIGKILL", st, st.LastExit)
	}
}

func TestStopWithoutRunReportsServices(t *testing.T) {
	logs := &syncBuffer{}
	sup := New(slog.New(slog.NewTextHandler(logs, nil)), nil)
	sup.killWait = 100 * time.Millisecond
	svc, err := sup.Start(t.Context(), shSpec("unreaped", `trap "" TERM; exec sleep 1000`, Always))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the process to start", func() bool { return svc.Status().PID != 0 })

	err = sup.Stop(t.Context(), 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "unreaped") {
		t.Errorf("Stop without Run: err = %v, want one naming the service", err)
	}
	// Once a reaper runs, the killed process's exit is delivered after all.
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- sup.Run(ctx) }()
	st := waitDoneT(t, svc)
	cancel()
	if err := <-runErr; err != nil {
		t.Errorf("Run: %v", err)
	}
	if st.State != Stopped || st.LastExit == nil || st.LastExit.Signal != syscall.SIGKILL {
		t.Errorf("status = %+v (exit %v), want stopped by SIGKILL", st, st.LastExit)
	}
}

func TestStartValidates(t *testing.T) {
	h := newHarness(t)
	h.start(t, shSpec("taken", "exit 0", Never))
	for _, tc := range []struct {
		name string
		spec Spec
		want error
	}{
		{"empty name", Spec{Path: "/bin/sh"}, ErrInvalid},
		{"relative path", Spec{Name: "rel", Path: "bin/sh"}, ErrInvalid},
		{"empty path", Spec{Name: "nopath"}, ErrInvalid},
		{"bad policy", Spec{Name: "pol", Path: "/bin/sh", Restart: Policy(7)}, ErrInvalid},
		{"relative cgroup", Spec{Name: "cg", Path: "/bin/sh", CgroupDir: "sys/fs/cgroup/x"}, ErrInvalid},
		{"duplicate", shSpec("taken", "exit 0", Never), ErrExists},
	} {
		if _, err := h.sup.Start(t.Context(), tc.spec); !errors.Is(err, tc.want) {
			t.Errorf("%s: Start err = %v, want %v", tc.name, err, tc.want)
		}
	}
	if got := len(h.sup.Services()); got != 1 {
		t.Errorf("Services() has %d entries, want 1", got)
	}
}

func TestRunTwiceFails(t *testing.T) {
	h := newHarness(t)
	// newHarness's Run may not have marked itself running yet.
	waitFor(t, "the first Run to start", func() bool {
		h.sup.mu.Lock()
		defer h.sup.mu.Unlock()
		return h.sup.reaping
	})
	if err := h.sup.Run(t.Context()); !errors.Is(err, ErrExists) {
		t.Errorf("second Run: err = %v, want ErrExists", err)
	}
}

func TestConsoleIsControllingTTY(t *testing.T) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		testgate.Skip(t, "no pseudo-terminals to stand in for a console: "+err.Error())
	}
	defer master.Close()
	if err := unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("get pty number: %v", err)
	}
	// Keep a slave open so the master does not see EIO between the service's exit and our read.
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		testgate.Skip(t, "cannot open a pty slave: "+err.Error())
	}
	defer slave.Close()

	h := newHarness(t)
	// Fields 6 and 7 of /proc/PID/stat are the session id and the controlling tty.
	spec := shSpec("tty", `read -r pid comm state ppid pgrp sid tty rest < /proc/$$/stat; [ -t 0 ] && [ -t 2 ] && echo "self=$pid sid=$sid tty=$tty done"`, Never)
	spec.Console = slave.Name()
	svc := h.start(t, spec)
	st := waitDoneT(t, svc)
	if st.LastExit == nil || st.LastExit.Failed() {
		t.Fatalf("status = %+v (exit %v), want exit status 0", st, st.LastExit)
	}

	var got []byte
	buf := make([]byte, 1024)
	master.SetReadDeadline(time.Now().Add(deadline))
	for !bytes.Contains(got, []byte("done")) {
		n, err := master.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("read console: %v (got %q)", err, got)
		}
	}
	var self, sid, tty int
	if _, err := fmt.Sscanf(string(got), "self=%d sid=%d tty=%d", &self, &sid, &tty); err != nil {
		t.Fatalf("parse %q: %v", got, err)
	}
	if self != sid || tty == 0 {
		t.Errorf("service saw self=%d sid=%d tty=%d, want its own session with a controlling tty", self, sid, tty)
	}
	if strings.Contains(h.console.String(), "tty:") {
		t.Errorf("console service output reached the supervisor console: %q", h.console.String())
	}
}

func TestCgroup(t *testing.T) {
	testgate.RequireRoot(t)
	mnt := cgroup2Mount(t)
	if mnt == "" {
		testgate.Skip(t, "no cgroup v2 hierarchy is mounted on this host")
	}
	parent := filepath.Join(mnt, fmt.Sprintf("ingot-supervise-test-%d", os.Getpid()))
	if err := os.Mkdir(parent, 0o755); err != nil {
		testgate.Skip(t, "cannot create a cgroup here: "+err.Error())
	}
	dir := filepath.Join(parent, "svc")
	t.Cleanup(func() {
		// rmdir succeeds only once the cgroup is empty; the service has been reaped by now.
		for _, d := range []string{dir, parent} {
			if err := unix.Rmdir(d); err != nil && err != unix.ENOENT {
				t.Errorf("remove cgroup %s: %v", d, err)
			}
		}
	})

	h := newHarness(t)
	spec := shSpec("cg", `cat /proc/$$/cgroup`, Never)
	spec.CgroupDir = dir
	svc := h.start(t, spec)
	st := waitDoneT(t, svc)
	if st.LastExit == nil || st.LastExit.Failed() {
		t.Fatalf("status = %+v (exit %v), want exit status 0", st, st.LastExit)
	}
	want := "/" + filepath.Base(parent) + "/svc\n"
	waitFor(t, "the cgroup line", func() bool {
		for _, l := range strings.SplitAfter(string(svc.Output()), "\n") {
			if strings.HasPrefix(l, "0::") && strings.HasSuffix(l, want) {
				return true
			}
		}
		return false
	})
}

// cgroup2Mount returns where a cgroup v2 hierarchy is mounted, or "".
func cgroup2Mount(t *testing.T) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		// "... mountpoint options [optional fields] - fstype source superoptions"
		pre, post, ok := strings.Cut(l, " - ")
		if f := strings.Fields(pre); ok && len(f) >= 5 && strings.HasPrefix(post, "cgroup2 ") {
			return f[4]
		}
	}
	return ""
}

// Without Echo a service's output stays off the console (a console shell is not interleaved with
// a daemon's log) but is kept in its log file, which rotates at MaxLogSize and reads back whole.
func TestOutputLogFileWithoutEcho(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, WithLogDir(dir))
	// Each line is 1 KiB; 1100 lines pass MaxLogSize once.
	quiet := h.start(t, shSpec("quiet", `i=0; while [ $i -lt 1100 ]; do printf "%04d%01019d\n" $i 0; i=$((i+1)); done; echo done`, Never))
	waitDoneT(t, quiet)
	waitFor(t, "the last line in the log file", func() bool {
		data, _ := ReadLog(dir, "quiet")
		return bytes.HasSuffix(data, []byte("done\n"))
	})
	if strings.Contains(h.console.String(), "quiet:") {
		t.Errorf("a service without Echo reached the console: %.120q", h.console.String())
	}
	st, err := os.Stat(filepath.Join(dir, "quiet.log.1"))
	if err != nil {
		t.Fatalf("no rotated log: %v", err)
	}
	if st.Size() > MaxLogSize || st.Mode().Perm() != 0o600 {
		t.Errorf("rotated log: size %d mode %v, want <= %d bytes and 0600", st.Size(), st.Mode().Perm(), MaxLogSize)
	}
	data, err := ReadLog(dir, "quiet")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 1101 || !strings.HasPrefix(lines[0], "0000") || !strings.HasPrefix(lines[1099], "1099") {
		t.Errorf("ReadLog gave %d lines (first %.8q), want all 1101 in order", len(lines), lines[0])
	}
	if _, err := ReadLog(dir, "../quiet"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ReadLog(../quiet): err = %v, want ErrInvalid", err)
	}
	if _, err := ReadLog(dir, "nobody"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("ReadLog(nobody): err = %v, want fs.ErrNotExist", err)
	}
}

// A service with Spec.LogFile also writes its output there (a persistent log, e.g. on /var),
// rotated the same way, besides the log directory's copy.
func TestOutputExtraLogFile(t *testing.T) {
	dir, varLog := t.TempDir(), t.TempDir()
	h := newHarness(t, WithLogDir(dir))
	spec := shSpec("kube", `i=0; while [ $i -lt 1100 ]; do printf "%04d%01019d\n" $i 0; i=$((i+1)); done; echo done`, Never)
	spec.LogFile = filepath.Join(varLog, "log", "kube.log")
	waitDoneT(t, h.start(t, spec))
	waitFor(t, "the last line in both logs", func() bool {
		a, _ := ReadLog(dir, "kube")
		b, _ := ReadLog(filepath.Join(varLog, "log"), "kube")
		return bytes.HasSuffix(a, []byte("done\n")) && bytes.HasSuffix(b, []byte("done\n"))
	})
	data, err := ReadLog(filepath.Join(varLog, "log"), "kube")
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n"); len(lines) != 1101 {
		t.Errorf("the extra log holds %d lines, want 1101", len(lines))
	}
	if st, err := os.Stat(spec.LogFile + ".1"); err != nil || st.Size() > MaxLogSize {
		t.Errorf("the extra log was not rotated at %d bytes: %v", MaxLogSize, err)
	}
}
