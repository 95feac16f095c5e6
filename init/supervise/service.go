package supervise

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Spec describes a service.
type Spec struct {
	Name    string   // unique among the supervisor's services; prefixes its console lines
	Path    string   // absolute path of the executable; also argv[0]
	Args    []string // argv without argv[0]
	Env     []string // the complete environment, "KEY=value"; nil means empty
	Dir     string   // working directory; empty means the supervisor's
	Restart Policy

	// Console, if set, is the path of a tty (e.g. /dev/ttyS0) the process gets as stdin, stdout,
	// stderr and controlling terminal, in a session of its own. Its output then goes only to the
	// tty: it is neither prefixed on the supervisor's console nor kept for Output.
	Console string

	// Echo copies each line of the service's output, prefixed with its name, to the supervisor's
	// console. Off, the output is kept only in the ring (Output) and the service's log file (see
	// WithLogDir), so a console shell is not interleaved with a daemon's log.
	Echo bool

	// CgroupDir, if set, is a cgroup v2 directory, created if needed, that the process is
	// started in: it is placed there by clone3 itself, so even its first instruction is
	// accounted to the cgroup.
	CgroupDir string

	// LogFile, if set, is one more file the output is written to, rotated like the one in the
	// log directory (MaxLogSize, one old copy kept as LogFile.1): a daemon whose log must outlive
	// a reboot keeps it on the state partition, e.g. /var/log/kubelet.log.
	LogFile string
}

// Status is a snapshot of a service.
type Status struct {
	Name     string
	State    State
	PID      int       // the live process, 0 if none
	Restarts int       // starts after the first
	LastExit *Exit     // how the previous run ended; nil before the first run ended
	Since    time.Time // when State was entered
}

// Service is one supervised service. It is safe for concurrent use.
type Service struct {
	sup    *Supervisor
	spec   Spec
	log    *slog.Logger
	out    *ring
	file   *logFile      // nil without a log directory
	extra  *logFile      // Spec.LogFile; nil without one
	exited chan Exit     // the reaper's report on the current process
	done   chan struct{} // closed when the service will never run again

	mu       sync.Mutex
	state    State
	pid      int
	restarts int
	lastExit *Exit
	since    time.Time
}

// Name returns the service's name.
func (s *Service) Name() string { return s.spec.Name }

// Output returns the last bytes the service wrote to stdout and stderr, across restarts.
func (s *Service) Output() []byte { return s.out.Bytes() }

// Done is closed once the service has exited for good or was stopped.
func (s *Service) Done() <-chan struct{} { return s.done }

// Status returns a snapshot of the service's state.
func (s *Service) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Status{Name: s.spec.Name, State: s.state, PID: s.pid, Restarts: s.restarts, Since: s.since}
	if s.lastExit != nil {
		e := *s.lastExit
		st.LastExit = &e
	}
	return st
}

func (s *Service) setState(st State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.since = st, time.Now()
}

// supervise runs the service until its policy or Stop ends it.
func (s *Service) supervise(ctx context.Context) {
	defer close(s.done)
	var wait time.Duration
	for first := true; ; first = false {
		if !first {
			s.mu.Lock()
			s.restarts++
			s.mu.Unlock()
		}
		s.setState(Starting)
		began := time.Now()
		pid, err := s.start()
		var exit Exit
		switch {
		case errors.Is(err, ErrStopped):
			s.setState(Stopped)
			return
		case err != nil:
			s.log.ErrorContext(ctx, "service failed to start", "err", err)
			exit = Exit{Code: -1, Err: err, Time: time.Now()}
		default:
			s.log.InfoContext(ctx, "service started", "pid", pid)
			exit = <-s.exited
			s.log.InfoContext(ctx, "service exited", "pid", pid, "exit", exit.String())
		}

		s.mu.Lock()
		s.pid, s.lastExit = 0, &exit
		s.mu.Unlock()

		if s.sup.isStopping() {
			s.setState(Stopped)
			return
		}
		if !shouldRestart(s.spec.Restart, exit) {
			s.setState(Exited)
			return
		}
		wait = nextBackoff(wait, exit.Time.Sub(began))
		s.setState(Backoff)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-s.sup.stopped:
			t.Stop()
			s.setState(Stopped)
			return
		}
	}
}

