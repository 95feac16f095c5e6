package cri

import (
	"context"
	"strings"
	"time"

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

// refresh updates a container's record from its shim, persisting an exit once. It does not wait
// for a handler working on the container (a stop waiting out its grace period): that handler
// records what changes.
func (s *Server) refresh(c *store.Container) {
	if unlock, ok := s.tryLockContainer(c); ok {
		s.refreshLocked(c)
		unlock()
	}
}

// refreshLocked is refresh for a caller holding c's lock.
func (s *Server) refreshLocked(c *store.Container) {
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
		s.publishEvent(runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, sb, rec.ID) // every exit is recorded here
	}
}

// ContainerStatus reports a container, asking its shim whether it has exited.
func (s *Server) ContainerStatus(ctx context.Context, r *runtimeapi.ContainerStatusRequest) (*runtimeapi.ContainerStatusResponse, error) {
	c, _, err := s.container(r.GetContainerId())
	if err != nil {
		return nil, s.grpcErr("ContainerStatus", err)
	}
	s.refresh(c)
	return &runtimeapi.ContainerStatusResponse{Status: s.containerStatus(c)}, nil
}

// containerStatus reports c as recorded, without asking its shim.
func (s *Server) containerStatus(c *store.Container) *runtimeapi.ContainerStatus {
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
		Mounts: s.statusMounts(cfg.GetMounts()), LogPath: rec.LogPath,
		Resources: &runtimeapi.ContainerResources{Linux: cfg.GetLinux().GetResources()},
		User:      containerUser(&rec),
	}
	return st
}

// containerUser is the identity the container's processes run with; the supplementary groups
// include the primary group, as the kubelet reports them.
func containerUser(c *store.Container) *runtimeapi.ContainerUser {
	groups := []int64{int64(c.GID)}
	for _, g := range c.Groups {
		groups = append(groups, int64(g))
	}
	return &runtimeapi.ContainerUser{Linux: &runtimeapi.LinuxContainerUser{
		Uid: int64(c.UID), Gid: int64(c.GID), SupplementalGroups: groups}}
}

// statusMounts are the container's mounts as asked, with each image volume's image_ref: the
// ID of the image it resolved to.
func (s *Server) statusMounts(mounts []*runtimeapi.Mount) []*runtimeapi.Mount {
	out := make([]*runtimeapi.Mount, 0, len(mounts))
	for _, m := range mounts {
		if ref := m.GetImage().GetImage(); ref != "" {
			m = proto.Clone(m).(*runtimeapi.Mount)
			if img, err := s.opts.Images.Get(ref); err == nil {
				m.Image.ImageRef = img.ID
			}
		}
		out = append(out, m)
	}
	return out
}

// ListContainers lists containers filtered by id (or prefix), pod, state and labels.
func (s *Server) ListContainers(ctx context.Context, r *runtimeapi.ListContainersRequest) (*runtimeapi.ListContainersResponse, error) {
	f := r.GetFilter()
	var out []*runtimeapi.Container
	for _, c := range s.containersMatching(f.GetId(), f.GetPodSandboxId()) {
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

// containersMatching lists the containers whose id and pod id start with the given prefixes
// (empty: any), the filter ListContainers and ListContainerStats share.
func (s *Server) containersMatching(id, podID string) []*store.Container {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*store.Container
	for _, c := range s.containers {
		if strings.HasPrefix(c.ID, id) && strings.HasPrefix(c.SandboxID, podID) {
			out = append(out, c)
		}
	}
	return out
}
