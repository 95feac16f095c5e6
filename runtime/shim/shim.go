// Package shim is the per-pod process that owns a pod's containers. The runtime daemon starts one
// shim per pod sandbox; the shim creates the pause container and the pod's containers through
// libcontainer, holds their stdio, writes their logs and records their exit codes. It runs in its
// own session, so the daemon can be killed and restarted without losing a container or a log
// line: the new daemon reconnects to the shim's socket.
//
// The daemon and the shim speak net/rpc (gob) over a unix socket in the pod's state directory.
package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/rpc"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"ingot.dev/ingot/runtime/logs"
	"ingot.dev/ingot/runtime/oci"
)

// Server is the shim's state: the containers of one pod.
type Server struct {
	dir     string // state directory: socket, libcontainer state, exit files
	log     *slog.Logger
	maxLine int

	mu   sync.Mutex
	ctrs map[string]*container
	// quit closes once the reply to Shutdown is on its way to the daemon (stop): Serve ends.
	quit chan struct{}
	stop func()
}

type container struct {
	id      string
	lc      *libcontainer.Container
	proc    *libcontainer.Process
	logw    *logs.Writer
	pid     int
	started time.Time
	exited  chan struct{}
	exit    Exit
	streams sync.WaitGroup

	// stdin is the container's stdin for attached clients: a pipe's write end, or the terminal's
	// master; nil when the container was created without stdin. stdinOnce: the first client
	// that ends its stdin closes it.
	stdin     io.WriteCloser
	stdinOnce bool
	stdinMu   sync.Mutex
	console   *os.File  // the terminal's master (tty containers)
	out       [2]fanout // stdout and stderr (a terminal's output is stdout) to attached clients
}

// Exit is how a container's main process ended.
type Exit struct {
	Code      int
	Signal    int
	Finished  time.Time
	OOMKilled bool // killed by the kernel's OOM killer (its cgroup's memory limit)
}

// CreateArgs asks for a container. Spec is the OCI spec as JSON.
type CreateArgs struct {
	ID   string
	Spec []byte
	// LogDir is the pod's log_directory and LogPath the container's log_path below it (CRI's
	// names); empty LogPath: output discarded (the pause container).
	LogDir  string
	LogPath string
	Start   bool // start at once (the pause container) instead of waiting for Start
	// Stdin keeps the container's stdin open for attached clients (CRI's stdin); StdinOnce
	// closes it when the first of them ends its input. A terminal is asked for by the spec
	// (process.terminal).
	Stdin, StdinOnce bool
}

// State reports a container.
type State struct {
	ID       string
	Pid      int
	Running  bool
	Created  bool // created, not started
	Exited   bool
	Exit     Exit
	Started  time.Time
	NotFound bool
}

// WaitArgs asks for a container's exit, waiting at most Timeout for it.
type WaitArgs struct {
	ID      string
	Timeout time.Duration
}

// ExecArgs runs a command in a running container.
type ExecArgs struct {
	ID      string
	Process []byte        // OCI process as JSON
	Timeout time.Duration // 0: none
	// DrainTimeout bounds how long the output is still read after the command exited, while
	// children it left behind hold its stdout or stderr (config.toml's
	// drain_exec_sync_io_timeout); 0: until they close it or Timeout passes.
	DrainTimeout time.Duration
}

// ExecResult is an ExecSync answer.
type ExecResult struct {
	Stdout, Stderr []byte
	ExitCode       int
	TimedOut       bool
}

// UpdateArgs changes a container's cgroup limits; Resources is an OCI LinuxResources as JSON.
type UpdateArgs struct {
	ID        string
	Resources []byte
}

// SignalArgs sends a signal to a container's main process (All: every process in it).
type SignalArgs struct {
	ID     string
	Signal int
	All    bool
}

// Serve runs a shim in the calling process, answering on l (its socket at sock), until
// Shutdown. It never returns before that, and removes the socket when it does.
func Serve(dir, sock string, l net.Listener, log *slog.Logger, maxLine int) error {
	// Orphans of exec'd processes come back to the shim, which reaps them.
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE, syscall.SIGINT, syscall.SIGTERM)
	err := newServer(dir, log, maxLine).serve(l)
	os.Remove(sock)
	return err
}

func newServer(dir string, log *slog.Logger, maxLine int) *Server {
	s := &Server{dir: dir, log: log, maxLine: maxLine, ctrs: map[string]*container{}, quit: make(chan struct{})}
	s.stop = sync.OnceFunc(func() { close(s.quit) })
	return s
}

