package shim

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"ingot.dev/ingot/runtime/oci"
)

// Stream connections. Besides net/rpc, the shim's socket takes connections that carry one
// interactive session each: an exec with live stdio, or an attach to a container's process.
//
// The daemon opens one and sends a single zero byte with the session's pipe ends attached
// (SCM_RIGHTS: the read end of stdin, the write ends of stdout and stderr, those asked for, in
// that order), then one JSON line, a streamRequest. net/rpc's gob encoding never begins a
// connection with a zero byte (its first byte is the length of a type definition), so the shim
// tells the two apart by the first byte. After the request, the daemon sends JSON lines with
// terminal sizes; the shim answers with JSON lines: one streamEvent saying the session started
// or why not, and one when it ended, with the exit status. Closing the connection ends the
// session: an attached client is detached, an exec's terminal is hung up.
//
// The bytes themselves never cross the socket: the shim reads and writes the pipes the daemon
// gave it, or gives them to the process itself (an exec without a terminal).

const streamMagic = 0

type streamRequest struct {
	Op                    string // "exec" or "attach"
	ID                    string // container
	Process               []byte // exec: the OCI process, as JSON
	Stdin, Stdout, Stderr bool   // which pipe ends came with the request
}

type streamMessage struct {
	Resize *Winsize `json:",omitempty"`
}

type streamEvent struct {
	Started bool   `json:",omitempty"`
	Error   string `json:",omitempty"`
	Exited  bool   `json:",omitempty"`
	Exit    Exit
}

// Winsize is a terminal's size, in characters.
type Winsize struct{ Width, Height uint16 }

// handle serves one connection to the shim's socket: a stream session, or net/rpc.
func (s *Server) handle(srv *rpc.Server, conn net.Conn) {
	uc, ok := conn.(*net.UnixConn)
	if !ok {
		srv.ServeCodec(newServerCodec(conn, s.stop))
		return
	}
	var first [1]byte
	n, files, err := recvFiles(uc, first[:])
	if err != nil || n == 0 {
		closeFiles(files)
		conn.Close()
		return
	}
	if first[0] == streamMagic {
		s.serveStream(uc, files)
		return
	}
	closeFiles(files) // net/rpc sends none
	srv.ServeCodec(newServerCodec(&prefixed{Reader: io.MultiReader(bytes.NewReader(first[:n]), conn), Conn: conn}, s.stop))
}

// prefixed is a connection whose first bytes were already read.
type prefixed struct {
	io.Reader
	net.Conn
}

func (p *prefixed) Read(b []byte) (int, error) { return p.Reader.Read(b) }

func closeFiles(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}

// session is one stream connection, shim side.
type session struct {
	conn *net.UnixConn
	rd   *bufio.Reader
	mu   sync.Mutex // serialises events
}

func (ss *session) send(ev streamEvent) {
	b, _ := json.Marshal(ev)
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.conn.Write(append(b, '\n'))
}

// messages reads the client's messages and calls onResize for each size, until the client
// closes the connection; then it closes gone.
func (ss *session) messages(onResize func(Winsize), gone chan<- struct{}) {
	defer close(gone)
	for {
		line, err := ss.rd.ReadBytes('\n')
		if err != nil {
			return
		}
		var m streamMessage
		if json.Unmarshal(line, &m) == nil && m.Resize != nil {
			onResize(*m.Resize)
		}
	}
}

func (s *Server) serveStream(conn *net.UnixConn, files []*os.File) {
	defer conn.Close()
	ss := &session{conn: conn, rd: bufio.NewReader(conn)}
	fail := func(err error) {
		closeFiles(files)
		ss.send(streamEvent{Error: err.Error()})
	}
	line, err := ss.rd.ReadBytes('\n')
	if err != nil {
		fail(fmt.Errorf("stream: read request: %w", err))
		return
	}
	var req streamRequest
	if err := json.Unmarshal(line, &req); err != nil {
		fail(fmt.Errorf("stream: request: %w", err))
		return
	}
	var stdin, stdout, stderr *os.File
	want := 0
	for _, w := range []bool{req.Stdin, req.Stdout, req.Stderr} {
		if w {
			want++
		}
	}
	if len(files) != want {
		fail(fmt.Errorf("stream %s %s: got %d descriptors, want %d", req.Op, req.ID, len(files), want))
		return
	}
	rest := files
	take := func(ok bool) *os.File {
		if !ok {
			return nil
		}
		f := rest[0]
		rest = rest[1:]
		return f
	}
	stdin, stdout, stderr = take(req.Stdin), take(req.Stdout), take(req.Stderr)
	c, err := s.get(req.ID)
	if err != nil {
		fail(err)
		return
	}
	switch req.Op {
	case "exec":
		s.execStream(ss, c, req.Process, stdin, stdout, stderr)
	case "attach":
		s.attach(ss, c, stdin, stdout, stderr)
	default:
		fail(fmt.Errorf("stream: unknown operation %q", req.Op))
	}
}

