package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"ingot.dev/ingot/runtime/errdefs"
	"ingot.dev/ingot/runtime/shim"
	"ingot.dev/ingot/runtime/store"
)

// streamShim is what exec and attach with live streams ask of a pod's shim (a *shim.Client).
type streamShim interface {
	ExecStream(ctx context.Context, id string, process []byte, st shim.Streams) (shim.Exit, error)
	Attach(ctx context.Context, id string, st shim.Streams) (shim.Exit, bool, error)
}

// runningShim finds a running container and its pod's shim, for a streaming call.
func (s *Server) runningShim(op, id string) (*store.Container, streamShim, error) {
	c, sb, err := s.container(id)
	if err != nil {
		return nil, nil, err
	}
	s.refresh(c)
	if s.stateOf(c) != store.Running || sb == nil || sb.shim == nil {
		return nil, nil, fmt.Errorf("%s %s: the container is not running: %w", op, c.ID, errdefs.ErrPrecondition)
	}
	sh, ok := sb.shim.(streamShim)
	if !ok {
		return nil, nil, fmt.Errorf("%s %s: the pod's shim has no streams: %w", op, c.ID, errdefs.ErrUnimplemented)
	}
	return c, sh, nil
}

// execProcess is the process ExecSync and exec run: the container's own, with cmd as its
// arguments (same user, environment, working directory, capabilities and limits).
func execProcess(c *store.Container, cmd []string, tty bool, size *remotecommand.TerminalSize) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(c.Dir, "config.json"))
	if err != nil {
		return nil, fmt.Errorf("container %s: spec: %w", c.ID, err)
	}
	var spec specs.Spec
	if err := json.Unmarshal(data, &spec); err != nil {
		return nil, fmt.Errorf("container %s: spec: %w", c.ID, err)
	}
	if spec.Process == nil {
		return nil, fmt.Errorf("container %s: spec has no process", c.ID)
	}
	proc := *spec.Process
	proc.Args = cmd
	proc.Terminal = tty
	proc.ConsoleSize = nil
	if tty {
		proc.Env = withTerm(proc.Env)
		if size != nil && size.Width > 0 && size.Height > 0 {
			proc.ConsoleSize = &specs.Box{Width: uint(size.Width), Height: uint(size.Height)}
		}
	}
	return json.Marshal(&proc)
}

// withTerm adds TERM=xterm when env has no TERM: a terminal program needs to know what it
// draws on, and kubectl's terminal is an xterm-like one (containerd does the same).
func withTerm(env []string) []string {
	for _, kv := range env {
		if len(kv) >= 5 && kv[:5] == "TERM=" {
			return env
		}
	}
	return append(env[:len(env):len(env)], "TERM=xterm")
}

// execStream runs cmd in a running container with the given streams, for the streaming
// server's exec endpoint: in is the caller's stdin (nil: none), out and errw its stdout and
// stderr (nil: discarded; errw is nil with a tty), resize the terminal's size changes. It
// returns when the command has exited and its output is delivered; a non-zero exit is an error
// with ExitStatus (k8s.io/utils/exec.ExitError), which the server reports as the exit code.
func (s *Server) execStream(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	if len(cmd) == 0 {
		return fmt.Errorf("exec in %s: empty command: %w", id, errdefs.ErrInvalid)
	}
	c, sh, err := s.runningShim("exec in", id)
	if err != nil {
		return err
	}
	var size *remotecommand.TerminalSize
	if tty && resize != nil {
		size, resize = firstSize(ctx, resize)
	}
	proc, err := execProcess(c, cmd, tty, size)
	if err != nil {
		return err
	}
	st := streams(ctx, in, out, errw, tty, resize)
	st.Drain = s.opts.DrainExecSyncIOTimeout
	s.log.Debug("exec", "container", c.ID, "cmd", cmd, "tty", tty)
	ex, err := sh.ExecStream(ctx, c.ID, proc, st)
	if err != nil {
		return err
	}
	if ex.Code != 0 {
		return utilexec.CodeExitError{Err: fmt.Errorf("command %q in %s exited with %d", cmd, c.ID, ex.Code), Code: ex.Code}
	}
	return nil
}

// firstSizeWait bounds how long an exec with a terminal waits for the client's terminal size
// before starting its command. Clients (kubectl, crictl) send it as soon as the streams are up;
// without it the command would start on a 0x0 terminal and could look before the size arrives.
const firstSizeWait = time.Second

// firstSize waits up to firstSizeWait for the client's first terminal size and returns it (nil:
// none came) with the channel of the sizes after it.
func firstSize(ctx context.Context, resize <-chan remotecommand.TerminalSize) (*remotecommand.TerminalSize, <-chan remotecommand.TerminalSize) {
	t := time.NewTimer(firstSizeWait)
	defer t.Stop()
	select {
	case sz, ok := <-resize:
		if !ok {
			return nil, nil
		}
		return &sz, resize
	case <-t.C:
	case <-ctx.Done():
	}
	return nil, resize
}

// attachStream connects the given streams to a running container's main process: in feeds its
// stdin (when the container was created with stdin), out and errw get what it writes from now
// on, while its log keeps being written. It returns when the container exits, the caller goes
// away, or ctx ends.
func (s *Server) attachStream(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	c, sh, err := s.runningShim("attach to", id)
	if err != nil {
		return err
	}
	s.log.Debug("attach", "container", c.ID, "tty", tty)
	_, _, err = sh.Attach(ctx, c.ID, streams(ctx, in, out, errw, tty, resize))
	return err
}

// streams adapts the streaming server's streams to the shim's. Interfaces holding nil pointers
// are not nil: only what the caller asked for is passed on.
func streams(ctx context.Context, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) shim.Streams {
	var st shim.Streams
	if in != nil {
		st.In = in
	}
	if out != nil {
		st.Out = out
	}
	if errw != nil && !tty {
		st.Err = errw
	}
	if tty && resize != nil {
		ch := make(chan shim.Winsize)
		go func() {
			defer close(ch)
			for sz := range resize {
				select {
				case ch <- shim.Winsize{Width: sz.Width, Height: sz.Height}:
				case <-ctx.Done():
					return
				}
			}
		}()
		st.Resize = ch
	}
	return st
}