// serve answers the daemon on l until the reply to Shutdown has been written, then closes l.
func (s *Server) serve(l net.Listener) error {
	srv := rpc.NewServer()
	if err := srv.RegisterName("Shim", &service{s}); err != nil {
		l.Close()
		return err
	}
	go func() {
		<-s.quit
		l.Close()
	}()
	for {
		conn, err := l.Accept()
		if err != nil {
			select {
			case <-s.quit:
				return nil
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			// A transient failure (out of descriptors): back off rather than spin.
			s.log.Warn("shim accept", "err", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go s.handle(srv, conn)
	}
}

func (s *Server) get(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.ctrs[id]
	if !ok {
		return nil, fmt.Errorf("container %s: %w", id, os.ErrNotExist)
	}
	return c, nil
}

func (s *Server) create(a CreateArgs) (int, error) {
	s.mu.Lock()
	if _, ok := s.ctrs[a.ID]; ok {
		s.mu.Unlock()
		return 0, fmt.Errorf("container %s: %w", a.ID, os.ErrExist)
	}
	s.mu.Unlock()
	var spec specs.Spec
	if err := json.Unmarshal(a.Spec, &spec); err != nil {
		return 0, fmt.Errorf("container %s: spec: %w", a.ID, err)
	}
	lc, err := oci.Create(filepath.Join(s.dir, "runc"), a.ID, &spec)
	if err != nil {
		return 0, err
	}
	p, err := oci.Process(spec.Process, true)
	if err != nil {
		lc.Destroy()
		return 0, err
	}
	c := &container{id: a.ID, lc: lc, proc: p, exited: make(chan struct{}), stdinOnce: a.StdinOnce}
	tty := spec.Process.Terminal
	var logw *logs.Writer
	if a.LogPath != "" {
		if logw, err = logs.OpenIn(a.LogDir, a.LogPath, logs.Options{MaxLineSize: s.maxLine}); err != nil {
			lc.Destroy()
			return 0, err
		}
	}
	c.logw = logw
	// Output is read when it has somewhere to go: the log, or a client attached later (a
	// container with stdin or a terminal is one a client means to attach to).
	stdio, err := setupStdio(p, c, a.Stdin, tty, logw != nil || a.Stdin || tty)
	if err == nil {
		if err = lc.Start(p); err != nil {
			err = fmt.Errorf("container %s: start init: %w", a.ID, err)
		}
	}
	if err == nil {
		err = stdio.started(c)
	}
	if err != nil {
		if stdio != nil {
			stdio.close()
		}
		if c.stdin != nil {
			c.stdin.Close()
		}
		if logw != nil {
			logw.Close()
		}
		lc.Destroy()
		return 0, err
	}
	if c.console != nil {
		if a.Stdin {
			c.stdin = c.console
		}
		c.streams.Add(1)
		go func() {
			defer c.streams.Done()
			pump(s.log, a.ID, logs.Stdout, c.console, logw, &c.out[0])
		}()
	}
	for name, r := range stdio.readers {
		o := &c.out[0]
		if name == logs.Stderr {
			o = &c.out[1]
		}
		c.streams.Add(1)
		go func() {
			defer c.streams.Done()
			defer r.Close()
			pump(s.log, a.ID, name, r, logw, o)
		}()
	}
	pid, _ := p.Pid()
	c.pid = pid
	s.mu.Lock()
	s.ctrs[a.ID] = c
	s.mu.Unlock()
	go s.reap(c)
	if a.Start {
		if err := s.start(a.ID); err != nil {
			return pid, err
		}
	}
	return pid, nil
}

// reap waits for the container's main process and records how it ended.
func (s *Server) reap(c *container) {
	st, _ := c.proc.Wait()
	c.streams.Wait() // every byte the process wrote reaches the log before the exit is visible
	ex := Exit{Finished: time.Now()}
	if st != nil {
		if ws, ok := st.Sys().(syscall.WaitStatus); ok {
			if ws.Signaled() {
				ex.Signal = int(ws.Signal())
				ex.Code = 128 + ex.Signal
				// The cgroup outlives the process until Remove: its OOM count is still there.
				ex.OOMKilled = ws.Signal() == syscall.SIGKILL && oci.OOMKilled(c.lc)
			} else {
				ex.Code = ws.ExitStatus()
			}
		}
	}
	if c.logw != nil {
		c.logw.Close()
	}
	c.out[0].closeAll()
	c.out[1].closeAll()
	c.closeStdin()
	if c.console != nil {
		c.console.Close()
	}
	s.mu.Lock()
	c.exit = ex
	s.mu.Unlock()
	data, _ := json.Marshal(ex)
	os.WriteFile(filepath.Join(s.dir, c.id+".exit"), data, 0o600)
	close(c.exited)
}

// wait answers when the container's exit is recorded (its log complete) or d passes, with its
// state then.
func (s *Server) wait(id string, d time.Duration) State {
	c, err := s.get(id)
	if err != nil {
		return State{ID: id, NotFound: true}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.exited:
	case <-t.C:
	}
	return s.state(id)
}

func (s *Server) start(id string) error {
	c, err := s.get(id)
	if err != nil {
		return err
	}
	if err := c.lc.Exec(); err != nil {
		return fmt.Errorf("container %s: start: %w", id, err)
	}
	s.mu.Lock()
	c.started = time.Now()
	s.mu.Unlock()
	return nil
}

func (s *Server) state(id string) State {
	c, err := s.get(id)
	if err != nil {
		return State{ID: id, NotFound: true}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := State{ID: id, Pid: c.pid, Started: c.started}
	select {
	case <-c.exited:
		st.Exited, st.Exit = true, c.exit
	default:
		st.Running = !c.started.IsZero()
		st.Created = c.started.IsZero()
	}
	return st
}

func (s *Server) signal(a SignalArgs) error {
	c, err := s.get(a.ID)
	if err != nil {
		return err
	}
	select {
	case <-c.exited:
		return nil // already gone: signalling is a no-op, as the CRI stop contract wants
	default:
	}
	sig := syscall.Signal(a.Signal)
	if a.All {
		pids, err := c.lc.Processes()
		if err == nil {
			for _, p := range pids {
				unix.Kill(p, sig)
			}
			return nil
		}
	}
	if err := c.lc.Signal(sig); err != nil && !errors.Is(err, libcontainer.ErrNotRunning) {
		// A created-but-not-started container has no running init to signal via libcontainer.
		if c.pid > 0 {
			return unix.Kill(c.pid, sig)
		}
		return fmt.Errorf("container %s: signal %d: %w", a.ID, a.Signal, err)
	}
	return nil
}

func (s *Server) remove(id string) error {
	c, err := s.get(id)
	if err != nil {
		return nil // removal is idempotent
	}
	select {
	case <-c.exited:
	default:
		c.lc.Signal(unix.SIGKILL)
		if c.pid > 0 {
			unix.Kill(c.pid, unix.SIGKILL)
		}
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			return fmt.Errorf("container %s: did not exit after SIGKILL", id)
		}
	}
	if err := c.lc.Destroy(); err != nil {
		return fmt.Errorf("container %s: destroy: %w", id, err)
	}
	s.mu.Lock()
	delete(s.ctrs, id)
	s.mu.Unlock()
	os.Remove(filepath.Join(s.dir, id+".exit"))
	return nil
}

func (s *Server) exec(a ExecArgs) (ExecResult, error) {
	c, err := s.get(a.ID)
	if err != nil {
		return ExecResult{}, err
	}
	var proc specs.Process
	if err := json.Unmarshal(a.Process, &proc); err != nil {
		return ExecResult{}, fmt.Errorf("exec in %s: process: %w", a.ID, err)
	}
	p, err := oci.Process(&proc, false)
	if err != nil {
		return ExecResult{}, err
	}
	// Pipes of our own rather than io.Writers: libcontainer would copy a Writer in goroutines
	// that its Wait waits for, so a background child holding stdout would hold Wait too.
	var out, errb limitedBuffer
	out.max, errb.max = 16<<20, 16<<20
	var (
		readEnds, writeEnds []*os.File
		copies              sync.WaitGroup
	)
	closeReads := func() {
		for _, r := range readEnds {
			r.Close()
		}
	}
	for range 2 {
		r, w, err := os.Pipe()
		if err != nil {
			closeReads()
			for _, w := range writeEnds {
				w.Close()
			}
			return ExecResult{}, fmt.Errorf("exec in %s: %w", a.ID, err)
		}
		readEnds, writeEnds = append(readEnds, r), append(writeEnds, w)
	}
	p.Stdout, p.Stderr = writeEnds[0], writeEnds[1]
	for i, buf := range []*limitedBuffer{&out, &errb} {
		copies.Add(1)
		go func() {
			defer copies.Done()
			io.Copy(buf, readEnds[i]) // ends at EOF, or when closeReads gives up on the stream
		}()
	}
	err = c.lc.Run(p)
	// The process holds its own copies of the write ends; ours would keep the pipes open.
	for _, w := range writeEnds {
		w.Close()
	}
	if err != nil {
		closeReads()
		copies.Wait()
		return ExecResult{}, fmt.Errorf("exec in %s: %w", a.ID, err)
	}
	pid, _ := p.Pid()
	done := make(chan *os.ProcessState, 1)
	go func() {
		st, _ := p.Wait()
		done <- st
	}()
	var deadline <-chan time.Time
	if a.Timeout > 0 {
		t := time.NewTimer(a.Timeout)
		defer t.Stop()
		deadline = t.C
	}
	res := ExecResult{}
	var st *os.ProcessState
	select {
	case st = <-done:
	case <-deadline:
		killGroup(p, pid)
		st = <-done
		res.TimedOut = true
	}

	// The command has ended; children it left may still hold its stdout or stderr.
	streams := make(chan struct{})
	go func() { copies.Wait(); close(streams) }()
	var drain <-chan time.Time
	switch {
	case res.TimedOut:
		// The group is dead: what is left in the pipes arrives at once. Whatever holds them
		// longer has left the group (setsid) and is not waited for.
		drain = time.After(killedGroupDrain)
	case a.DrainTimeout > 0:
		t := time.NewTimer(a.DrainTimeout)
		defer t.Stop()
		drain = t.C
	}
	select {
	case <-streams:
	case <-drain:
		s.log.Warn("exec: output still held open by the command's children; not waiting longer", "container", a.ID, "pid", pid, "drain_exec_sync_io_timeout", a.DrainTimeout)
	case <-deadline:
		// The command finished, but its children outlived the ExecSync timeout holding its output.
		killGroup(p, pid)
		select {
		case <-streams:
		case <-time.After(killedGroupDrain):
		}
	}
	closeReads() // a child that writes later gets EPIPE
	copies.Wait()

	res.Stdout, res.Stderr = out.Bytes(), errb.Bytes()
	if st != nil {
		if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.ExitCode = 128 + int(ws.Signal())
		} else {
			res.ExitCode = st.ExitCode()
		}
	}
	return res, nil
}

// killedGroupDrain is how long output is still read after an exec's process group was killed:
// the kernel closes the dead processes' pipe ends at once, so this only bounds the wait for a
// process that escaped the group.
const killedGroupDrain = time.Second

// killGroup kills an exec'd process and every process in its group. runc's init makes each
// process it starts a session (and group) leader, so the group is the command and the children
// it started, background ones included. While any member lives the kernel keeps the group's id
// from being reused, so the kill cannot reach an unrelated process through it.
func killGroup(p *libcontainer.Process, pid int) {
	if pid > 0 {
		unix.Kill(-pid, unix.SIGKILL)
	}
	p.Signal(unix.SIGKILL)
}

// update sets new cgroup limits (an OCI LinuxResources as JSON) on a created or running container.
func (s *Server) update(a UpdateArgs) error {
	c, err := s.get(a.ID)
	if err != nil {
		return err
	}
	var r specs.LinuxResources
	if err := json.Unmarshal(a.Resources, &r); err != nil {
		return fmt.Errorf("container %s: resources: %w", a.ID, err)
	}
	return oci.Update(c.lc, &r)
}

// stats reads a container's cgroup usage; a container that has exited reads as zero.
func (s *Server) stats(id string) (oci.Usage, error) {
	c, err := s.get(id)
	if err != nil {
		return oci.Usage{}, err
	}
	select {
	case <-c.exited:
		return oci.Usage{}, nil
	default:
	}
	return oci.Stats(c.lc)
}

func (s *Server) reopen(id string) error {
	c, err := s.get(id)
	if err != nil {
		return err
	}
	select {
	case <-c.exited:
		return fmt.Errorf("container %s is not running", id)
	default:
	}
	if c.logw == nil {
		return fmt.Errorf("container %s has no log", id)
	}
	return c.logw.Reopen()
}

// removeAll kills and destroys every container (Shutdown).
func (s *Server) removeAll() {
	s.mu.Lock()
	var ids []string
	for id := range s.ctrs {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	for _, id := range ids {
		if err := s.remove(id); err != nil {
			s.log.Warn("shim shutdown", "container", id, "err", err)
		}
	}
}

type limitedBuffer struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - len(b.buf); room > 0 {
		b.buf = append(b.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *limitedBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf...)
}

// Main runs a shim process for the pod directory dir, logging to stderr. listenFD is the
// descriptor of its socket, already listening (Spawn passes it); 0: it listens on socket itself.
func Main(dir, socket string, listenFD, maxLine int) error {
	if dir == "" || socket == "" {
		return errors.New("shim: --dir and --socket are required")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("shim", filepath.Base(dir))
	var l net.Listener
	var err error
	if listenFD > 0 {
		f := os.NewFile(uintptr(listenFD), socket)
		l, err = net.FileListener(f)
		f.Close()
	} else {
		os.Remove(socket)
		l, err = net.Listen("unix", socket)
	}
	if err != nil {
		return fmt.Errorf("shim: listen on %s: %w", socket, err)
	}
	return Serve(dir, socket, l, log, maxLine)
}
