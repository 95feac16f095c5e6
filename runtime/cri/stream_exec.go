package cri

import (
	"context"
	"fmt"
	"io"

	"k8s.io/cri-streaming/pkg/streaming/remotecommand"

	"ingot.dev/ingot/runtime/errdefs"
)

// execStream runs cmd in a running container with the given streams, for the streaming
// server's exec endpoint: in is the caller's stdin (nil: none), out and errw its stdout and
// stderr (nil: discarded; errw is nil with a tty), resize the terminal's size changes. It
// returns when the command has exited and its output is delivered; a non-zero exit is an error
// with ExitStatus (k8s.io/utils/exec.ExitError).
func (s *Server) execStream(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return fmt.Errorf("exec in %s: live stdio is being built: %w", id, errdefs.ErrUnimplemented)
}

// attachStream connects the given streams to a running container's main process: in feeds its
// stdin (when the container was created with stdin), out and errw get what it writes from now
// on, while its log keeps being written. It returns when the container exits or the caller's
// stdin and output streams close.
func (s *Server) attachStream(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return fmt.Errorf("attach to %s: live stdio is being built: %w", id, errdefs.ErrUnimplemented)
}
