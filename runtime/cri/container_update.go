package cri

import (
	"context"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
	"ingot.dev/ingot/runtime/oci"
	"ingot.dev/ingot/runtime/shim"
	"ingot.dev/ingot/runtime/store"
)

// UpdateContainerResources sets new cgroup limits on a created or running container (the
// kubelet's in-place resize and CPU manager) and records them, so ContainerStatus reports them.
// The request carries the whole desired set (CRI proto), not a change.
func (s *Server) UpdateContainerResources(ctx context.Context, r *runtimeapi.UpdateContainerResourcesRequest) (*runtimeapi.UpdateContainerResourcesResponse, error) {
	c, sb, err := s.container(r.GetContainerId())
	if err != nil {
		return nil, s.grpcErr("UpdateContainerResources", err)
	}
	unlock, ok := s.lockContainer(c)
	if !ok {
		return nil, s.grpcErr("UpdateContainerResources", fmt.Errorf("container %s was removed: %w", c.ID, errdefs.ErrNotFound))
	}
	defer unlock()
	s.refreshLocked(c)
	state := s.stateOf(c)
	if (state != store.Created && state != store.Running) || sb == nil || sb.shim == nil {
		return nil, s.grpcErr("UpdateContainerResources", fmt.Errorf("container %s is %s: %w", c.ID, state, errdefs.ErrPrecondition))
	}
	if r.GetLinux() == nil {
		return &runtimeapi.UpdateContainerResourcesResponse{}, nil
	}
	data, err := json.Marshal(oci.Resources(r.GetLinux()))
	if err != nil {
		return nil, s.grpcErr("UpdateContainerResources", err)
	}
	if err := sb.shim.Update(shim.UpdateArgs{ID: c.ID, Resources: data}); err != nil {
		return nil, s.grpcErr("UpdateContainerResources", err, "container", c.ID)
	}
	s.mu.Lock()
	cfg := ctrConfig(c)
	if cfg.Linux == nil {
		cfg.Linux = &runtimeapi.LinuxContainerConfig{}
	}
	cfg.Linux.Resources = r.GetLinux()
	c.Config, _ = proto.Marshal(cfg)
	rec := *c
	s.mu.Unlock()
	if err := s.store.PutContainer(&rec); err != nil {
		return nil, s.grpcErr("UpdateContainerResources", err)
	}
	return &runtimeapi.UpdateContainerResourcesResponse{}, nil
}
