package shim

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"ingot.dev/ingot/runtime/logs"
)

// A container's stdio, as the shim holds it:
//
//   - output: each stream (or the terminal, for a tty container) is read by the shim, which
//     writes it to the CRI log and hands a copy to every client attached at that moment;
//   - stdin: when the container was created with stdin, the shim holds the pipe's write end (or
//     the terminal's master) and attached clients write into it. With stdin_once the first
//     attached client that ends its stdin closes the container's.
//
// The daemon attaches, and runs commands with live streams (exec), over stream connections to
// the shim's socket (stream.go); the pipes it passes are what the shim reads and writes.

// fanout copies a container's output to the clients attached to it. A client that does not
// keep up is detached rather than allowed to stall the container's log.
type fanout struct {
	mu    sync.Mutex
	sinks map[*sink]struct{}
}

// sinkQueue is how many reads of output a slow client may fall behind before it is detached.
const sinkQueue = 256

type sink struct {
	f    *os.File
	ch   chan []byte
	once sync.Once
	done chan struct{} // closed when the writer has stopped and f is closed
}

func newSink(f *os.File) *sink {
	k := &sink{f: f, ch: make(chan []byte, sinkQueue), done: make(chan struct{})}
	go func() {
		defer close(k.done)
		defer f.Close()
		for b := range k.ch {
			if _, err := f.Write(b); err != nil {
				// The client went away: drop what is queued and stop.
				for range k.ch {
				}
				return
			}
		}
	}()
	return k
}

// close ends the sink once what is queued is written.
func (k *sink) close() { k.once.Do(func() { close(k.ch) }) }

func (o *fanout) add(k *sink) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.sinks == nil {
		o.sinks = map[*sink]struct{}{}
	}
	o.sinks[k] = struct{}{}
}

func (o *fanout) remove(k *sink) {
	o.mu.Lock()
	delete(o.sinks, k)
	o.mu.Unlock()
	k.close()
}

// Write hands p to every sink; it never blocks and never fails, so the log copy goes on.
func (o *fanout) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.sinks) == 0 {
		return len(p), nil
	}
	b := append([]byte(nil), p...)
	for k := range o.sinks {
		select {
		case k.ch <- b:
		default:
			delete(o.sinks, k)
			k.close()
		}
	}
	return len(p), nil
}

// closeAll detaches every client (the container has exited and its output is complete).
func (o *fanout) closeAll() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for k := range o.sinks {
		k.close()
	}
	o.sinks = nil
}

// stdio is what create sets up for a container's process.
type stdio struct {
	// closeAfterStart are the child's ends, closed once the process holds its own copies.
	closeAfterStart []*os.File
	// consoleParent receives the terminal's master from runc init (tty containers).
	consoleParent *os.File
	// readers are the shim's ends of stdout and stderr, read once the process has started.
	readers map[logs.Stream]*os.File
}

// setupStdio gives p its stdio for a container created with stdin/tty as asked, with output
// kept when capture (a log or a client may want it); otherwise output goes to /dev/null.
func setupStdio(p *libcontainer.Process, c *container, stdin, tty, capture bool) (*stdio, error) {
	st := &stdio{readers: map[logs.Stream]*os.File{}}
	fail := func(err error) (*stdio, error) {
		st.close()
		return nil, err
	}
	if tty {
		parent, child, err := socketpair()
		if err != nil {
			return fail(err)
		}
		st.consoleParent = parent
		st.closeAfterStart = append(st.closeAfterStart, child)
		p.ConsoleSocket = child
		return st, nil
	}
	if capture {
		for _, name := range []logs.Stream{logs.Stdout, logs.Stderr} {
			r, w, err := os.Pipe()
			if err != nil {
				return fail(err)
			}
			st.readers[name] = r
			st.closeAfterStart = append(st.closeAfterStart, w)
			if name == logs.Stdout {
				p.Stdout = w
			} else {
				p.Stderr = w
			}
		}
	}
	if stdin {
		r, w, err := os.Pipe()
		if err != nil {
			return fail(err)
		}
		p.Stdin = r
		st.closeAfterStart = append(st.closeAfterStart, r)
		c.stdin = w
	} else {
		devnull, err := os.Open(os.DevNull)
		if err != nil {
			return fail(err)
		}
		p.Stdin = devnull
		st.closeAfterStart = append(st.closeAfterStart, devnull)
	}
	return st, nil
}

// started closes the child's ends and, for a tty, receives the terminal's master.
func (st *stdio) started(c *container) error {
	for _, f := range st.closeAfterStart {
		f.Close()
	}
	st.closeAfterStart = nil
	if st.consoleParent == nil {
		return nil
	}
	defer func() { st.consoleParent.Close(); st.consoleParent = nil }()
	m, err := recvFile(st.consoleParent, "console of "+c.id)
	if err != nil {
		return err
	}
	c.console = m
	return nil
}

// close releases everything after a failed start.
func (st *stdio) close() {
	for _, f := range st.closeAfterStart {
		f.Close()
	}
	for _, r := range st.readers {
		r.Close()
	}
	if st.consoleParent != nil {
		st.consoleParent.Close()
	}
}

// socketpair makes the pair libcontainer sends a terminal's master over. Receiving waits at
// most consoleTimeout: runc init sends the master before the process is reported started, so
// a longer wait means it never will.
func socketpair() (parent, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("console socket: %w", err)
	}
	tv := unix.NsecToTimeval(consoleTimeout.Nanoseconds())
	unix.SetsockoptTimeval(fds[0], unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	return os.NewFile(uintptr(fds[0]), "console-parent"), os.NewFile(uintptr(fds[1]), "console-child"), nil
}

const consoleTimeout = 10 * time.Second

// pump copies one output stream of a container into its log (w; nil: no log) and to the
// clients attached to it, until the stream ends. A terminal master reports the end of the
// output as EIO once no process holds the terminal open: that is its EOF.
func pump(log *slog.Logger, id string, name logs.Stream, r io.Reader, w *logs.Writer, out *fanout) {
	tee := io.TeeReader(eioIsEOF{r}, out)
	var err error
	if w != nil {
		err = w.Copy(name, tee)
	} else {
		_, err = io.Copy(io.Discard, tee)
	}
	if err != nil {
		log.Warn("container output", "container", id, "stream", string(name), "err", err)
	}
}

type eioIsEOF struct{ r io.Reader }

func (e eioIsEOF) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if errors.Is(err, syscall.EIO) {
		err = io.EOF
	}
	return n, err
}

// resize sets a terminal's size.
func resize(console *os.File, w, h uint16) error {
	if console == nil {
		return errors.New("not a terminal")
	}
	rc, err := console.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Col: w, Row: h})
	}); err != nil {
		return err
	}
	return ierr
}
