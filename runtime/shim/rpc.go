package shim

import (
	"bufio"
	"context"
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"net"
	"net/rpc"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"ingot.dev/ingot/runtime/oci"
)

// service is the net/rpc face of Server.
type service struct{ s *Server }

func (v *service) Create(a CreateArgs, pid *int) (err error)  { *pid, err = v.s.create(a); return }
func (v *service) Start(id string, _ *struct{}) error         { return v.s.start(id) }
func (v *service) State(id string, st *State) error           { *st = v.s.state(id); return nil }
func (v *service) Wait(a WaitArgs, st *State) error           { *st = v.s.wait(a.ID, a.Timeout); return nil }
func (v *service) Signal(a SignalArgs, _ *struct{}) error     { return v.s.signal(a) }
func (v *service) Remove(id string, _ *struct{}) error        { return v.s.remove(id) }
func (v *service) Exec(a ExecArgs, r *ExecResult) (err error) { *r, err = v.s.exec(a); return }
func (v *service) Reopen(id string, _ *struct{}) error        { return v.s.reopen(id) }
func (v *service) Stats(id string, u *oci.Usage) (err error)  { *u, err = v.s.stats(id); return }
func (v *service) Update(a UpdateArgs, _ *struct{}) error     { return v.s.update(a) }

// Shutdown destroys every container and answers; the shim exits once that answer is written
// (serverCodec), so the daemon gets it and finds nothing of the pod's left in the shim.
func (v *service) Shutdown(_ struct{}, _ *struct{}) error {
	v.s.removeAll()
	return nil
}

// serverCodec is the gob encoding net/rpc speaks (what rpc.ServeConn uses, so every client
// understands it), and it calls shutdown once the reply to Shutdown has been flushed to the
// connection: the shim's exit cannot overtake its last answer.
type serverCodec struct {
	conn     io.ReadWriteCloser
	dec      *gob.Decoder
	enc      *gob.Encoder
	w        *bufio.Writer
	shutdown func()
}

func newServerCodec(conn io.ReadWriteCloser, shutdown func()) *serverCodec {
	w := bufio.NewWriter(conn)
	return &serverCodec{conn: conn, dec: gob.NewDecoder(conn), enc: gob.NewEncoder(w), w: w, shutdown: shutdown}
}

func (c *serverCodec) ReadRequestHeader(r *rpc.Request) error { return c.dec.Decode(r) }
func (c *serverCodec) ReadRequestBody(body any) error         { return c.dec.Decode(body) }
func (c *serverCodec) Close() error                           { return c.conn.Close() }

func (c *serverCodec) WriteResponse(r *rpc.Response, body any) error {
	err := c.enc.Encode(r)
	if err == nil {
		err = c.enc.Encode(body)
	}
	if err == nil {
		err = c.w.Flush()
	}
	if r.ServiceMethod == "Shim.Shutdown" {
		// Even when the daemon is gone and the reply is lost: it asked, and nothing is left.
		defer c.shutdown()
	}
	if err != nil {
		c.conn.Close()
		return fmt.Errorf("shim: reply to %s: %w", r.ServiceMethod, err)
	}
	return nil
}

// Client talks to one shim.
type Client struct {
	rpc    *rpc.Client
	Dir    string
	socket string // for stream connections (stream.go)
}

// Dial connects to the shim listening on socket; dir is its directory, for messages.
func Dial(dir, socket string) (*Client, error) {
	conn, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("shim %s: %w", dir, err)
	}
	return &Client{rpc: rpc.NewClient(conn), Dir: dir, socket: socket}, nil
}

// Spawn starts a shim (exe shim --dir dir --socket socket) in its own session and connects to
// it. The socket is separate from the directory because a unix socket path is limited to 108
// bytes and pod directories are long. Spawn listens on the socket itself and hands the listener
// to the shim, so the connection is accepted as soon as the shim serves, with nothing to wait
// for; a shim that dies first fails the first call, and its shim.log says why.
func Spawn(ctx context.Context, exe, dir, socket string, args ...string) (*Client, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("shim %s: %w", dir, err)
	}
	logf, err := os.OpenFile(filepath.Join(dir, "shim.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shim %s: %w", dir, err)
	}
	defer logf.Close()
	if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
		return nil, fmt.Errorf("shim socket directory: %w", err)
	}
	lf, err := listenFile(socket)
	if err != nil {
		return nil, fmt.Errorf("shim %s: %w", dir, err)
	}
	defer lf.Close() // the shim holds its own copy
	cmd := exec.Command(exe, append([]string{"shim", "--dir", dir, "--socket", socket, "--listen-fd", "3"}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{lf} // descriptor 3
	// One P: a shim's work is one call at a time, and each further P keeps its own span caches
	// and GC worker: GOMAXPROCS=1 takes about 330 KiB PSS off every pod (BenchmarkPodStart,
	// 20 pods: 3975 -> 3618 KiB per pod, start median unchanged), more than on any other knob
	// tried (GOGC and GOMEMLIMIT, which make the runtime collect, cost more than they free).
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1")
	cmd.Dir = "/"
	// Its own session: the daemon's death or a signal to the daemon's group leaves it running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		os.Remove(socket)
		return nil, fmt.Errorf("start shim for %s: %w", dir, err)
	}
	go cmd.Wait() // reap it if it exits while we live; otherwise init does
	c, err := Dial(dir, socket)
	if err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	return c, nil
}

