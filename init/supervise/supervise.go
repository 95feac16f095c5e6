// Package supervise is PID 1's service supervisor: it starts each long-running service in its
// own process group, restarts it according to its Policy with exponential backoff, echoes its
// output to the console line by line while keeping the tail in memory, and reaps every child of
// the process, including orphans the kernel reparents to PID 1.
//
// # Reaping
//
// Supervisor.Run is the one reaper of the process: on every SIGCHLD it calls wait4(-1, WNOHANG)
// until no zombie is left, hands exits of service processes to their Service and discards the
// rest (orphans). wait4(-1) collects any child, so nothing else in the PID 1 process may wait for
// children: no exec.Cmd.Run/Wait/Output, os.Process.Wait or wait4 on a pid. Whichever waiter
// came first would steal the other's exit status, and a Service would never learn that its
// process ended. For the same reason at most one Supervisor may Run per process, and this
// package starts processes with syscall.ForkExec rather than os/exec.
//
// # Restarts
//
// A service is restarted per its Policy, after a backoff that starts at 100ms, doubles up to 30s
// and starts over once a process had run for more than 10s. A process that cannot be started
// (missing binary, bad directory) counts as a failed run. A process that exits with DoNotRestart
// is never restarted.
package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Error kinds, for callers that map them onto API status codes.
var (
	ErrInvalid = errors.New("invalid argument")
	ErrExists  = errors.New("already exists")
	ErrStopped = errors.New("supervisor stopped")
)

// defaultKillWait is how long Stop waits for exits after SIGKILL. SIGKILL cannot be caught, so
// only a process stuck in the kernel (uninterruptible I/O) should take longer than this.
const defaultKillWait = 5 * time.Second

// Supervisor runs services and reaps children. It is safe for concurrent use.
type Supervisor struct {
	log        *slog.Logger
	outputSize int
	killWait   time.Duration
	logDir     string

	consoleMu     sync.Mutex
	console       io.Writer
	consoleFailed bool

	// mu is held across fork+register in Service.start and across wait4+lookup in reap, so the
	// reaper can never collect a service's process before the pid is known to belong to it, and
	// Stop can never signal a pid that was already reaped (and perhaps reused).
	mu       sync.Mutex
	services []*Service
	byName   map[string]*Service
	running  map[int]*Service // pid of a live (unreaped) process → its service
	stopping bool
	stopped  chan struct{} // closed by the first Stop; wakes services waiting out a backoff
	reaping  bool          // Run is active
}

// Option configures a Supervisor.
type Option func(*Supervisor)

// WithOutputSize sets how many bytes of output each service keeps for Output.
func WithOutputSize(n int) Option {
	return func(s *Supervisor) {
		if n > 0 {
			s.outputSize = n
		}
	}
}

// WithLogDir keeps each service's output in dir/<name>.log as well (see ReadLog), rotated to
// <name>.log.1 at MaxLogSize, so `ingot-node logs SERVICE` can show more than the ring holds.
func WithLogDir(dir string) Option { return func(s *Supervisor) { s.logDir = dir } }

// New returns a supervisor that logs to log and echoes the output of services with Spec.Echo to
// console (nil discards it). Nothing is reaped until Run is called.
func New(log *slog.Logger, console io.Writer, opts ...Option) *Supervisor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if console == nil {
		console = io.Discard
	}
	s := &Supervisor{
		log:        log,
		outputSize: DefaultOutputSize,
		killWait:   defaultKillWait,
		console:    console,
		byName:     make(map[string]*Service),
		running:    make(map[int]*Service),
		stopped:    make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Start validates spec and starts supervising it: the first process is forked in the background,
// so a binary that cannot be executed shows up in Status and the log, not as an error here.
// ctx bounds only the call; the service lives until it exits for good or Stop ends it.
func (s *Supervisor) Start(ctx context.Context, spec Spec) (*Service, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("start service %s: %w", spec.Name, err)
	}
	if err := spec.validate(); err != nil {
		return nil, fmt.Errorf("start service %q: %w", spec.Name, err)
	}
	spec.Args = slices.Clone(spec.Args)
	spec.Env = slices.Clone(spec.Env)
	svc := &Service{
		sup:    s,
		spec:   spec,
		log:    s.log.With("service", spec.Name),
		out:    newRing(s.outputSize),
		file:   s.newLogFile(spec.Name),
		extra:  s.extraLogFile(spec),
		exited: make(chan Exit, 1),
		done:   make(chan struct{}),
		state:  Starting,
		since:  time.Now(),
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopping {
		return nil, fmt.Errorf("start service %s: %w", spec.Name, ErrStopped)
	}
	if _, ok := s.byName[spec.Name]; ok {
		return nil, fmt.Errorf("start service %s: %w", spec.Name, ErrExists)
	}
	s.byName[spec.Name] = svc
	s.services = append(s.services, svc)
	go svc.supervise(context.WithoutCancel(ctx))
	return svc, nil
}

func (spec *Spec) validate() error {
	switch {
	case spec.Name == "":
		return fmt.Errorf("empty name: %w", ErrInvalid)
	case strings.ContainsAny(spec.Name, "\x00\n"):
		return fmt.Errorf("name contains a NUL or newline: %w", ErrInvalid)
	case !filepath.IsAbs(spec.Path):
		return fmt.Errorf("path %q is not absolute: %w", spec.Path, ErrInvalid)
	case !spec.Restart.valid():
		return fmt.Errorf("restart policy %s: %w", spec.Restart, ErrInvalid)
	case spec.Console != "" && !filepath.IsAbs(spec.Console):
		return fmt.Errorf("console %q is not absolute: %w", spec.Console, ErrInvalid)
	case spec.CgroupDir != "" && !filepath.IsAbs(spec.CgroupDir):
		return fmt.Errorf("cgroup directory %q is not absolute: %w", spec.CgroupDir, ErrInvalid)
	}
	return nil
}

// Services returns every service started so far, in start order.
func (s *Supervisor) Services() []*Service {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.services)
}

