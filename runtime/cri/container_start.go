package cri

import (
	"context"
	"fmt"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
	"ingot.dev/ingot/runtime/store"
)

// StartContainer releases a created container's init to exec the container's process.
func (s *Server) StartContainer(ctx context.Context, r *runtimeapi.StartContainerRequest) (*runtimeapi.StartContainerResponse, error) {
	c, sb, err := s.container(r.GetContainerId())
	if err != nil {
		return nil, s.grpcErr("StartContainer", err)
	}
	unlock, ok := s.lockContainer(c)
	if !ok {
		return nil, s.grpcErr("StartContainer", fmt.Errorf("container %s was removed: %w", c.ID, errdefs.ErrNotFound))
	}
	defer unlock()
	s.mu.Lock()
	state := c.State
	s.mu.Unlock()
	if state != store.Created {
		return nil, s.grpcErr("StartContainer", fmt.Errorf("container %s is %s, not created: %w", c.ID, state, errdefs.ErrPrecondition))
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
	s.publishEvent(runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, sb, c.ID)
	go s.watchExit(sb, c)
	return &runtimeapi.StartContainerResponse{}, nil
}
