package cri

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/netsetup/netns"
	"ingot.dev/ingot/netsetup/podnetapi"
	"ingot.dev/ingot/runtime/errdefs"
	"ingot.dev/ingot/runtime/oci"
	"ingot.dev/ingot/runtime/shim"
	"ingot.dev/ingot/runtime/store"
)

// pauseID is the pause container's id inside its shim.
const pauseID = "pause"

func podNameKey(m *runtimeapi.PodSandboxMetadata) string {
	return fmt.Sprintf("pod/%s_%s_%s_%d", m.GetName(), m.GetNamespace(), m.GetUid(), m.GetAttempt())
}

// RunPodSandbox starts a shim for the pod, creates the pod's files and starts the pause process
// that holds its namespaces. No sandbox image is pulled: pause is built into ingot-node.
func (s *Server) RunPodSandbox(ctx context.Context, r *runtimeapi.RunPodSandboxRequest) (*runtimeapi.RunPodSandboxResponse, error) {
	cfg := r.GetConfig()
	m := cfg.GetMetadata()
	if m.GetName() == "" || m.GetNamespace() == "" || m.GetUid() == "" {
		return nil, s.grpcErr("RunPodSandbox", fmt.Errorf("pod sandbox metadata needs name, namespace and uid: %w", errdefs.ErrInvalid))
	}
	if err := validateSandbox(cfg); err != nil {
		return nil, s.grpcErr("RunPodSandbox", err)
	}
	if h := r.GetRuntimeHandler(); h != "" && h != "runc" && h != "ingot" {
		return nil, s.grpcErr("RunPodSandbox", fmt.Errorf("runtime handler %q is not configured (ingot has runc): %w", h, errdefs.ErrNotFound))
	}
	key := podNameKey(m)
	id := newID()
	s.mu.Lock()
	if other, ok := s.names[key]; ok {
		s.mu.Unlock()
		return nil, s.grpcErr("RunPodSandbox", fmt.Errorf("pod sandbox name %s is reserved by %s: %w", key, other, errdefs.ErrAlreadyExists))
	}
	s.names[key] = id
	s.mu.Unlock()

	sb, err := s.runSandbox(ctx, id, cfg, r.GetRuntimeHandler())
	if err != nil {
		s.mu.Lock()
		delete(s.names, key)
		s.mu.Unlock()
		return nil, s.grpcErr("RunPodSandbox", err, "pod", m.GetName(), "namespace", m.GetNamespace())
	}
	s.mu.Lock()
	s.sandboxes[id] = sb
	s.mu.Unlock()
	s.publishEvent(runtimeapi.ContainerEventType_CONTAINER_CREATED_EVENT, sb, id)
	s.publishEvent(runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, sb, id)
	s.log.Info("pod sandbox running", "pod", m.GetName(), "namespace", m.GetNamespace(), "id", id, "pause_pid", sb.PausePid)
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}

func (s *Server) podDir(id string) string   { return filepath.Join(s.opts.Root, "pods", id) }
func (s *Server) podNSDir(id string) string { return filepath.Join(s.opts.State, "podns", id) }
func (s *Server) shimDir(id string) string  { return filepath.Join(s.opts.State, "pods", id) }

// shimSocket is short: unix socket paths are limited to 108 bytes. 20 hex digits of a random id
// do not collide in practice.
func (s *Server) shimSocket(id string) string {
	return filepath.Join(s.opts.State, "s", id[:20]+".sock")
}

