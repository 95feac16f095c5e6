package shim

import (
	"context"
	"fmt"
	"net"
	"net/rpc"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"ingot.dev/ingot/runtime/oci"
)

// service is the net/rpc face of Server.
type service struct{ s *Server }

func (v *service) Create(a CreateArgs, pid *int) (err error)  { *pid, err = v.s.create(a); return }
func (v *service) Start(id string, _ *struct{}) error         { return v.s.start(id) }
func (v *service) State(id string, st *State) error           { *st = v.s.state(id); return nil }
func (v *service) Signal(a SignalArgs, _ *struct{}) error     { return v.s.signal(a) }
func (v *service) Remove(id string, _ *struct{}) error        { return v.s.remove(id) }
func (v *service) Exec(a ExecArgs, r *ExecResult) (err error) { *r, err = v.s.exec(a); return }
func (v *service) Reopen(id string, _ *struct{}) error        { return v.s.reopen(id) }
func (v *service) Stats(id string, u *oci.Usage) (err error)  { *u, err = v.s.stats(id); return }
func (v *service) Update(a UpdateArgs, _ *struct{}) error     { return v.s.update(a) }
func (v *service) Shutdown(_ struct{}, _ *struct{}) error {
	go func() {
		time.Sleep(10 * time.Millisecond) // let the reply go out first
		v.s.shutdown()
	}()
	return nil
}

// Client talks to one shim.
type Client struct {
	rpc *rpc.Client
	Dir string
}

// Dial connects to the shim listening on socket; dir is its directory, for messages.
func Dial(dir, socket string) (*Client, error) {
	conn, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("shim %s: %w", dir, err)
	}
	return &Client{rpc: rpc.NewClient(conn), Dir: dir}, nil
}

// Spawn starts a shim (exe shim --dir dir --socket socket) in its own session and connects to
// it. The socket is separate from the directory because a unix socket path is limited to 108
// bytes and pod directories are long.
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
	os.Remove(socket)
	cmd := exec.Command(exe, append([]string{"shim", "--dir", dir, "--socket", socket}, args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	// Its own session: the daemon's death or a signal to the daemon's group leaves it running.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start shim for %s: %w", dir, err)
	}
	go cmd.Wait() // reap it if it exits while we live; otherwise init does
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := Dial(dir, socket)
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			cmd.Process.Kill()
			return nil, fmt.Errorf("shim for %s did not come up: %w", dir, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
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