func (s *Supervisor) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// start forks the service's process and registers its pid with the reaper. It returns
// ErrStopped, without forking, once Stop has begun.
func (s *Service) start() (pid int, err error) {
	attr, output, closeParentFDs, err := s.procAttr()
	defer closeParentFDs()
	if err != nil {
		return 0, fmt.Errorf("start service %s: %w", s.spec.Name, err)
	}
	argv := append([]string{s.spec.Path}, s.spec.Args...)

	sup := s.sup
	sup.mu.Lock()
	defer sup.mu.Unlock()
	if sup.stopping {
		if output != nil {
			output.Close()
		}
		return 0, ErrStopped
	}
	pid, err = syscall.ForkExec(s.spec.Path, argv, attr)
	if err != nil {
		if output != nil {
			output.Close()
		}
		return 0, fmt.Errorf("start service %s: exec %s: %w", s.spec.Name, s.spec.Path, err)
	}
	sup.running[pid] = s
	s.mu.Lock()
	s.pid, s.state, s.since = pid, Running, time.Now()
	s.mu.Unlock()
	if output != nil {
		go s.copyOutput(output)
	}
	return pid, nil
}

// procAttr opens what the child inherits. closeParentFDs must be called once the child is
// forked (or not): the parent keeps only the read end of the output pipe, so that the pipe
// closes when the last process holding its write end exits.
func (s *Service) procAttr() (attr *syscall.ProcAttr, output io.ReadCloser, closeParentFDs func(), err error) {
	var parentFDs []*os.File
	closeParentFDs = func() {
		for _, f := range parentFDs {
			f.Close()
		}
	}
	fail := func(err error) (*syscall.ProcAttr, io.ReadCloser, func(), error) {
		if output != nil {
			output.Close()
		}
		return nil, nil, closeParentFDs, err
	}

	attr = &syscall.ProcAttr{Dir: s.spec.Dir, Env: s.spec.Env, Sys: &syscall.SysProcAttr{}}
	if s.spec.Console != "" {
		tty, err := os.OpenFile(s.spec.Console, os.O_RDWR|unix.O_NOCTTY, 0)
		if err != nil {
			return fail(fmt.Errorf("open console: %w", err))
		}
		parentFDs = append(parentFDs, tty)
		fd := tty.Fd()
		attr.Files = []uintptr{fd, fd, fd}
		// A new session is also a new process group, and Ctty is the child's fd 0.
		attr.Sys.Setsid, attr.Sys.Setctty, attr.Sys.Ctty = true, true, 0
	} else {
		null, err := os.Open(os.DevNull)
		if err != nil {
			return fail(fmt.Errorf("open stdin: %w", err))
		}
		parentFDs = append(parentFDs, null)
		r, w, err := os.Pipe()
		if err != nil {
			return fail(fmt.Errorf("create output pipe: %w", err))
		}
		output = r
		parentFDs = append(parentFDs, w)
		attr.Files = []uintptr{null.Fd(), w.Fd(), w.Fd()}
		attr.Sys.Setpgid = true
	}
	if s.spec.CgroupDir != "" {
		if err := os.MkdirAll(s.spec.CgroupDir, 0o755); err != nil {
			return fail(fmt.Errorf("create cgroup: %w", err))
		}
		cg, err := os.OpenFile(s.spec.CgroupDir, os.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			return fail(fmt.Errorf("open cgroup: %w", err))
		}
		parentFDs = append(parentFDs, cg)
		attr.Sys.UseCgroupFD, attr.Sys.CgroupFD = true, int(cg.Fd())
	}
	return attr, output, closeParentFDs, nil
}
