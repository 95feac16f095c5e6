package cri

import (
	"context"
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
	"ingot.dev/ingot/runtime/store"
)

// Exec hands out a URL on the streaming server where the client runs cmd in a running container
// with its streams attached (execStream does the work once the client connects).
func (s *Server) Exec(ctx context.Context, r *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	if len(r.GetCmd()) == 0 {
		return nil, s.grpcErr("Exec", fmt.Errorf("exec: empty command: %w", errdefs.ErrInvalid))
	}
	id, err := s.streamableContainer(r.GetContainerId())
	if err != nil {
		return nil, s.grpcErr("Exec", err)
	}
	ss := s.streamServer()
	if ss == nil {
		return nil, s.grpcErr("Exec", fmt.Errorf("exec in %s: the streaming server is not running: %w", id, errdefs.ErrPrecondition))
	}
	req := &runtimeapi.ExecRequest{ContainerId: id, Cmd: r.GetCmd(), Tty: r.GetTty(),
		Stdin: r.GetStdin(), Stdout: r.GetStdout(), Stderr: r.GetStderr()}
	resp, err := ss.lib.GetExec(req)
	if err != nil {
		return nil, s.grpcErr("Exec", err, "container", id)
	}
	return resp, nil
}

// Attach hands out a URL on the streaming server where the client attaches to a running
// container's main process (attachStream does the work once the client connects).
func (s *Server) Attach(ctx context.Context, r *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	id, err := s.streamableContainer(r.GetContainerId())
	if err != nil {
		return nil, s.grpcErr("Attach", err)
	}
	ss := s.streamServer()
	if ss == nil {
		return nil, s.grpcErr("Attach", fmt.Errorf("attach to %s: the streaming server is not running: %w", id, errdefs.ErrPrecondition))
	}
	req := &runtimeapi.AttachRequest{ContainerId: id, Tty: r.GetTty(),
		Stdin: r.GetStdin(), Stdout: r.GetStdout(), Stderr: r.GetStderr()}
	resp, err := ss.lib.GetAttach(req)
	if err != nil {
		return nil, s.grpcErr("Attach", err, "container", id)
	}
	return resp, nil
}

// streamableContainer resolves id to a running container's full id, with the errors ExecSync
// gives: NotFound for an unknown container, FailedPrecondition for one that is not running. The
// full id goes into the URL's request: it outlives this call and a prefix may become ambiguous.
func (s *Server) streamableContainer(id string) (string, error) {
	c, sb, err := s.container(id)
	if err != nil {
		return "", err
	}
	s.refresh(c)
	if s.stateOf(c) != store.Running || sb == nil || sb.shim == nil {
		return "", fmt.Errorf("container %s is not running: %w", c.ID, errdefs.ErrPrecondition)
	}
	return c.ID, nil
}
