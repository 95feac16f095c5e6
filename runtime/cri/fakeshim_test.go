package cri

import (
	"context"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
	"ingot.dev/ingot/runtime/oci"
	"ingot.dev/ingot/runtime/shim"
)

// fakeShim is a pod's shim without processes: containers are records that exit when signalled
// (unless told to ignore SIGTERM), and Wait answers at the exit as the real shim does.
type fakeShim struct {
	mu    sync.Mutex
	ctrs  map[string]*fakeCtr
	calls []string // "Signal web 15", "Remove web", … in order
	// ignoreTerm: containers survive SIGTERM (only SIGKILL ends them).
	ignoreTerm bool
}

type fakeCtr struct {
	started bool
	exited  chan struct{}
	exit    shim.Exit
}

func newFakeShim() *fakeShim { return &fakeShim{ctrs: map[string]*fakeCtr{}} }

func (f *fakeShim) record(format string, args ...any) {
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

// add records a container, started or only created.
func (f *fakeShim) add(id string, started bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ctrs[id] = &fakeCtr{started: started, exited: make(chan struct{})}
}

func (f *fakeShim) callLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeShim) Create(a shim.CreateArgs) (int, error) {
	f.add(a.ID, a.Start)
	return 4242, nil
}

func (f *fakeShim) Start(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("Start %s", id)
	c, ok := f.ctrs[id]
	if !ok {
		return fmt.Errorf("container %s: %w", id, os.ErrNotExist)
	}
	c.started = true
	return nil
}

func (f *fakeShim) stateLocked(id string) shim.State {
	c, ok := f.ctrs[id]
	if !ok {
		return shim.State{ID: id, NotFound: true}
	}
	st := shim.State{ID: id, Pid: 4242}
	select {
	case <-c.exited:
		st.Exited, st.Exit = true, c.exit
	default:
		st.Running, st.Created = c.started, !c.started
	}
	return st
}

func (f *fakeShim) State(id string) (shim.State, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stateLocked(id), nil
}

func (f *fakeShim) Wait(ctx context.Context, id string, timeout time.Duration) (shim.State, error) {
	f.mu.Lock()
	c, ok := f.ctrs[id]
	f.mu.Unlock()
	if ok {
		t := time.NewTimer(timeout)
		defer t.Stop()
		select {
		case <-c.exited:
		case <-t.C:
		case <-ctx.Done():
			return shim.State{}, ctx.Err()
		}
	}
	return f.State(id)
}

func (f *fakeShim) Signal(id string, sig syscall.Signal, all bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("Signal %s %d", id, sig)
	c, ok := f.ctrs[id]
	if !ok {
		return fmt.Errorf("container %s: %w", id, os.ErrNotExist)
	}
	if sig == syscall.SIGTERM && f.ignoreTerm {
		return nil
	}
	f.exitLocked(c, 128+int(sig))
	return nil
}

func (f *fakeShim) exitLocked(c *fakeCtr, code int) {
	select {
	case <-c.exited:
	default:
		c.exit = shim.Exit{Code: code, Finished: time.Now()}
		close(c.exited)
	}
}

func (f *fakeShim) Remove(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.record("Remove %s", id)
	if c, ok := f.ctrs[id]; ok {
		f.exitLocked(c, 137)
		delete(f.ctrs, id)
	}
	return nil
}

func (f *fakeShim) Exec(shim.ExecArgs) (shim.ExecResult, error) { return shim.ExecResult{}, nil }
func (f *fakeShim) Reopen(string) error                         { return nil }
func (f *fakeShim) Update(shim.UpdateArgs) error                { return nil }
func (f *fakeShim) Stats(string) (oci.Usage, error)             { return oci.Usage{}, nil }
func (f *fakeShim) Shutdown() error                             { return nil }
func (f *fakeShim) Close() error                                { return nil }

// noImages is an image store without images: enough for handlers that only look up a stop signal.
type noImages struct{}

func (noImages) Pull(context.Context, string, *runtimeapi.AuthConfig) (Image, error) {
	return Image{}, errdefs.ErrUnimplemented
}
func (noImages) Get(ref string) (Image, error) {
	return Image{}, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
}
func (noImages) List() ([]Image, error)                  { return nil, nil }
func (noImages) Remove(string) error                     { return nil }
func (noImages) Layers(string) ([]string, error)         { return nil, nil }
func (noImages) FsInfo() (string, uint64, uint64, error) { return "", 0, 0, nil }
