package cri

import (
	"context"
	"strings"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/store"
)

func ctrConfig(c *store.Container) *runtimeapi.ContainerConfig {
	var cfg runtimeapi.ContainerConfig
	proto.Unmarshal(c.Config, &cfg)
	return &cfg
}

func ctrState(c *store.Container) runtimeapi.ContainerState {
	switch c.State {
	case store.Created:
		return runtimeapi.ContainerState_CONTAINER_CREATED
	case store.Running:
		return runtimeapi.ContainerState_CONTAINER_RUNNING
	case store.Exited:
		return runtimeapi.ContainerState_CONTAINER_EXITED
	}
	return runtimeapi.ContainerState_CONTAINER_UNKNOWN
}

// ContainerStatus reports a container, asking its shim whether it has exited.
func (s *Server) ContainerStatus(ctx context.Context, r *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	s.mu.Lock()
	c, err := s.resolveContainer(r.GetContainerId())
	s.mu.Unlock()
	if err != nil {
		return nil, s.grpcErr("ContainerStatus", err)
	}
	s.refresh(c)
	s.mu.Lock()
	rec := *c
	s.mu.Unlock()
	cfg := ctrConfig(&rec)
	imageRef := rec.ImageRef
	var imageID string
	if img, err := s.opts.Images.Get(rec.ImageID); err == nil {
		imageID = img.ID
		if len(img.RepoDigests) > 0 {
			imageRef = img.RepoDigests[0]
		}
	}
	st := &runtimeapi.ContainerStatus{
		Id: rec.ID, Metadata: cfg.GetMetadata(), State: ctrState(&rec),
		CreatedAt: rec.CreatedAt, StartedAt: rec.StartedAt, FinishedAt: rec.FinishedAt,
		ExitCode: rec.ExitCode, Image: cfg.GetImage(), ImageRef: imageRef, ImageId: imageID,
		Reason: rec.Reason, Message: rec.Message, Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(),
		Mounts: cfg.GetMounts(), LogPath: rec.LogPath,
		Resources: &runtimeapi.ContainerResources{Linux: cfg.GetLinux().GetResources()},
	}
	return &runtimeapi.ContainerStatusResponse{Status: st}, nil
}

// ListContainers lists containers filtered by id (or prefix), pod, state and labels.
func (s *Server) ListContainers(ctx context.Context, r *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f := r.GetFilter()
	s.mu.Lock()
	var all []*store.Container
	for _, c := range s.containers {
		all = append(all, c)
	}
	s.mu.Unlock()
	var out []*runtimeapi.Container
	for _, c := range all {
		if f.GetId() != "" && !strings.HasPrefix(c.ID, f.GetId()) {
			continue
		}
		if f.GetPodSandboxId() != "" && !strings.HasPrefix(c.SandboxID, f.GetPodSandboxId()) {
			continue
		}
		s.refresh(c)
		s.mu.Lock()
		rec := *c
		s.mu.Unlock()
		if f.GetState() != nil && f.GetState().GetState() != ctrState(&rec) {
			continue
		}
		cfg := ctrConfig(&rec)
		if !labelsMatch(cfg.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, &runtimeapi.Container{
			Id: rec.ID, PodSandboxId: rec.SandboxID, Metadata: cfg.GetMetadata(), Image: cfg.GetImage(),
			ImageRef: rec.ImageRef, ImageId: rec.ImageID, State: ctrState(&rec), CreatedAt: rec.CreatedAt,
			Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(),
		})
	}
	return &runtimeapi.ListContainersResponse{Containers: out}, nil
}