// execStream runs a process in c with the client's pipes as its stdio, or, when the process
// asks for a terminal, with a terminal whose master the shim copies to and from the pipes.
func (s *Server) execStream(ss *session, c *container, process []byte, stdin, stdout, stderr *os.File) {
	var owned []*os.File // closed when the session ends
	for _, f := range []*os.File{stdin, stdout, stderr} {
		if f != nil {
			owned = append(owned, f)
		}
	}
	defer func() { closeFiles(owned) }()
	fail := func(err error) { ss.send(streamEvent{Error: err.Error()}) }
	select {
	case <-c.exited:
		fail(fmt.Errorf("exec in %s: the container is not running", c.id))
		return
	default:
	}
	var proc specs.Process
	if err := json.Unmarshal(process, &proc); err != nil {
		fail(fmt.Errorf("exec in %s: process: %w", c.id, err))
		return
	}
	p, err := oci.Process(&proc, false)
	if err != nil {
		fail(err)
		return
	}
	var consoleParent, consoleChild *os.File
	if proc.Terminal {
		if consoleParent, consoleChild, err = socketpair(); err != nil {
			fail(err)
			return
		}
		defer consoleParent.Close()
		p.ConsoleSocket = consoleChild
	} else {
		// The process gets the pipes themselves; a missing stdin reads as empty.
		if stdin == nil {
			devnull, err := os.Open(os.DevNull)
			if err != nil {
				fail(err)
				return
			}
			owned = append(owned, devnull)
			p.Stdin = devnull
		} else {
			p.Stdin = stdin
		}
		if stdout != nil {
			p.Stdout = stdout
		}
		if stderr != nil {
			p.Stderr = stderr
		}
	}
	err = c.lc.Run(p)
	if consoleChild != nil {
		consoleChild.Close()
	}
	if err != nil {
		fail(fmt.Errorf("exec in %s: %w", c.id, err))
		return
	}
	pid, _ := p.Pid()
	var (
		console *os.File
		output  sync.WaitGroup
	)
	if proc.Terminal {
		if console, err = recvFile(consoleParent, "console of exec in "+c.id); err != nil {
			killGroup(p, pid)
			p.Wait()
			fail(err)
			return
		}
		defer console.Close()
		output.Add(1)
		go func() {
			defer output.Done()
			dst := io.Writer(io.Discard)
			if stdout != nil {
				dst = stdout
			}
			io.Copy(dst, eioIsEOF{console})
		}()
		if stdin != nil {
			go io.Copy(console, stdin) // ends when the client closes stdin, or the terminal
		}
	} else {
		// The process holds its own copies; ours would keep the client's pipes open.
		closeFiles(owned)
		owned = nil
	}
	ss.send(streamEvent{Started: true})

	gone := make(chan struct{})
	go ss.messages(func(w Winsize) {
		if console != nil {
			resize(console, w.Width, w.Height)
		}
	}, gone)
	done := make(chan *os.ProcessState, 1)
	go func() {
		st, _ := p.Wait()
		done <- st
	}()
	var st *os.ProcessState
	select {
	case st = <-done:
	case <-gone:
		// The client left. A terminal is hung up, as when a terminal window closes: the kernel
		// sends SIGHUP to the session the process leads. A process with pipes reads EOF and
		// gets EPIPE on its own.
		if console != nil {
			console.Close()
		}
		st = <-done
	}
	if console != nil {
		// What the process wrote before it exited is still in the terminal; children left
		// holding it are not waited for long.
		drained := make(chan struct{})
		go func() { output.Wait(); close(drained) }()
		select {
		case <-drained:
		case <-time.After(killedGroupDrain):
		}
	}
	ss.send(streamEvent{Exited: true, Exit: exitOf(st)})
}

// exitOf reads how a process ended.
func exitOf(st *os.ProcessState) Exit {
	ex := Exit{Finished: time.Now()}
	if st == nil {
		return ex
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		ex.Signal = int(ws.Signal())
		ex.Code = 128 + ex.Signal
	} else {
		ex.Code = st.ExitCode()
	}
	return ex
}

