package shim

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/rpc"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// startServer serves a shim Server in this process on a socket in a temp directory; it needs no
// root as long as no container is created through libcontainer.
func startServer(t *testing.T) (*Server, *Client, <-chan error) {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "shim.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(dir, slog.New(slog.DiscardHandler), 0)
	done := make(chan error, 1)
	go func() { done <- s.serve(l) }()
	c, err := Dial(dir, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.stop() })
	return s, c, done
}

// addRunning records a started container with no process behind it; exit ends it as the reaper
// would.
func addRunning(s *Server, id string) (exit func(code int)) {
	c := &container{id: id, pid: 4242, started: time.Now(), exited: make(chan struct{})}
	s.mu.Lock()
	s.ctrs[id] = c
	s.mu.Unlock()
	return func(code int) {
		s.mu.Lock()
		c.exit = Exit{Code: code, Finished: time.Now()}
		s.mu.Unlock()
		close(c.exited)
	}
}

// TestWaitAnswersWhenTheExitIsRecorded: Wait gives up at its timeout while the container runs,
// and otherwise answers with the exit as soon as the shim records it.
func TestWaitAnswersWhenTheExitIsRecorded(t *testing.T) {
	s, c, _ := startServer(t)
	exit := addRunning(s, "web")
	ctx := context.Background()

	st, err := c.Wait(ctx, "web", 10*time.Millisecond)
	if err != nil || st.Exited || !st.Running {
		t.Fatalf("Wait on a running container with a 10ms timeout = %+v, %v; want running, not exited", st, err)
	}

	got := make(chan State, 1)
	go func() {
		st, err := c.Wait(ctx, "web", time.Hour)
		if err != nil {
			t.Error(err)
		}
		got <- st
	}()
	exit(3)
	select {
	case st := <-got:
		if !st.Exited || st.Exit.Code != 3 {
			t.Fatalf("Wait after exit 3 = %+v; want exited with code 3", st)
		}
	case <-time.After(time.Minute):
		t.Fatal("Wait did not answer within a minute of the exit (its timeout was an hour)")
	}

	st, err = c.Wait(ctx, "gone", time.Hour)
	if err != nil || !st.NotFound {
		t.Fatalf("Wait on an unknown container = %+v, %v; want NotFound at once", st, err)
	}
}

// TestWaitGivesUpWithItsContext: a daemon handler whose request is cancelled stops waiting.
func TestWaitGivesUpWithItsContext(t *testing.T) {
	s, c, _ := startServer(t)
	addRunning(s, "web")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Wait(ctx, "web", time.Hour); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait with a cancelled context: err = %v, want context.Canceled", err)
	}
}

// oldShim answers as a shim from before Wait existed: State only. The container exits after
// exitAfter State calls.
type oldShim struct {
	mu        sync.Mutex
	calls     int
	exitAfter int
}

func (o *oldShim) State(id string, st *State) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls++
	*st = State{ID: id, Running: o.calls < o.exitAfter, Exited: o.calls >= o.exitAfter}
	if st.Exited {
		st.Exit.Code = 137
	}
	return nil
}

// TestWaitOnAShimWithoutWait: after a daemon upgrade the shims of the previous binary still run;
// Wait falls back to asking for their state.
func TestWaitOnAShimWithoutWait(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "old.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	old := &oldShim{exitAfter: 3}
	srv := rpc.NewServer()
	if err := srv.RegisterName("Shim", old); err != nil {
		t.Fatal(err)
	}
	go srv.Accept(l)
	c, err := Dial(dir, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	st, err := c.Wait(context.Background(), "web", time.Minute)
	if err != nil || !st.Exited || st.Exit.Code != 137 {
		t.Fatalf("Wait on an old shim = %+v, %v; want exited with 137", st, err)
	}
	if old.calls != 3 {
		t.Fatalf("the old shim was asked its state %d times, want 3 (until it exited)", old.calls)
	}
}

// TestShutdownAnswersThenEnds: Shutdown destroys what the shim holds, the daemon gets the answer,
// and only then does the shim stop serving and remove its socket.
func TestShutdownAnswersThenEnds(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "shim.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Serve(dir, sock, l, slog.New(slog.DiscardHandler), 0) }()
	c, err := Dial(dir, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Shutdown(); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve after Shutdown: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Serve still running a minute after Shutdown answered")
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket after the shim ended: %v, want it removed", err)
	}
	if _, err := Dial(dir, sock); err == nil {
		t.Fatal("a new connection to the shim succeeded after Shutdown")
	}
}
