package cri

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
	"ingot.dev/ingot/runtime/oci"
	"ingot.dev/ingot/runtime/shim"
	"ingot.dev/ingot/runtime/store"
)

func ctrNameKey(pod *runtimeapi.PodSandboxMetadata, m *runtimeapi.ContainerMetadata) string {
	return fmt.Sprintf("ctr/%s_%s_%s_%s_%d", m.GetName(), pod.GetName(), pod.GetNamespace(), pod.GetUid(), m.GetAttempt())
}

// CreateContainer stacks the image's layers with overlayfs, builds the OCI spec (image config
// merged the way containerd merges it) and has the pod's shim create the container, stopped at
// its start barrier until StartContainer.
func (s *Server) CreateContainer(ctx context.Context, r *runtimeapi.CreateContainerRequest) (*runtimeapi.CreateContainerResponse, error) {
	cfg := r.GetConfig()
	if cfg.GetMetadata().GetName() == "" {
		return nil, s.grpcErr("CreateContainer", fmt.Errorf("container metadata needs a name: %w", errdefs.ErrInvalid))
	}
	if cfg.GetImage().GetImage() == "" {
		return nil, s.grpcErr("CreateContainer", fmt.Errorf("container %s names no image: %w", cfg.GetMetadata().GetName(), errdefs.ErrInvalid))
	}
	s.mu.Lock()
	sb, err := s.resolveSandbox(r.GetPodSandboxId())
	if err != nil {
		s.mu.Unlock()
		return nil, s.grpcErr("CreateContainer", err)
	}
	if !sb.Ready || sb.shim == nil {
		s.mu.Unlock()
		return nil, s.grpcErr("CreateContainer", fmt.Errorf("pod sandbox %s is not ready: %w", sb.ID, errdefs.ErrPrecondition))
	}
	podCfg := r.GetSandboxConfig()
	if podCfg == nil {
		podCfg = sb.config()
	}
	key := ctrNameKey(sb.config().GetMetadata(), cfg.GetMetadata())
	if other, ok := s.names[key]; ok {
		s.mu.Unlock()
		return nil, s.grpcErr("CreateContainer", fmt.Errorf("container name %s is reserved by %s: %w", key, other, errdefs.ErrAlreadyExists))
	}
	id := newID()
	s.names[key] = id
	s.mu.Unlock()

	c, err := s.createContainer(ctx, id, sb, podCfg, cfg)
	if err != nil {
		s.mu.Lock()
		delete(s.names, key)
		s.mu.Unlock()
		return nil, s.grpcErr("CreateContainer", err, "container", cfg.GetMetadata().GetName(), "pod", sb.ID)
	}
	s.mu.Lock()
	s.containers[id] = c
	s.mu.Unlock()
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

func (s *Server) ctrDir(id string) string { return filepath.Join(s.opts.Root, "containers", id) }

func (s *Server) createContainer(ctx context.Context, id string, sb *sandbox, podCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) (_ *store.Container, retErr error) {
	img, err := s.opts.Images.Get(cfg.GetImage().GetImage())
	if err != nil {
		return nil, err
	}
	layers, err := s.opts.Images.Layers(img.ID)
	if err != nil {
		return nil, err
	}
	dir := s.ctrDir(id)
	rootfs := filepath.Join(dir, "rootfs")
	defer func() {
		if retErr != nil {
			unix.Unmount(rootfs, unix.MNT_DETACH)
			os.RemoveAll(dir)
		}
	}()
	if err := mountRootfs(dir, layers); err != nil {
		return nil, err
	}
	logPath := ""
	if podCfg.GetLogDirectory() != "" && cfg.GetLogPath() != "" {
		logPath = filepath.Join(podCfg.GetLogDirectory(), cfg.GetLogPath())
		if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
			return nil, fmt.Errorf("log directory for %s: %w", logPath, err)
		}
	}
	in := oci.ContainerInput{
		Rootfs: rootfs, Image: img.Config, PausePid: sb.PausePid, Files: s.podFiles(sb),
		CgroupsPath: filepath.Join(sb.CgroupParent, id),
	}
	if t := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetTargetId(); t != "" {
		s.mu.Lock()
		target, err := s.resolveContainer(t)
		s.mu.Unlock()
		if err == nil {
			if st, err := sb.shim.State(target.ID); err == nil && st.Running {
				in.TargetPid = st.Pid
			}
		}
	}
	spec, err := oci.ContainerSpec(podCfg, cfg, in)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalid, err)
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	// Kept for ExecSync, which runs new processes with the container's user, env and cwd.
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		return nil, err
	}
	if _, err := sb.shim.Create(shim.CreateArgs{ID: id, Spec: data, LogPath: logPath}); err != nil {
		return nil, err
	}
	raw, _ := proto.Marshal(cfg)
	rec := &store.Container{
		ID: id, SandboxID: sb.ID, Name: cfg.GetMetadata().GetName(), Attempt: cfg.GetMetadata().GetAttempt(),
		Config: raw, ImageID: img.ID, ImageRef: cfg.GetImage().GetImage(), CreatedAt: time.Now().UnixNano(),
		State: store.Created, LogPath: logPath, Dir: dir,
	}
	if err := s.store.PutContainer(rec); err != nil {
		sb.shim.Remove(id)
		return nil, err
	}
	return rec, nil
}

// mountRootfs stacks the image layers (lowest first in layers) under a private upper layer.
func mountRootfs(dir string, layers []string) error {
	upper, work, rootfs := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "rootfs")
	for _, d := range []string{upper, work, rootfs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("container directory: %w", err)
		}
	}
	if len(layers) == 0 {
		return fmt.Errorf("image has no layers: %w", errdefs.ErrInvalid)
	}
	lower := make([]string, len(layers))
	for i, l := range layers {
		lower[len(layers)-1-i] = l // overlayfs lists the top layer first
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", strings.Join(lower, ":"), upper, work)
	if err := unix.Mount("overlay", rootfs, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount container rootfs (overlay, %d layers): %w", len(layers), err)
	}
	return nil
}
