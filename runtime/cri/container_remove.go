package cri

import (
	"context"
	"errors"
	"fmt"
	"os"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
	"ingot.dev/ingot/runtime/store"
)

// RemoveContainer kills the container if it runs, removes it and its rootfs and forgets it.
// Removing an unknown container is not an error (CRI: idempotent).
func (s *Server) RemoveContainer(ctx context.Context, r *runtimeapi.RemoveContainerRequest) (*runtimeapi.RemoveContainerResponse, error) {
	c, _, err := s.container(r.GetContainerId())
	if errors.Is(err, errdefs.ErrNotFound) {
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

// removeContainer takes c's lock and removes it; a container removed meanwhile is not an error.
func (s *Server) removeContainer(ctx context.Context, c *store.Container) error {
	unlock, ok := s.lockContainer(c)
	if !ok {
		return nil
	}
	defer unlock()
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
	delete(s.ctrLocks, c.ID)
	for k, v := range s.names {
		if v == c.ID {
			delete(s.names, k)
		}
	}
	s.mu.Unlock()
	s.publishEvent(runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, sb, c.ID)
	return nil
}