// listenFile listens on a unix socket at path, replacing a stale one, and returns the listener
// as a file for a shim to inherit; the socket stays when the file is closed.
func listenFile(path string) (*os.File, error) {
	os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	l.SetUnlinkOnClose(false)
	defer l.Close()
	return l.File()
}

func (c *Client) call(method string, args, reply any) error {
	if err := c.rpc.Call("Shim."+method, args, reply); err != nil {
		return fmt.Errorf("shim %s: %s: %w", filepath.Base(c.Dir), method, err)
	}
	return nil
}

func (c *Client) Create(a CreateArgs) (int, error) {
	var pid int
	err := c.call("Create", a, &pid)
	return pid, err
}
func (c *Client) Start(id string) error { return c.call("Start", id, &struct{}{}) }
func (c *Client) State(id string) (State, error) {
	var st State
	err := c.call("State", id, &st)
	return st, err
}

// Wait returns the container's state once it has exited, or when timeout passes (Exited false)
// or ctx ends (an error). The shim answers when it records the exit, so a stop takes as long as
// the container does.
func (c *Client) Wait(ctx context.Context, id string, timeout time.Duration) (State, error) {
	var st State
	call := c.rpc.Go("Shim.Wait", WaitArgs{ID: id, Timeout: timeout}, &st, make(chan *rpc.Call, 1))
	select {
	case <-call.Done:
	case <-ctx.Done():
		// The shim still answers at its timeout; net/rpc drops the late reply.
		return State{}, fmt.Errorf("shim %s: Wait for %s: %w", filepath.Base(c.Dir), id, ctx.Err())
	}
	var se rpc.ServerError
	if errors.As(call.Error, &se) && strings.HasPrefix(string(se), "rpc: can't find method") {
		// A shim started by the previous binary (it outlived a daemon upgrade) has no Wait:
		// ask for its state until the container has exited, as the daemon used to.
		return c.pollExit(ctx, id, timeout)
	}
	if call.Error != nil {
		return State{}, fmt.Errorf("shim %s: Wait for %s: %w", filepath.Base(c.Dir), id, call.Error)
	}
	return st, nil
}

// pollExit is Wait for a shim without it: State every 20ms.
func (c *Client) pollExit(ctx context.Context, id string, timeout time.Duration) (State, error) {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		st, err := c.State(id)
		if err != nil || st.Exited || st.NotFound || time.Now().After(deadline) {
			return st, err
		}
		select {
		case <-ctx.Done():
			return State{}, fmt.Errorf("shim %s: Wait for %s: %w", filepath.Base(c.Dir), id, ctx.Err())
		case <-tick.C:
		}
	}
}

func (c *Client) Signal(id string, sig syscall.Signal, all bool) error {
	return c.call("Signal", SignalArgs{ID: id, Signal: int(sig), All: all}, &struct{}{})
}
func (c *Client) Remove(id string) error { return c.call("Remove", id, &struct{}{}) }
func (c *Client) Exec(a ExecArgs) (ExecResult, error) {
	var r ExecResult
	err := c.call("Exec", a, &r)
	return r, err
}
func (c *Client) Reopen(id string) error    { return c.call("Reopen", id, &struct{}{}) }
func (c *Client) Update(a UpdateArgs) error { return c.call("Update", a, &struct{}{}) }
func (c *Client) Stats(id string) (oci.Usage, error) {
	var u oci.Usage
	err := c.call("Stats", id, &u)
	return u, err
}
func (c *Client) Shutdown() error { return c.call("Shutdown", struct{}{}, &struct{}{}) }
func (c *Client) Close() error    { return c.rpc.Close() }
