package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ingot.dev/ingot/internal/testgate"
)

// crictlCmd is a crictl command against r, for tests that drive its stdin or give it a terminal.
func (r *Runtime) crictlCmd(ctx context.Context, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, r.crictl, append([]string{"--config", filepath.Join(r.Dir, "crictl.yaml")}, args...)...)
}

// openPTY opens a new pseudo-terminal of rows×cols: the master, and the slave for a child.
func openPTY(t *testing.T, rows, cols uint16) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open /dev/ptmx: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty slave: %v", err)
	}
	if err := unix.IoctlSetWinsize(int(s.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols}); err != nil {
		t.Fatalf("pty size: %v", err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// onTerminal runs cmd with a new terminal as its controlling terminal and stdio, writes input to
// it, and returns everything cmd wrote to the terminal once it exits.
func onTerminal(t *testing.T, cmd *exec.Cmd, rows, cols uint16, input string) (string, error) {
	t.Helper()
	master, slave := openPTY(t, rows, cols)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var (
		out bytes.Buffer
		wg  sync.WaitGroup
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(&out, master) // ends with EIO once crictl and its children have closed the slave
	}()
	if input != "" {
		time.Sleep(time.Second) // crictl puts the terminal in raw mode first; typed-ahead input would echo twice
		master.Write([]byte(input))
	}
	err := cmd.Wait()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		master.Close()
		<-done
	}
	return out.String(), err
}

// streamingPod runs a busybox pod with one container (extra: more container config) and
// returns the container's id.
func streamingPod(t *testing.T, r *Runtime, name string, extra map[string]any, args ...string) string {
	t.Helper()
	r.MustCrictl("pull", busybox)
	pod := r.MustCrictl("runp", podConfig(t, r, name))
	cfg := map[string]any{
		"metadata": map[string]any{"name": name},
		"image":    map[string]any{"image": busybox},
		"command":  args,
		"log_path": name + ".log",
		"linux":    map[string]any{},
	}
	for k, v := range extra {
		cfg[k] = v
	}
	ctr := r.MustCrictl("create", pod, writeJSON(t, r.Dir, name+"-ctr.json", cfg), podConfig(t, r, name))
	r.MustCrictl("start", ctr)
	return ctr
}

// TestCrictlExecStreams: `crictl exec` through the streaming server — stdin reaches the command,
// stdout and stderr arrive on their own streams, and the command's exit code reaches the client
// (crictl reports it as "command terminated with exit code N" and fails), also after the daemon
// was killed and restarted.
func TestCrictlExecStreams(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := Start(t)
	ctr := streamingPod(t, r, "exec", nil, "sleep", "300")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cmd := r.crictlCmd(ctx, "exec", "-i", ctr, "/bin/sh", "-c", "read a; read b; echo got:$a+$b; echo oops >&2; exit 3")
	cmd.Stdin = strings.NewReader("one\ntwo\n")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(stderr.String(), "command terminated with exit code 3") {
		t.Fatalf("crictl exec: %v, want a failure naming exit code 3\nstdout %q\nstderr %q\ndaemon log:\n%s", err, stdout.String(), stderr.String(), tail(r.Log(), 2000))
	}
	if stdout.String() != "got:one+two\n" {
		t.Fatalf("stdout %q, want %q (stderr %q)", stdout.String(), "got:one+two\n", stderr.String())
	}
	if !strings.Contains(stderr.String(), "oops") {
		t.Fatalf("stderr %q does not carry the command's stderr", stderr.String())
	}

	// Without -i the command reads an empty stdin and the session ends when it exits.
	out, err := r.crictlCmd(ctx, "exec", ctr, "/bin/sh", "-c", "cat; echo end").Output()
	if err != nil || string(out) != "end\n" {
		t.Fatalf("exec without stdin: %q, %v", out, err)
	}

	// A daemon killed and restarted reconnects to the pod's shim and streams through it again.
	r.Kill()
	r.Restart()
	out, err = r.crictlCmd(ctx, "exec", ctr, "/bin/sh", "-c", "echo after-restart").Output()
	if err != nil || string(out) != "after-restart\n" {
		t.Fatalf("exec after a daemon restart: %q, %v\ndaemon log:\n%s", out, err, tail(r.Log(), 2000))
	}
}

// TestCrictlExecTTY: `crictl exec -it` gives the command a terminal of the client's size, and
// what is typed reaches it.
func TestCrictlExecTTY(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := Start(t)
	ctr := streamingPod(t, r, "exectty", nil, "sleep", "300")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	out, err := onTerminal(t, r.crictlCmd(ctx, "exec", "-it", ctr, "/bin/sh", "-c", "tty; stty size; echo TERM=$TERM; read line; echo typed:$line"), 33, 101, "hello tty\r")
	if err != nil {
		t.Fatalf("crictl exec -it: %v\n%s\ndaemon log:\n%s", err, out, tail(r.Log(), 2000))
	}
	for _, want := range []string{"/dev/pts/0", "33 101", "TERM=xterm", "typed:hello tty"} {
		if !strings.Contains(out, want) {
			t.Fatalf("crictl exec -it output lacks %q:\n%q", want, out)
		}
	}
}

// TestCrictlAttach: `crictl attach` to a container created with stdin and stdin_once: what is
// written reaches its shell, its output reaches the client and still the log, and the end of
// the client's input closes the container's stdin, so the shell exits and so does the attach.
func TestCrictlAttach(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := Start(t)
	ctr := streamingPod(t, r, "attach", map[string]any{"stdin": true, "stdin_once": true}, "/bin/sh")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cmd := r.crictlCmd(ctx, "attach", "-i", ctr)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // let the attach be in place before the shell gets its command
	io.WriteString(stdin, "echo attached-$((40+2)); echo err-line >&2\n")
	waitFor(t, "the shell's answer through attach", 30*time.Second, func() bool {
		return strings.Contains(stdout.String(), "attached-42")
	})
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("crictl attach: %v\nstdout %q\nstderr %q\ndaemon log:\n%s", err, stdout.String(), stderr.String(), tail(r.Log(), 2000))
	}
	if !strings.Contains(stderr.String(), "err-line") {
		t.Fatalf("attach stderr %q lacks the shell's stderr", stderr.String())
	}
	waitFor(t, "the container to exit after its stdin closed", 30*time.Second, func() bool {
		out, _ := r.Crictl("inspect", "-o", "go-template", "--template", "{{.status.state}}", ctr)
		return out == "CONTAINER_EXITED"
	})
	data, err := os.ReadFile(filepath.Join(r.Dir, "logs", "attach", "attach.log"))
	if err != nil || !strings.Contains(string(data), " stdout F attached-42\n") {
		t.Fatalf("the log lacks what the attached shell wrote: %v\n%s", err, data)
	}
}

// TestCrictlAttachTTY: a container with a terminal writes its output to the log and to an
// attached client, and the client's keys reach it; the attach ends when the container does.
func TestCrictlAttachTTY(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := Start(t)
	ctr := streamingPod(t, r, "attachtty", map[string]any{"stdin": true, "tty": true}, "/bin/sh", "-c", "tty; read line; echo said:$line")
	waitFor(t, "the container's tty line in its log", 30*time.Second, func() bool {
		data, _ := os.ReadFile(filepath.Join(r.Dir, "logs", "attachtty", "attachtty.log"))
		return strings.Contains(string(data), " stdout F /dev/pts/0")
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The attach ends when the container does, after its one answer.
	out, _ := onTerminal(t, r.crictlCmd(ctx, "attach", "-i", "-t", ctr), 24, 80, "hello\r")
	if !strings.Contains(out, "said:hello") {
		t.Fatalf("attach -it output %q lacks the container's answer\ndaemon log:\n%s", out, tail(r.Log(), 2000))
	}
	data, _ := os.ReadFile(filepath.Join(r.Dir, "logs", "attachtty", "attachtty.log"))
	if !strings.Contains(string(data), " stdout F said:hello") {
		t.Fatalf("the log lacks the answer:\n%s", data)
	}
}