// Run reaps children until ctx is done, then returns nil. It must be running for services to be
// restarted and for Stop to see them exit; see the package documentation for why it must be the
// only waiter in the process. A second concurrent Run fails.
func (s *Supervisor) Run(ctx context.Context) error {
	s.mu.Lock()
	if s.reaping {
		s.mu.Unlock()
		return fmt.Errorf("run supervisor: reaper already running: %w", ErrExists)
	}
	s.reaping = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.reaping = false
		s.mu.Unlock()
	}()

	// One buffered slot is enough: SIGCHLDs coalesce anyway, and every wakeup drains all zombies.
	sigc := make(chan os.Signal, 1)
	signal.Notify(sigc, unix.SIGCHLD)
	defer signal.Stop(sigc)
	for {
		s.reap(ctx) // also collects children that exited before Notify took effect
		select {
		case <-ctx.Done():
			return nil
		case <-sigc:
		}
	}
}

// reap collects every zombie child.
func (s *Supervisor) reap(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if err != unix.ECHILD {
				s.log.ErrorContext(ctx, "reap children", "err", fmt.Errorf("wait4: %w", err))
			}
			return
		}
		if pid <= 0 {
			return
		}
		exit := exitFromStatus(syscall.WaitStatus(ws), time.Now())
		svc, ok := s.running[pid]
		if !ok {
			s.log.DebugContext(ctx, "reaped orphan", "pid", pid, "exit", exit.String())
			continue
		}
		delete(s.running, pid)
		svc.exited <- exit // never blocks: a service has at most one process in flight
	}
}

// Stop ends supervision: no service is started or restarted afterwards. It sends SIGTERM to the
// process group of every live service process, waits up to grace for the services to exit, then
// sends SIGKILL to the groups still there and waits a few seconds more. It returns an error
// naming the services that did not exit (or ctx's error if ctx ended the wait first).
//
// Exits are only seen through Run: if Run is not running, Stop still signals, but cannot see any
// service exit, so it waits out grace and the SIGKILL wait and reports every service that had a
// live process as not exited. Their exits are delivered once Run runs again.
// Stop may be called more than once; later calls signal whatever is still running.
func (s *Supervisor) Stop(ctx context.Context, grace time.Duration) error {
	s.mu.Lock()
	if !s.stopping {
		s.stopping = true
		close(s.stopped)
	}
	services := slices.Clone(s.services)
	s.signalLocked(ctx, unix.SIGTERM)
	s.mu.Unlock()
	s.log.InfoContext(ctx, "stopping services", "count", len(services), "grace", grace)

	if waitDone(ctx, services, grace) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("stop services: %w", err)
	}
	s.log.WarnContext(ctx, "services ignored SIGTERM, killing them", "services", strings.Join(notDone(services), ","))
	s.mu.Lock()
	s.signalLocked(ctx, unix.SIGKILL)
	s.mu.Unlock()
	if waitDone(ctx, services, s.killWait) {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("stop services: %w", err)
	}
	return fmt.Errorf("stop services: %s did not exit after SIGKILL", strings.Join(notDone(services), ", "))
}

// signalLocked signals the process group of every live service process. Only pids in s.running
// are used: they are not reaped yet, so they cannot have been reused by another process.
func (s *Supervisor) signalLocked(ctx context.Context, sig unix.Signal) {
	for pid, svc := range s.running {
		if err := unix.Kill(-pid, sig); err != nil && err != unix.ESRCH {
			svc.log.WarnContext(ctx, "signal service", "pgid", pid, "signal", sig.String(), "err", err)
		}
		// An interactive shell ignores SIGTERM; for a console service the terminal hangup is what
		// ends the session, as when a real terminal goes away.
		if sig == unix.SIGTERM && svc.spec.Console != "" {
			unix.Kill(-pid, unix.SIGHUP)
		}
	}
}

// waitDone waits until every service's supervision loop has ended, reporting whether they all did
// before d passed or ctx was done.
func waitDone(ctx context.Context, services []*Service, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	for _, svc := range services {
		select {
		case <-svc.done:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	return true
}

func notDone(services []*Service) []string {
	var names []string
	for _, svc := range services {
		select {
		case <-svc.done:
		default:
			names = append(names, svc.spec.Name)
		}
	}
	return names
}
