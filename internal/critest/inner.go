package critest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Exit codes of the namespace init.
const (
	exitSpecsFailed = 3 // critest ran and some specs failed
	exitBroken      = 4 // the run could not happen: setup, runtime start or critest crash
)

// Inner is the init of the run's pid namespace, started by Run through unshare with the path of
// its JSON config: it makes the mount tree rshared, starts the runtime as its child, runs
// critest against it, removes what critest left, stops the runtime and returns the exit code.
// Every other process of the namespace dies with it.
func Inner(specPath string) int {
	if err := inner(specPath); err != nil {
		fmt.Fprintln(os.Stderr, "critest init:", err)
		var ee specsFailed
		if errors.As(err, &ee) {
			return exitSpecsFailed
		}
		return exitBroken
	}
	return 0
}

type specsFailed struct{ code int }

func (e specsFailed) Error() string { return fmt.Sprintf("critest exited with status %d", e.code) }

func inner(specPath string) error {
	data, err := os.ReadFile(specPath)
	if err != nil {
		return err
	}
	var ic innerConfig
	if err := json.Unmarshal(data, &ic); err != nil {
		return fmt.Errorf("read %s: %w", specPath, err)
	}
	if os.Getpid() != 1 {
		return errors.New("not the init of a pid namespace (run through critest.Run)")
	}
	// unshare made every mount private; the propagation specs need shared ones, as on a node.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make / rshared: %w", err)
	}
	// Network plugins' state and named network namespaces, if the host has them, stay private.
	for _, d := range []string{"/var/lib/cni", "/run/netns"} {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			if err := unix.Mount("tmpfs", d, "tmpfs", 0, "mode=755"); err != nil {
				return fmt.Errorf("private tmpfs on %s: %w", d, err)
			}
		}
	}
	r := newReaper()

	logf, err := os.OpenFile(ic.DaemonLog, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	// The runtime's own network namespace is the node's (Run made it): no --node-netns.
	daemon := exec.Command(ic.Node, "runtime", "--config", ic.Config, "--cgroup-root", ic.CgroupRoot)
	daemon.Stdout, daemon.Stderr = logf, logf
	daemon.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := daemon.Start(); err != nil {
		return fmt.Errorf("start the runtime: %w", err)
	}
	daemonExit := r.wait(daemon.Process.Pid)
	if err := waitSocket(ic.Socket, daemonExit, time.Minute); err != nil {
		daemon.Process.Kill()
		return err
	}

	endpoint := "unix://" + ic.Socket
	args := append([]string{"-runtime-endpoint", endpoint, "-image-endpoint", endpoint}, ic.Args...)
	ct := exec.Command(ic.Critest, args...)
	ct.Stdout, ct.Stderr = os.Stdout, os.Stderr
	ct.Dir = os.TempDir()
	if err := ct.Start(); err != nil {
		daemon.Process.Kill()
		return fmt.Errorf("start critest: %w", err)
	}
	ws := <-r.wait(ct.Process.Pid)

	cleanErr := removePods(ic.Socket)
	daemon.Process.Signal(unix.SIGTERM)
	select {
	case <-daemonExit:
	case <-time.After(15 * time.Second):
		daemon.Process.Kill()
		<-daemonExit
	}
	switch {
	case ws.Signaled():
		return fmt.Errorf("critest killed by %v", ws.Signal())
	case ws.ExitStatus() != 0:
		return errors.Join(specsFailed{ws.ExitStatus()}, cleanErr)
	}
	return cleanErr
}

// waitSocket waits until the runtime accepts connections on its CRI socket.
func waitSocket(path string, exited <-chan unix.WaitStatus, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil
		}
		select {
		case ws := <-exited:
			return fmt.Errorf("the runtime exited at start (status %d); see daemon.log", ws.ExitStatus())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the runtime did not listen on %s within %s", path, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removePods stops and removes every pod critest left, so the runtime ends every container
// itself (cgroups removed, logs closed) rather than the pid namespace's death killing them.
func removePods(socket string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	rc := runtimeapi.NewRuntimeServiceClient(conn)
	pods, err := rc.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return fmt.Errorf("list the pods critest left: %w", err)
	}
	var errs []error
	for _, p := range pods.GetItems() {
		if _, err := rc.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.GetId()}); err != nil {
			errs = append(errs, fmt.Errorf("stop pod %s left by critest: %w", p.GetId(), err))
		}
		if _, err := rc.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.GetId()}); err != nil {
			errs = append(errs, fmt.Errorf("remove pod %s left by critest: %w", p.GetId(), err))
		}
	}
	return errors.Join(errs...)
}

// reaper is the init's only wait4 caller: it reaps every child, its own and the orphans
// (shims) that the pid namespace hands it, and tells whoever waits for a given pid.
type reaper struct {
	mu      sync.Mutex
	exited  map[int]unix.WaitStatus
	waiters map[int]chan unix.WaitStatus
}

func newReaper() *reaper {
	r := &reaper{exited: map[int]unix.WaitStatus{}, waiters: map[int]chan unix.WaitStatus{}}
	go r.loop()
	return r
}

func (r *reaper) loop() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil { // ECHILD: nothing to reap yet
			time.Sleep(50 * time.Millisecond)
			continue
		}
		r.mu.Lock()
		if ch, ok := r.waiters[pid]; ok {
			ch <- ws
			delete(r.waiters, pid)
		} else {
			r.exited[pid] = ws
		}
		r.mu.Unlock()
	}
}

// wait returns a channel that receives pid's exit status once.
func (r *reaper) wait(pid int) <-chan unix.WaitStatus {
	ch := make(chan unix.WaitStatus, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if ws, ok := r.exited[pid]; ok {
		ch <- ws
		delete(r.exited, pid)
		return ch
	}
	r.waiters[pid] = ch
	return ch
}
