package cri

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
	"ingot.dev/ingot/runtime/store"
)

// StartContainer releases a created container's init to exec the container's process.
func (s *Server) StartContainer(ctx context.Context, r *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	c, sb, err := s.containerAndPod(r.GetContainerId())
	if err != nil {
		return nil, s.grpcErr("StartContainer", err)
	}
	if c.State != store.Created {
		return nil, s.grpcErr("StartContainer", fmt.Errorf("container %s is %s, not created: %w", c.ID, c.State, errdefs.ErrPrecondition))
	}
	if sb == nil || sb.shim == nil {
		return nil, s.grpcErr("StartContainer", fmt.Errorf("container %s: %w", c.ID, errNoShim))
	}
	if err := sb.shim.Start(c.ID); err != nil {
		return nil, s.grpcErr("StartContainer", err, "container", c.ID)
	}
	s.mu.Lock()
	c.State, c.StartedAt = store.Running, time.Now().UnixNano()
	rec := *c
	s.mu.Unlock()
	if err := s.store.PutContainer(&rec); err != nil {
		return nil, s.grpcErr("StartContainer", err)
	}
	return &runtimeapi.StartContainerResponse{}, nil
}

// StopContainer sends the stop signal, waits up to the timeout, then kills. Stopping a container
// that is not running is not an error (CRI: idempotent).
func (s *Server) StopContainer(ctx context.Context, r *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	s.mu.Lock()
	c, err := s.resolveContainer(r.GetContainerId())
	s.mu.Unlock()
	if errdefs.Code(err) == errdefs.Code(errdefs.ErrNotFound) {
		return &runtimeapi.StopContainerResponse{}, nil // CRI: stopping what is gone is not an error
	}
	if err != nil {
		return nil, s.grpcErr("StopContainer", err)
	}
	if err := s.stopContainer(ctx, c, time.Duration(r.GetTimeout())*time.Second); err != nil {
		return nil, s.grpcErr("StopContainer", err, "container", c.ID)
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

func (s *Server) stopContainer(ctx context.Context, c *store.Container, timeout time.Duration) error {
	s.refresh(c)
	s.mu.Lock()
	sb := s.sandboxes[c.SandboxID]
	state := c.State
	s.mu.Unlock()
	if sb == nil || sb.shim == nil || state == store.Exited || state == store.Unknown {
		return nil
	}
	if state == store.Created {
		// Never started: nothing to signal gracefully; kill the waiting init.
		return s.killAndWait(ctx, sb, c)
	}
	sig := syscall.SIGTERM
	if v := s.stopSignal(c); v != 0 {
		sig = v
	}
	if timeout > 0 {
		if err := sb.shim.Signal(c.ID, sig, false); err != nil {
			return err
		}
		if s.waitExit(ctx, sb, c, timeout) {
			return nil
		}
	}
	return s.killAndWait(ctx, sb, c)
}

func (s *Server) killAndWait(ctx context.Context, sb *sandbox, c *store.Container) error {
	if err := sb.shim.Signal(c.ID, syscall.SIGKILL, true); err != nil {
		return err
	}
	if !s.waitExit(ctx, sb, c, 30*time.Second) {
		return fmt.Errorf("container %s did not exit after SIGKILL", c.ID)
	}
	return nil
}

// waitExit polls the shim until the container exits or d passes.
func (s *Server) waitExit(ctx context.Context, sb *sandbox, c *store.Container, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		s.refresh(c)
		s.mu.Lock()
		done := c.State == store.Exited || c.State == store.Unknown
		s.mu.Unlock()
		if done {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// refresh updates a container's record from its shim, persisting an exit once.
func (s *Server) refresh(c *store.Container) {
	s.mu.Lock()
	sb := s.sandboxes[c.SandboxID]
	if c.State == store.Exited || c.State == store.Unknown || sb == nil {
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	var st struct {
		ok, exited, notFound, oom bool
		code                      int
		finished                  time.Time
	}
	if sb.shim != nil {
		if v, err := sb.shim.State(c.ID); err == nil {
			st.ok, st.exited, st.notFound, st.code, st.finished = true, v.Exited, v.NotFound, v.Exit.Code, v.Exit.Finished
			st.oom = v.Exit.OOMKilled
		}
	}
	s.mu.Lock()
	changed := false
	switch {
	case st.ok && st.exited:
		c.State, c.ExitCode, c.FinishedAt = store.Exited, int32(st.code), st.finished.UnixNano()
		c.Reason = "Completed"
		switch {
		case st.oom:
			c.Reason = "OOMKilled" // the kubelet's name for it
		case st.code != 0:
			c.Reason = "Error"
		}
		changed = true
	case !st.ok || st.notFound:
		// The shim (or its record of the container) is gone: the container cannot be running.
		c.State, c.Reason, c.Message = store.Exited, "Unknown", "the container's shim is gone"
		c.ExitCode, c.FinishedAt = 255, time.Now().UnixNano()
		changed = true
	}
	rec := *c
	s.mu.Unlock()
	if changed {
		s.store.PutContainer(&rec)
	}
}

// RemoveContainer kills the container if it runs, removes it and its rootfs and forgets it.
// Removing an unknown container is not an error.
func (s *Server) RemoveContainer(ctx context.Context, r *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	s.mu.Lock()
	c, err := s.resolveContainer(r.GetContainerId())
	s.mu.Unlock()
	if errdefs.Code(err) == errdefs.Code(errdefs.ErrNotFound) {
		return &runtimeapi.RemoveContainerResponse{}, nil
	}
	if err != nil {
		return nil, s.grpcErr("RemoveContainer", err)
	}
	if err := s.removeContainer(ctx, c); err != nil {
		return nil, s.grpcErr("RemoveContainer", err, "container", c.ID)
	}
	return &runtimeapi.RemoveContainerResponse{}, nil
}

func (s *Server) removeContainer(ctx context.Context, c *store.Container) error {
	if err := s.stopContainer(ctx, c, 0); err != nil {
		return err
	}
	s.mu.Lock()
	sb := s.sandboxes[c.SandboxID]
	s.mu.Unlock()
	if sb != nil && sb.shim != nil {
		if err := sb.shim.Remove(c.ID); err != nil {
			return err
		}
	}
	if err := unmountContainer(c.Dir); err != nil {
		return fmt.Errorf("container %s: %w", c.ID, err)
	}
	if err := os.RemoveAll(c.Dir); err != nil {
		return fmt.Errorf("remove container directory %s: %w", c.Dir, err)
	}
	if err := s.store.DeleteContainer(c.ID); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.containers, c.ID)
	for k, v := range s.names {
		if v == c.ID {
			delete(s.names, k)
		}
	}
	s.mu.Unlock()
	return nil
}

func (s *Server) stopSignal(c *store.Container) syscall.Signal {
	img, err := s.opts.Images.Get(c.ImageID)
	if err != nil || img.Config.StopSignal == "" {
		return 0
	}
	return signalByName(img.Config.StopSignal)
}

func signalByName(name string) syscall.Signal {
	if v, err := strconv.Atoi(name); err == nil {
		return syscall.Signal(v)
	}
	name = strings.ToUpper(name)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	return unix.SignalNum(name)
}
