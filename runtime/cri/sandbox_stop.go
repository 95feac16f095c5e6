package cri

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
	"ingot.dev/ingot/runtime/oci"
	"ingot.dev/ingot/runtime/store"
)

// StopPodSandbox stops every container of the pod and the pause process. Per the CRI proto it is
// idempotent, and a sandbox that is already gone is not an error.
func (s *Server) StopPodSandbox(ctx context.Context, r *runtimeapi.StopPodSandboxRequest) (*runtimeapi.StopPodSandboxResponse, error) {
	sb, err := s.sandbox(r.GetPodSandboxId())
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.StopPodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, s.grpcErr("StopPodSandbox", err)
	}
	if err := s.stopSandbox(ctx, sb); err != nil {
		return nil, s.grpcErr("StopPodSandbox", err, "pod", sb.ID)
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

func (s *Server) stopSandbox(ctx context.Context, sb *sandbox) error {
	for _, c := range s.containersOf(sb.ID) {
		unlock, ok := s.lockContainer(c)
		if !ok {
			continue // removed meanwhile
		}
		err := s.stopContainer(ctx, c, 0)
		unlock()
		if err != nil {
			return err
		}
	}
	if sb.shim != nil {
		if err := sb.shim.Remove(pauseID); err != nil {
			return fmt.Errorf("stop pause of pod %s: %w", sb.ID, err)
		}
	}
	// A stopped pod holds no address or hostPort (the kubelet may start a new sandbox at once).
	if err := s.teardownNetwork(ctx, sb, false); err != nil {
		return err
	}
	s.mu.Lock()
	wasReady := sb.Ready
	sb.Ready = false
	rec := sb.Sandbox
	s.mu.Unlock()
	if err := s.store.PutSandbox(&rec); err != nil {
		return err
	}
	if wasReady {
		s.publishEvent(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, sb, sb.ID)
	}
	return nil
}

func (s *Server) containersOf(podID string) []*store.Container {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*store.Container
	for _, c := range s.containers {
		if c.SandboxID == podID {
			out = append(out, c)
		}
	}
	return out
}

// RemovePodSandbox stops the pod if needed, removes its containers, ends its shim and forgets it.
// Removing a sandbox that does not exist is not an error.
func (s *Server) RemovePodSandbox(ctx context.Context, r *runtimeapi.RemovePodSandboxRequest) (*runtimeapi.RemovePodSandboxResponse, error) {
	sb, err := s.sandbox(r.GetPodSandboxId())
	if errors.Is(err, errdefs.ErrNotFound) {
		return &runtimeapi.RemovePodSandboxResponse{}, nil
	}
	if err != nil {
		return nil, s.grpcErr("RemovePodSandbox", err)
	}
	if err := s.stopSandbox(ctx, sb); err != nil {
		return nil, s.grpcErr("RemovePodSandbox", err, "pod", sb.ID)
	}
	for _, c := range s.containersOf(sb.ID) {
		if err := s.removeContainer(ctx, c); err != nil {
			return nil, s.grpcErr("RemovePodSandbox", err, "pod", sb.ID)
		}
	}
	if sb.shim != nil {
		// The pod's containers are removed and its shim holds nothing: it answers, then exits.
		sb.shim.Shutdown()
		sb.shim.Close()
	}
	if err := s.teardownNetwork(ctx, sb, true); err != nil {
		return nil, s.grpcErr("RemovePodSandbox", err, "pod", sb.ID)
	}
	s.cleanupPod(sb.ID, sb.ShimDir)
	// The pod's cgroup is ours to remove when we chose it; a kubelet-given parent is the
	// kubelet's. libcontainer has removed the containers' cgroups below it already.
	if sb.CgroupParent == filepath.Join(s.opts.CgroupRoot, sb.ID) {
		if err := oci.RemoveCgroup(sb.CgroupParent); err != nil {
			s.log.Warn("pod cgroup left behind", "pod", sb.ID, "err", err)
		}
	}
	if err := s.store.DeleteSandbox(sb.ID); err != nil {
		return nil, s.grpcErr("RemovePodSandbox", err, "pod", sb.ID)
	}
	s.mu.Lock()
	delete(s.sandboxes, sb.ID)
	for k, v := range s.names {
		if v == sb.ID {
			delete(s.names, k)
		}
	}
	s.mu.Unlock()
	s.publishEvent(runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, sb, sb.ID)
	s.log.Info("pod sandbox removed", "pod", sb.Name, "namespace", sb.Namespace, "id", sb.ID)
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}