func (s *Server) runSandbox(ctx context.Context, id string, cfg *runtimeapi.PodSandboxConfig, handler string) (_ *sandbox, retErr error) {
	raw, err := proto.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	nsOpts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	rec := store.Sandbox{
		ID: id, Name: cfg.GetMetadata().GetName(), Namespace: cfg.GetMetadata().GetNamespace(),
		UID: cfg.GetMetadata().GetUid(), Attempt: cfg.GetMetadata().GetAttempt(), Config: raw,
		CreatedAt: time.Now().UnixNano(), ShimDir: s.shimDir(id), ShimSocket: s.shimSocket(id), Handler: handler,
		HostNetwork:  nsOpts.GetNetwork() == runtimeapi.NamespaceMode_NODE,
		CgroupParent: cfg.GetLinux().GetCgroupParent(),
	}
	if rec.CgroupParent == "" {
		rec.CgroupParent = filepath.Join(s.opts.CgroupRoot, id)
	}
	defer func() {
		if retErr != nil {
			s.cleanupPod(id, rec.ShimDir)
		}
	}()
	if err := s.writePodFiles(id, cfg); err != nil {
		return nil, err
	}
	if cfg.GetLogDirectory() != "" {
		if err := os.MkdirAll(cfg.GetLogDirectory(), 0o755); err != nil {
			return nil, fmt.Errorf("pod log directory %s: %w", cfg.GetLogDirectory(), err)
		}
	}
	client, err := shim.Spawn(ctx, s.opts.Exe, rec.ShimDir, rec.ShimSocket, "--max-log-line", fmt.Sprint(s.opts.MaxLogLine))
	if err != nil {
		return nil, err
	}
	// A pod with its own user namespace must own its network namespace too (mounting sysfs in a
	// netns owned by another user namespace is refused), so pause creates it and the pod network
	// is set up afterwards; every other pod gets its network before pause joins it.
	userns := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetUsernsOptions().GetMode() == runtimeapi.NamespaceMode_POD
	if !userns {
		if err := s.setupNetwork(ctx, &rec, cfg, 0); err != nil {
			client.Shutdown()
			client.Close()
			return nil, err
		}
	}
	spec, err := oci.SandboxSpec(cfg, s.pauseRootfs(), filepath.Join(rec.CgroupParent, id), rec.NetNS)
	if err != nil {
		return nil, fmt.Errorf("%w: pod %s: %w", errdefs.ErrInvalid, cfg.GetMetadata().GetName(), err)
	}
	data, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	pid, err := client.Create(shim.CreateArgs{ID: pauseID, Spec: data, Start: true})
	if err != nil {
		client.Shutdown()
		client.Close()
		return nil, fmt.Errorf("start pause for pod %s: %w", id, err)
	}
	rec.PausePid = pid
	if err := s.pinNamespaces(id, pid, spec.Linux.Namespaces, client); err != nil {
		client.Shutdown()
		client.Close()
		return nil, err
	}
	if userns {
		if err := s.setupNetwork(ctx, &rec, cfg, pid); err != nil {
			client.Shutdown()
			client.Close()
			return nil, err
		}
	}
	rec.Ready = true
	if err := s.store.PutSandbox(&rec); err != nil {
		client.Shutdown()
		client.Close()
		return nil, err
	}
	return &sandbox{Sandbox: rec, shim: client}, nil
}

// writePodFiles writes /etc/hosts, /etc/resolv.conf and /etc/hostname for the pod and mounts its
// shared /dev/shm.
func (s *Server) writePodFiles(id string, cfg *runtimeapi.PodSandboxConfig) error {
	dir := s.podDir(id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("pod directory %s: %w", dir, err)
	}
	hostNet := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetNetwork() == runtimeapi.NamespaceMode_NODE
	hostname := cfg.GetHostname()
	if hostNet || hostname == "" {
		hostname, _ = os.Hostname()
	}
	hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
	if hostNet {
		if data, err := os.ReadFile("/etc/hosts"); err == nil {
			hosts = string(data)
		}
	}
	resolv := ""
	if dns := cfg.GetDnsConfig(); dns != nil && (len(dns.GetServers()) > 0 || len(dns.GetSearches()) > 0 || len(dns.GetOptions()) > 0) {
		var b strings.Builder
		if len(dns.GetSearches()) > 0 {
			fmt.Fprintf(&b, "search %s\n", strings.Join(dns.GetSearches(), " "))
		}
		for _, srv := range dns.GetServers() {
			fmt.Fprintf(&b, "nameserver %s\n", srv)
		}
		if len(dns.GetOptions()) > 0 {
			fmt.Fprintf(&b, "options %s\n", strings.Join(dns.GetOptions(), " "))
		}
		resolv = b.String()
	} else if data, err := os.ReadFile("/etc/resolv.conf"); err == nil {
		resolv = string(data)
	}
	for name, data := range map[string]string{"hosts": hosts, "resolv.conf": resolv, "hostname": hostname + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			return fmt.Errorf("pod file %s: %w", name, err)
		}
	}
	shm := filepath.Join(dir, "shm")
	if err := os.MkdirAll(shm, 0o1777); err != nil {
		return err
	}
	if cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetIpc() == runtimeapi.NamespaceMode_NODE {
		return nil // containers bind the host's /dev/shm instead; see podFiles
	}
	if err := unix.Mount("shm", shm, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=1777,size=65536k"); err != nil {
		return fmt.Errorf("pod /dev/shm: %w", err)
	}
	return nil
}

func (s *Server) podFiles(sb *sandbox) oci.PodFiles {
	dir := s.podDir(sb.ID)
	f := oci.PodFiles{Hosts: filepath.Join(dir, "hosts"), ResolvConf: filepath.Join(dir, "resolv.conf"),
		Hostname: filepath.Join(dir, "hostname"), Shm: filepath.Join(dir, "shm")}
	var cfg runtimeapi.PodSandboxConfig
	if proto.Unmarshal(sb.Config, &cfg) == nil &&
		cfg.GetLinux().GetSecurityContext().GetNamespaceOptions().GetIpc() == runtimeapi.NamespaceMode_NODE {
		f.Shm = "/dev/shm"
	}
	return f
}

