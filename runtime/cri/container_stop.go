package cri

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
	"ingot.dev/ingot/runtime/store"
)

// StopContainer sends the stop signal, waits up to the timeout, then kills. Stopping a container
// that is not running is not an error (CRI: idempotent).
func (s *Server) StopContainer(ctx context.Context, r *runtimeapi.StopContainerRequest) (*runtimeapi.StopContainerResponse, error) {
	c, _, err := s.container(r.GetContainerId())
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.StopContainerResponse{}, nil // CRI: stopping what is gone is not an error
	}
	if err != nil {
		return nil, s.grpcErr("StopContainer", err)
	}
	unlock, ok := s.lockContainer(c)
	if !ok {
		return &runtimeapi.StopContainerResponse{}, nil // removed while we waited: stopped too
	}
	defer unlock()
	if err := s.stopContainer(ctx, c, time.Duration(r.GetTimeout())*time.Second); err != nil {
		return nil, s.grpcErr("StopContainer", err, "container", c.ID)
	}
	return &runtimeapi.StopContainerResponse{}, nil
}

// stopContainer stops c; the caller holds c's lock.
func (s *Server) stopContainer(ctx context.Context, c *store.Container, timeout time.Duration) error {
	s.refreshLocked(c)
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

// waitExit has the shim answer when the container has exited (or d passes) and records the
// exit; the caller holds c's lock.
func (s *Server) waitExit(ctx context.Context, sb *sandbox, c *store.Container, d time.Duration) bool {
	if _, err := sb.shim.Wait(ctx, c.ID, d); err != nil && ctx.Err() != nil {
		return false
	}
	// A shim that cannot answer is gone, and its containers with it: refreshLocked records that.
	s.refreshLocked(c)
	s.mu.Lock()
	defer s.mu.Unlock()
	return c.State == store.Exited || c.State == store.Unknown
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