// attach connects a client to c's process: its output from now on goes to the client's pipes
// as well as the log, and the client's stdin to the container's, until the container exits or
// the client leaves.
func (s *Server) attach(ss *session, c *container, stdin, stdout, stderr *os.File) {
	select {
	case <-c.exited:
		closeFiles([]*os.File{stdin, stdout, stderr})
		ss.send(streamEvent{Error: fmt.Sprintf("attach to %s: the container is not running", c.id)})
		return
	default:
	}
	var sinks []struct {
		o *fanout
		k *sink
	}
	for i, f := range []*os.File{stdout, stderr} {
		if f == nil {
			continue
		}
		k := newSink(f)
		c.out[i].add(k)
		sinks = append(sinks, struct {
			o *fanout
			k *sink
		}{&c.out[i], k})
	}
	if stdin != nil {
		c.stdinMu.Lock()
		w := c.stdin
		c.stdinMu.Unlock()
		if w == nil {
			stdin.Close() // created without stdin, or stdin_once closed it: nothing to write to
		} else {
			go func() {
				defer stdin.Close()
				io.Copy(w, stdin)
				if c.stdinOnce {
					c.closeStdin()
				}
			}()
		}
	}
	ss.send(streamEvent{Started: true})
	gone := make(chan struct{})
	go ss.messages(func(w Winsize) {
		if c.console != nil {
			resize(c.console, w.Width, w.Height)
		}
	}, gone)
	select {
	case <-c.exited:
	case <-gone:
	}
	for _, x := range sinks {
		x.o.remove(x.k)
		<-x.k.done // what was queued is written before the client hears the end
	}
	s.mu.Lock()
	ex, exited := c.exit, false
	s.mu.Unlock()
	select {
	case <-c.exited:
		exited = true
	default:
	}
	ss.send(streamEvent{Exited: exited, Exit: ex})
}

// closeStdin closes the container's stdin once (a pipe: the process reads EOF). A terminal's
// master stays open: closing it would hang up the container's output too.
func (c *container) closeStdin() {
	c.stdinMu.Lock()
	defer c.stdinMu.Unlock()
	if c.stdin == nil || c.stdin == io.WriteCloser(c.console) {
		return
	}
	c.stdin.Close()
	c.stdin = nil
}

// Streams are a session's client side: In feeds stdin (nil: none), Out and Err receive the
// output (nil: not wanted; Err is nil with a terminal), Resize carries the terminal's sizes.
type Streams struct {
	In       io.Reader
	Out, Err io.Writer
	Resize   <-chan Winsize
	// Drain bounds how long output is still read after an exec'd command exited while
	// processes it left hold its stdout or stderr; 0: until they close it.
	Drain time.Duration
}

// ExecStream runs process (OCI, as JSON; process.terminal asks for a tty) in container id with live
// streams, and returns how it exited once its output is delivered.
func (c *Client) ExecStream(ctx context.Context, id string, process []byte, st Streams) (Exit, error) {
	return c.stream(ctx, streamRequest{Op: "exec", ID: id, Process: process}, st)
}

// Attach connects streams to container id's process until it exits (exited true, with its
// exit) or the caller ends: ctx is done, In reaches EOF with nothing else to wait for, or Out
// can no longer be written.
func (c *Client) Attach(ctx context.Context, id string, st Streams) (ex Exit, exited bool, err error) {
	ex, err = c.stream(ctx, streamRequest{Op: "attach", ID: id}, st)
	var nx *notExited
	if errors.As(err, &nx) {
		return Exit{}, false, nil
	}
	return ex, err == nil, err
}

type notExited struct{}

func (*notExited) Error() string { return "session ended before the process exited" }