// setupNetwork pins a network namespace for the pod — a new one, or with pausePid the one pause
// created — and has the pod network configure it (bridge, veth, address, hostPorts). Host-network
// pods and runtimes without a pod network skip this.
func (s *Server) setupNetwork(ctx context.Context, rec *store.Sandbox, cfg *runtimeapi.PodSandboxConfig, pausePid int) error {
	s.netMu.RLock()
	defer s.netMu.RUnlock()
	if rec.HostNetwork || s.network == nil {
		return nil
	}
	path := filepath.Join(s.opts.State, "netns", rec.ID)
	var err error
	if pausePid > 0 {
		err = netns.Pin(fmt.Sprintf("/proc/%d/ns/net", pausePid), path)
	} else {
		err = netns.New(path)
	}
	if err != nil {
		return fmt.Errorf("pod %s: network namespace: %w", rec.ID, err)
	}
	rec.NetNS = path
	pn := podnetapi.PodNet{ID: rec.ID, Name: rec.Name, Namespace: rec.Namespace, UID: rec.UID, NetNS: path}
	for _, pm := range cfg.GetPortMappings() {
		pn.PortMappings = append(pn.PortMappings, podnetapi.PortMapping{Protocol: pm.GetProtocol().String(),
			ContainerPort: pm.GetContainerPort(), HostPort: pm.GetHostPort(), HostIP: pm.GetHostIp()})
	}
	res, err := s.network.Setup(ctx, pn)
	if err != nil {
		s.network.Teardown(ctx, rec.ID, path)
		netns.Remove(path)
		if errors.Is(err, podnetapi.ErrInvalid) {
			err = fmt.Errorf("%w: %w", errdefs.ErrInvalid, err)
		}
		return fmt.Errorf("pod %s: network: %w", rec.ID, err)
	}
	for _, ip := range res.IPs {
		rec.IPs = append(rec.IPs, ip.Addr().String())
	}
	return nil
}

// teardownNetwork releases the pod's address, veth and hostPorts. It is idempotent; the pinned
// namespace goes only when the pod is removed (remove = true).
func (s *Server) teardownNetwork(ctx context.Context, sb *sandbox, remove bool) error {
	s.netMu.RLock()
	defer s.netMu.RUnlock()
	if sb.NetNS == "" || s.network == nil {
		return nil
	}
	if err := s.network.Teardown(ctx, sb.ID, sb.NetNS); err != nil {
		return fmt.Errorf("pod %s: network teardown: %w", sb.ID, err)
	}
	if remove {
		if err := netns.Remove(sb.NetNS); err != nil {
			return fmt.Errorf("pod %s: remove network namespace: %w", sb.ID, err)
		}
	}
	return nil
}

// pinNamespaces bind-mounts the namespaces pause holds for the pod (those containers join, see
// oci.PodNamespaces) under podNSDir. Containers join these files, so they get the pod's
// namespaces or nothing: /proc/<pause pid>/ns would be another process's once pause is gone and
// its pid reused. Pause must still be the shim's running child afterwards: a pid is not reused
// before its parent reaps it, so what was pinned is pause's.
func (s *Server) pinNamespaces(id string, pid int, namespaces []specs.LinuxNamespace, client *shim.Client) error {
	dir := s.podNSDir(id)
	for _, n := range namespaces {
		file, ok := oci.PodNamespaces[n.Type]
		if !ok {
			continue
		}
		// netns.Pin bind-mounts any namespace file, not only network ones.
		if err := netns.Pin(fmt.Sprintf("/proc/%d/ns/%s", pid, file), filepath.Join(dir, file)); err != nil {
			return fmt.Errorf("pod %s: pin its %s namespace: %w", id, n.Type, err)
		}
	}
	st, err := client.State(pauseID)
	if err != nil {
		return fmt.Errorf("pod %s: state of its pause process: %w", id, err)
	}
	if !st.Running || st.Pid != pid {
		return fmt.Errorf("pod %s: its pause process (pid %d) ended while its namespaces were pinned", id, pid)
	}
	return nil
}

// checkPause fails when the pod's pause process is no longer the shim's running child. Pause is
// the pod's sandbox, and the init of its pid namespace when the pod shares one: without it the
// pod must be recreated, so it is also marked not ready, which tells the kubelet to.
func (s *Server) checkPause(sb *sandbox) error {
	st, err := sb.shim.State(pauseID)
	if err != nil {
		return fmt.Errorf("pod %s: state of its pause process: %w", sb.ID, err)
	}
	if st.Running && st.Pid == sb.PausePid {
		return nil
	}
	gone := fmt.Errorf("pod %s (%s/%s): its pause process (pid %d) is gone: %w", sb.ID, sb.Namespace, sb.Name, sb.PausePid, errdefs.ErrPrecondition)
	s.mu.Lock()
	sb.Ready = false
	rec := sb.Sandbox
	s.mu.Unlock()
	if err := s.store.PutSandbox(&rec); err != nil {
		return errors.Join(gone, fmt.Errorf("pod %s: record it not ready: %w", sb.ID, err))
	}
	return gone
}

// cleanupPod removes what a failed or removed pod leaves on the node.
func (s *Server) cleanupPod(id, shimDir string) {
	dir := s.podDir(id)
	unix.Unmount(filepath.Join(dir, "shm"), unix.MNT_DETACH)
	os.RemoveAll(dir)
	pins, _ := filepath.Glob(filepath.Join(s.podNSDir(id), "*"))
	for _, p := range pins {
		netns.Remove(p)
	}
	os.Remove(s.podNSDir(id))
	os.RemoveAll(shimDir)
}
