package cri

import (
	"context"
	"fmt"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
	"ingot.dev/ingot/runtime/shim"
	"ingot.dev/ingot/runtime/store"
)

// ExecSync runs a command in a running container with the container's user, environment and
// working directory, and returns its output and exit code.
func (s *Server) ExecSync(ctx context.Context, r *runtimeapi.ExecSyncRequest) (*runtimeapi.ExecSyncResponse, error) {
	if len(r.GetCmd()) == 0 {
		return nil, s.grpcErr("ExecSync", fmt.Errorf("exec: empty command: %w", errdefs.ErrInvalid))
	}
	c, sb, err := s.container(r.GetContainerId())
	if err != nil {
		return nil, s.grpcErr("ExecSync", err)
	}
	s.refresh(c)
	if s.stateOf(c) != store.Running || sb == nil || sb.shim == nil {
		return nil, s.grpcErr("ExecSync", fmt.Errorf("container %s is not running: %w", c.ID, errdefs.ErrPrecondition))
	}
	pdata, err := execProcess(c, r.GetCmd(), false, nil)
	if err != nil {
		return nil, s.grpcErr("ExecSync", err)
	}
	res, err := sb.shim.Exec(shim.ExecArgs{ID: c.ID, Process: pdata, Timeout: time.Duration(r.GetTimeout()) * time.Second,
		DrainTimeout: s.opts.DrainExecSyncIOTimeout})
	if err != nil {
		return nil, s.grpcErr("ExecSync", err, "container", c.ID)
	}
	if res.TimedOut {
		return nil, s.grpcErr("ExecSync", fmt.Errorf("command %q in %s timed out after %ds: %w", r.GetCmd(), c.ID, r.GetTimeout(), context.DeadlineExceeded))
	}
	return &runtimeapi.ExecSyncResponse{Stdout: res.Stdout, Stderr: res.Stderr, ExitCode: int32(res.ExitCode)}, nil
}

// ReopenContainerLog asks the shim to close and reopen the container's log file: the kubelet
// renames the file to rotate it, and by the CRI contract the runtime must then write to a new
// file at the original path. A container that is not running has no log to reopen: error.
func (s *Server) ReopenContainerLog(ctx context.Context, r *runtimeapi.ReopenContainerLogRequest) (*runtimeapi.ReopenContainerLogResponse, error) {
	c, sb, err := s.container(r.GetContainerId())
	if err != nil {
		return nil, s.grpcErr("ReopenContainerLog", err)
	}
	s.refresh(c)
	if s.stateOf(c) != store.Running || sb == nil || sb.shim == nil {
		return nil, s.grpcErr("ReopenContainerLog", fmt.Errorf("container %s is not running: %w", c.ID, errdefs.ErrPrecondition))
	}
	if err := sb.shim.Reopen(c.ID); err != nil {
		return nil, s.grpcErr("ReopenContainerLog", err, "container", c.ID)
	}
	return &runtimeapi.ReopenContainerLogResponse{}, nil
}