func (c *Client) stream(ctx context.Context, req streamRequest, st Streams) (Exit, error) {
	name := fmt.Sprintf("shim %s: %s %s", filepath.Base(c.Dir), req.Op, req.ID)
	if c.socket == "" {
		return Exit{}, fmt.Errorf("%s: no socket to open a stream on", name)
	}
	d := net.Dialer{Timeout: 5 * time.Second}
	nc, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return Exit{}, fmt.Errorf("%s: %w", name, err)
	}
	conn := nc.(*net.UnixConn)
	defer conn.Close()

	// The pipes: ours are the ends the daemon writes stdin to and reads output from; the
	// other ends go to the shim and are closed here once sent.
	var ours, pass []*os.File
	defer func() { closeFiles(ours); closeFiles(pass) }()
	var stdinW, stdoutR, stderrR *os.File
	for _, p := range []struct {
		want   bool
		in     bool
		ourEnd **os.File
		flag   *bool
	}{{st.In != nil, true, &stdinW, &req.Stdin}, {st.Out != nil, false, &stdoutR, &req.Stdout}, {st.Err != nil, false, &stderrR, &req.Stderr}} {
		if !p.want {
			continue
		}
		r, w, err := os.Pipe()
		if err != nil {
			return Exit{}, fmt.Errorf("%s: %w", name, err)
		}
		*p.flag = true
		if p.in {
			*p.ourEnd = w
			ours, pass = append(ours, w), append(pass, r)
		} else {
			*p.ourEnd = r
			ours, pass = append(ours, r), append(pass, w)
		}
	}
	hdr, _ := json.Marshal(req)
	if err := sendFiles(conn, []byte{streamMagic}, pass...); err != nil {
		return Exit{}, fmt.Errorf("%s: %w", name, err)
	}
	if _, err := conn.Write(append(hdr, '\n')); err != nil {
		return Exit{}, fmt.Errorf("%s: %w", name, err)
	}
	// The shim holds the passed ends now; ours would keep its output pipes from ending.
	closeFiles(pass)
	pass = nil
	rd := bufio.NewReader(conn)
	ev, err := readEvent(rd)
	if err != nil {
		return Exit{}, fmt.Errorf("%s: %w (a shim started by an older ingot has no streams)", name, err)
	}
	if ev.Error != "" {
		return Exit{}, fmt.Errorf("%s: %s", name, ev.Error)
	}

	var (
		output  sync.WaitGroup
		outDone = make(chan struct{})
		outFail = make(chan struct{}, 2) // a client's writer failed: it went away
	)
	copyOut := func(dst io.Writer, src *os.File) {
		output.Add(1)
		go func() {
			defer output.Done()
			if _, err := io.Copy(dst, src); err != nil && !errors.Is(err, os.ErrClosed) {
				outFail <- struct{}{}
			}
		}()
	}
	if stdoutR != nil {
		copyOut(st.Out, stdoutR)
	}
	if stderrR != nil {
		copyOut(st.Err, stderrR)
	}
	go func() { output.Wait(); close(outDone) }()
	if stdinW != nil {
		go func() {
			io.Copy(stdinW, st.In)
			stdinW.Close() // the process (or, for attach, the shim) reads EOF
		}()
	}
	stop := make(chan struct{})
	defer close(stop)
	if st.Resize != nil {
		go func() {
			for {
				select {
				case <-stop:
					return
				case w, ok := <-st.Resize:
					if !ok {
						return
					}
					b, _ := json.Marshal(streamMessage{Resize: &w})
					conn.Write(append(b, '\n'))
				}
			}
		}()
	}
	events := make(chan streamEvent, 1)
	go func() {
		ev, err := readEvent(rd)
		if err != nil {
			ev = streamEvent{Error: err.Error()}
		}
		events <- ev
	}()

	select {
	case ev = <-events:
	case <-ctx.Done():
		return Exit{}, fmt.Errorf("%s: %w", name, ctx.Err())
	case <-outFail:
		// The client went away. Closing the connection detaches an attach and hangs up an
		// exec's terminal; an exec without one gets EPIPE when it next writes.
		if req.Op == "attach" {
			return Exit{}, &notExited{}
		}
		return Exit{}, fmt.Errorf("%s: the client went away", name)
	}
	if !ev.Exited {
		if req.Op == "attach" && ev.Error == "" {
			return Exit{}, &notExited{}
		}
		return Exit{}, fmt.Errorf("%s: session ended: %s", name, ev.Error)
	}
	// The output written before the exit is in the pipes; wait for it.
	var drain <-chan time.Time
	if st.Drain > 0 {
		t := time.NewTimer(st.Drain)
		defer t.Stop()
		drain = t.C
	}
	select {
	case <-outDone:
	case <-drain:
	case <-ctx.Done():
	}
	return ev.Exit, nil
}

func readEvent(rd *bufio.Reader) (streamEvent, error) {
	line, err := rd.ReadBytes('\n')
	if err != nil {
		return streamEvent{}, err
	}
	var ev streamEvent
	if err := json.Unmarshal(line, &ev); err != nil {
		return streamEvent{}, fmt.Errorf("bad event %q: %w", line, err)
	}
	return ev, nil
}
