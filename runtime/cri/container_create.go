package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
	"ingot.dev/ingot/runtime/logs"
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
	sb, err := s.sandbox(r.GetPodSandboxId())
	if err != nil {
		return nil, s.grpcErr("CreateContainer", err)
	}
	s.mu.Lock()
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
	s.publishEvent(runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, sb, id)
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

func (s *Server) ctrDir(id string) string { return filepath.Join(s.opts.Root, "containers", id) }

func (s *Server) createContainer(ctx context.Context, id string, sb *sandbox, podCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) (_ *store.Container, retErr error) {
	if err := validateContainer(podCfg, cfg); err != nil {
		return nil, err
	}
	if err := s.checkPause(sb); err != nil {
		return nil, err
	}
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
			unmountContainer(dir)
			os.RemoveAll(dir)
		}
	}()
	if err := s.prepareRootfs(dir, sb, podCfg, layers); err != nil {
		return nil, err
	}
	vols, err := s.mountImageVolumes(dir, cfg.GetMounts())
	if err != nil {
		return nil, err
	}
	var logDir, logName, logPath string
	if podCfg.GetLogDirectory() != "" && cfg.GetLogPath() != "" {
		// The shim creates the directories below log_directory itself, following no symlink.
		logDir, logName = podCfg.GetLogDirectory(), cfg.GetLogPath()
		if logPath, err = logs.Join(logDir, logName); err != nil {
			return nil, err
		}
	}
	in := oci.ContainerInput{
		Rootfs: rootfs, Image: img.Config, PodNamespaces: s.podNSDir(sb.ID), Files: s.podFiles(sb),
		CgroupsPath: filepath.Join(sb.CgroupParent, id), BoundingSet: s.bounding, ImageVolumes: vols,
		UnsetSeccompProfile: s.opts.UnsetSeccompProfile,
		Host:                oci.DetectHost(), // two small reads; AppArmor profiles are checked per request anyway
	}
	if t := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetTargetId(); t != "" {
		if target, _, err := s.container(t); err == nil {
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
	if _, err := sb.shim.Create(shim.CreateArgs{ID: id, Spec: data, LogDir: logDir, LogPath: logName,
		Stdin: cfg.GetStdin(), StdinOnce: cfg.GetStdinOnce()}); err != nil {
		return nil, err
	}
	return s.recordContainer(id, sb, cfg, img, spec, logPath, dir)
}

// prepareRootfs stacks the image's layers under a writable layer at dir/rootfs. In a pod with
// its own user namespace the rootfs must belong to that namespace's root: the layers are seen
// through idmapped mounts and the writable layer is chowned to it.
func (s *Server) prepareRootfs(dir string, sb *sandbox, podCfg *runtimeapi.PodSandboxConfig, layers []string) error {
	var owner *idOwner
	uids, gids, err := oci.UserNamespace(podCfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions())
	if err != nil {
		return fmt.Errorf("%w: %w", errdefs.ErrInvalid, err)
	}
	if uids != nil {
		owner = &idOwner{uid: int(uids[0].HostID), gid: int(gids[0].HostID)}
		if layers, err = idmapLayers(dir, layers, filepath.Join(s.podNSDir(sb.ID), oci.PodNamespaces[specs.UserNamespace])); err != nil {
			return err
		}
	}
	return mountRootfs(dir, layers, owner)
}

// recordContainer persists a created container; if that fails the shim forgets it again.
func (s *Server) recordContainer(id string, sb *sandbox, cfg *runtimeapi.ContainerConfig, img Image, spec *specs.Spec, logPath, dir string) (*store.Container, error) {
	raw, _ := proto.Marshal(cfg)
	rec := &store.Container{
		ID: id, SandboxID: sb.ID, Name: cfg.GetMetadata().GetName(), Attempt: cfg.GetMetadata().GetAttempt(),
		Config: raw, ImageID: img.ID, ImageRef: cfg.GetImage().GetImage(), CreatedAt: time.Now().UnixNano(),
		State: store.Created, LogPath: logPath, Dir: dir,
		UID: spec.Process.User.UID, GID: spec.Process.User.GID, Groups: spec.Process.User.AdditionalGids,
	}
	if err := s.store.PutContainer(rec); err != nil {
		sb.shim.Remove(id)
		return nil, err
	}
	return rec, nil
}

// mountImageVolumes mounts, read-only, the filesystem of every image a CRI mount names (image
// volumes) under dir/volumes, and returns where by container path.
func (s *Server) mountImageVolumes(dir string, mounts []*runtimeapi.Mount) (map[string]string, error) {
	out := map[string]string{}
	for i, m := range mounts {
		ref := m.GetImage().GetImage()
		if ref == "" {
			continue
		}
		img, err := s.opts.Images.Get(ref)
		if err != nil {
			return nil, fmt.Errorf("image volume at %s: %w", m.GetContainerPath(), err)
		}
		layers, err := s.opts.Images.Layers(img.ID)
		if err != nil {
			return nil, fmt.Errorf("image volume at %s: %w", m.GetContainerPath(), err)
		}
		target := filepath.Join(dir, "volumes", strconv.Itoa(i))
		if err := mountLayersReadOnly(target, layers); err != nil {
			return nil, fmt.Errorf("image volume at %s (%s): %w", m.GetContainerPath(), ref, err)
		}
		out[filepath.Clean(m.GetContainerPath())] = target
	}
	return out, nil
}

// mountLayersReadOnly shows an image's layers (lowest first) at target without a writable layer:
// overlayfs with lower directories only is read-only; it needs two of them, so a one-layer image
// is a read-only bind mount instead.
func mountLayersReadOnly(target string, layers []string) error {
	if len(layers) == 0 {
		return fmt.Errorf("image has no layers: %w", errdefs.ErrInvalid)
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if len(layers) == 1 {
		if err := unix.Mount(layers[0], target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", layers[0], err)
		}
		if err := unix.Mount("", target, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			unix.Unmount(target, unix.MNT_DETACH)
			return fmt.Errorf("make %s read-only: %w", target, err)
		}
		return nil
	}
	lower := make([]string, len(layers))
	for i, l := range layers {
		lower[len(layers)-1-i] = l
	}
	if err := unix.Mount("overlay", target, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(lower, ":")); err != nil {
		return fmt.Errorf("mount overlay (%d layers): %w", len(layers), err)
	}
	return nil
}

// unmountContainer undoes what createContainer mounted under dir: image volumes, the rootfs and
// the idmapped layers below it.
func unmountContainer(dir string) error {
	vols, _ := filepath.Glob(filepath.Join(dir, "volumes", "*"))
	idmapped, _ := filepath.Glob(filepath.Join(dir, "idmap", "*"))
	var errs []error
	targets := append(append(vols, filepath.Join(dir, "rootfs")), idmapped...)
	for _, target := range targets {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil && err != unix.EINVAL && err != unix.ENOENT {
			errs = append(errs, fmt.Errorf("unmount %s: %w", target, err))
		}
	}
	return errors.Join(errs...)
}

// idOwner is the host uid and gid that own a container's writable layer.
type idOwner struct{ uid, gid int }

// idmapLayers attaches an idmapped view of each layer under dir/idmap, mapped through the user
// namespace at usernsPath (the pod's): files the host sees owned by 0 appear owned by the
// namespace's root. It needs Linux 5.19 for overlayfs on idmapped layers. The returned
// directories replace layers as overlayfs lower directories.
func idmapLayers(dir string, layers []string, usernsPath string) ([]string, error) {
	userns, err := os.Open(usernsPath)
	if err != nil {
		return nil, fmt.Errorf("the pod's user namespace: %w", err)
	}
	defer userns.Close()
	out := make([]string, 0, len(layers))
	for i, l := range layers {
		target := filepath.Join(dir, "idmap", strconv.Itoa(i))
		if err := os.MkdirAll(target, 0o755); err != nil {
			return nil, err
		}
		fd, err := unix.OpenTree(unix.AT_FDCWD, l, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("idmapped layer %s: open_tree: %w", l, err)
		}
		err = unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_IDMAP, Userns_fd: uint64(userns.Fd())})
		if err == nil {
			err = unix.MoveMount(fd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH)
		}
		unix.Close(fd)
		if err != nil {
			return nil, fmt.Errorf("idmapped layer %s (the filesystem may not support idmapped mounts): %w", l, err)
		}
		out = append(out, target)
	}
	return out, nil
}

// mountRootfs stacks the image layers (lowest first in layers) under a private upper layer,
// owned by owner when the container runs in a user namespace of its pod.
func mountRootfs(dir string, layers []string, owner *idOwner) error {
	upper, work, rootfs := filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "rootfs")
	// The container's directory is closed to other host users: its upper layer holds what the
	// container wrote. The upper directory itself keeps 0755, as it is the container's "/"; work
	// is overlayfs's own. With a user namespace, the container's root owns them all: it has to
	// walk to its rootfs.
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{{dir, 0o700}, {upper, 0o755}, {work, 0o700}, {rootfs, 0o755}} {
		if err := os.MkdirAll(d.path, d.mode); err != nil {
			return fmt.Errorf("container directory: %w", err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil { // not whatever the umask or an earlier step left
			return fmt.Errorf("container directory: %w", err)
		}
		d := d.path
		if owner != nil {
			if err := os.Chown(d, owner.uid, owner.gid); err != nil {
				return fmt.Errorf("container directory: %w", err)
			}
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
