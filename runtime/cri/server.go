// Package cri is ingot's CRI v1 server: RuntimeService and ImageService over gRPC on a unix
// socket. It reads like the API — one file per RPC group — and delegates to the domain packages:
// oci (specs and libcontainer), shim (the per-pod process holding containers), store (persisted
// state), images (pull and layers) and logs.
package cri

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/netsetup/podnetapi"
	"ingot.dev/ingot/runtime/errdefs"
	"ingot.dev/ingot/runtime/oci"
	"ingot.dev/ingot/runtime/pause"
	"ingot.dev/ingot/runtime/shim"
	"ingot.dev/ingot/runtime/stats"
	"ingot.dev/ingot/runtime/store"
)

// Options configure the server.
type Options struct {
	Root       string // persistent: /var/lib/ingot
	State      string // volatile: /run/ingot
	Exe        string // the ingot-node binary: shims and the pause process run it
	CgroupRoot string // parent cgroup of pods without a kubelet-given parent
	MaxLogLine int
	Images     ImageStore
	// Network is the pod network (netsetup/podnet built in, or CNI plugins through
	// netsetup/cniexec); nil: pods get loopback only and NetworkReady is false.
	Network podnetapi.Provider
	// PodCIDR is told the pod CIDRs the kubelet assigns (UpdateRuntimeConfig); busy says pods on
	// the pod network exist. It returns a new network to use from now on, or nil to keep the
	// current one (a conflist file wins over the CIDR; pods keep the network they started on).
	PodCIDR func(ctx context.Context, cidrs []netip.Prefix, busy bool) (podnetapi.Provider, error)
	Log     *slog.Logger
	Version string
	// UnsetSeccompProfile is the seccomp profile of a container whose request names none
	// (config.toml's unset_seccomp_profile; oci.Seccomp says when it applies).
	UnsetSeccompProfile string
	// DrainExecSyncIOTimeout bounds how long ExecSync still reads a command's output after it
	// exited, while children it left behind hold it (config.toml's drain_exec_sync_io_timeout).
	DrainExecSyncIOTimeout time.Duration
}

// Server implements the CRI RuntimeService and ImageService.
type Server struct {
	runtimeapi.UnimplementedRuntimeServiceServer
	runtimeapi.UnimplementedImageServiceServer

	opts  Options
	log   *slog.Logger
	store *store.Store

	// netMu guards network: Setup and Teardown run under the read lock, a switch to a network over
	// a new pod CIDR under the write lock.
	netMu   sync.RWMutex
	network podnetapi.Provider

	mu         sync.Mutex
	sandboxes  map[string]*sandbox
	containers map[string]*store.Container
	names      map[string]string // reserved pod and container names → id
	// ctrLocks holds each container's operation lock (lockContainer); an entry goes with its
	// container. Lock order: a container's lock, then mu; never wait for one holding mu.
	ctrLocks map[string]*sync.Mutex
	podCIDR  string

	// cgroupFS is where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup); tests point it at a
	// fake. cpuSamples keeps each pod's and container's previous CPU reading for usage_nano_cores.
	cgroupFS   string
	cpuSamples stats.CPUSampler
	events     *eventBroadcaster // GetContainerEvents' subscribers
	// streams is the streaming server Exec, Attach and PortForward hand out URLs on (ServeStreams).
	streams atomic.Pointer[StreamServer]

	bounding []string // the runtime's capability bounding set: what privileged containers get
	rro      bool     // the kernel has mount_setattr: recursive read-only mounts work
}

type sandbox struct {
	store.Sandbox
	shim shimClient // nil when the shim is gone
}

// shimClient is what the server asks of a pod's shim (a *shim.Client); the unit tests give the
// server a fake.
type shimClient interface {
	Create(a shim.CreateArgs) (pid int, err error)
	Start(id string) error
	State(id string) (shim.State, error)
	Wait(ctx context.Context, id string, timeout time.Duration) (shim.State, error)
	Signal(id string, sig syscall.Signal, all bool) error
	Remove(id string) error
	Exec(a shim.ExecArgs) (shim.ExecResult, error)
	Reopen(id string) error
	Update(a shim.UpdateArgs) error
	Stats(id string) (oci.Usage, error)
	Shutdown() error
	Close() error
}

// New opens the runtime's state and recovers every pod and container it had.
func New(ctx context.Context, o Options) (*Server, error) {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.CgroupRoot == "" {
		o.CgroupRoot = "/ingot.pods"
	}
	for _, d := range []string{o.State, filepath.Join(o.State, "pods")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("runtime directory %s: %w", d, err)
		}
	}
	// Containers in a user namespace are not root on the host: they must be able to walk (not
	// list) the way to their rootfs and pod files, as with containerd's 0711 root.
	for _, d := range []string{o.Root, filepath.Join(o.Root, "pods"), filepath.Join(o.Root, "containers")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("runtime directory %s: %w", d, err)
		}
		if err := os.Chmod(d, 0o711); err != nil {
			return nil, fmt.Errorf("runtime directory %s: %w", d, err)
		}
	}
	st, err := store.Open(filepath.Join(o.Root, "runtime.db"))
	if err != nil {
		return nil, err
	}
	s := &Server{opts: o, log: o.Log, store: st, network: o.Network, sandboxes: map[string]*sandbox{},
		containers: map[string]*store.Container{}, names: map[string]string{}, ctrLocks: map[string]*sync.Mutex{}, rro: hasMountSetattr(),
		cgroupFS: "/sys/fs/cgroup", events: newEventBroadcaster(o.Log)}
	if s.bounding, err = oci.BoundingSet(); err != nil {
		st.Close()
		return nil, err
	}
	if err := s.preparePause(); err != nil {
		st.Close()
		return nil, err
	}
	if oom := oci.DetectOOMLimit(); !oom.CanLower {
		// Said once here rather than per container: it holds for every container this runtime starts.
		s.log.Warn("the runtime lacks CAP_SYS_RESOURCE in the node's user namespace: containers' oom_score_adj is raised to at least the runtime's own",
			"oom_score_adj", oom.Own)
	}
	if err := s.restoreState(ctx); err != nil {
		st.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the state database. Pods and containers keep running in their shims.
func (s *Server) Close() error { return s.store.Close() }

// Register adds both CRI services to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	runtimeapi.RegisterRuntimeServiceServer(g, s)
	runtimeapi.RegisterImageServiceServer(g, s)
}

// Listen opens the CRI socket (mode 0660), replacing a stale one.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}

// preparePause lays out the pause container's root: an empty tree and the pause program as /pause
// (runtime/pause: a few hundred bytes, so nothing is copied at start and a pod's pause costs a page
// or two). The file is replaced only when its content differs, through a rename, so a pause that
// runs keeps its own copy.
func (s *Server) preparePause() error {
	dir := s.pauseRootfs()
	dst := filepath.Join(dir, "pause")
	bin, err := pause.Binary(goruntime.GOARCH)
	if err != nil {
		return err
	}
	for _, d := range []string{"", "proc", "dev", "sys", "etc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("pause rootfs: %w", err)
		}
	}
	if old, err := os.ReadFile(dst); err == nil && bytes.Equal(old, bin) {
		if fi, err := os.Stat(dst); err == nil && fi.Mode().Perm() == 0o755 {
			return nil
		}
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, bin, 0o755); err != nil {
		return fmt.Errorf("pause binary: %w", err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil { // WriteFile's mode is masked by the umask
		return fmt.Errorf("pause binary: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("pause binary: %w", err)
	}
	return nil
}

// hasMountSetattr probes for mount_setattr(2) (Linux 5.12), which recursive read-only mounts
// need: with a bad descriptor it fails with EBADF where it exists and ENOSYS where it does not.
func hasMountSetattr() bool {
	err := unix.MountSetattr(-1, "", unix.AT_EMPTY_PATH, &unix.MountAttr{})
	return err != unix.ENOSYS
}

func (s *Server) pauseRootfs() string { return filepath.Join(s.opts.Root, "pause") }

func newID() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// resolveSandbox finds a sandbox by full id or unique prefix. Callers hold s.mu.
func (s *Server) resolveSandbox(id string) (*sandbox, error) {
	if id == "" {
		return nil, fmt.Errorf("pod sandbox id is empty: %w", errdefs.ErrInvalid)
	}
	if sb, ok := s.sandboxes[id]; ok {
		return sb, nil
	}
	var found *sandbox
	for k, sb := range s.sandboxes {
		if strings.HasPrefix(k, id) {
			if found != nil {
				return nil, fmt.Errorf("pod sandbox id prefix %q is ambiguous: %w", id, errdefs.ErrInvalid)
			}
			found = sb
		}
	}
	if found == nil {
		return nil, fmt.Errorf("pod sandbox %q: %w", id, errdefs.ErrNotFound)
	}
	return found, nil
}

// resolveContainer finds a container by full id or unique prefix. Callers hold s.mu.
func (s *Server) resolveContainer(id string) (*store.Container, error) {
	if id == "" {
		return nil, fmt.Errorf("container id is empty: %w", errdefs.ErrInvalid)
	}
	if c, ok := s.containers[id]; ok {
		return c, nil
	}
	var found *store.Container
	for k, c := range s.containers {
		if strings.HasPrefix(k, id) {
			if found != nil {
				return nil, fmt.Errorf("container id prefix %q is ambiguous: %w", id, errdefs.ErrInvalid)
			}
			found = c
		}
	}
	if found == nil {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	return found, nil
}

// sandbox finds a pod by full id or unique prefix, under s.mu. Every handler that names a pod
// resolves it here.
func (s *Server) sandbox(id string) (*sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resolveSandbox(id)
}

// container finds a container by full id or unique prefix and its pod, under s.mu; the pod is
// nil when the pod record is gone. Every handler that names a container resolves it here.
func (s *Server) container(id string) (*store.Container, *sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, err := s.resolveContainer(id)
	if err != nil {
		return nil, nil, err
	}
	return c, s.sandboxes[c.SandboxID], nil
}

// lockContainer takes c's operation lock, which serialises the handlers that change a container
// (start, stop, remove, update, recording its exit), so that a Stop racing a Remove cannot write
// the record back after it was deleted. It reports false, holding nothing, when c was removed
// while the caller waited; otherwise the caller must call unlock.
func (s *Server) lockContainer(c *store.Container) (unlock func(), ok bool) {
	s.mu.Lock()
	l := s.ctrLockLocked(c)
	s.mu.Unlock()
	if l == nil {
		return nil, false
	}
	l.Lock()
	s.mu.Lock()
	ok = s.containers[c.ID] == c
	s.mu.Unlock()
	if !ok {
		l.Unlock()
		return nil, false
	}
	return l.Unlock, true
}

// tryLockContainer is lockContainer for readers that would rather not wait: false when another
// handler is working on c (it records what changes) or c is gone.
func (s *Server) tryLockContainer(c *store.Container) (unlock func(), ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.ctrLockLocked(c)
	if l == nil || !l.TryLock() {
		return nil, false
	}
	return l.Unlock, true
}

// ctrLockLocked is c's operation lock, nil when c is no longer known. Callers hold s.mu.
func (s *Server) ctrLockLocked(c *store.Container) *sync.Mutex {
	if s.containers[c.ID] != c {
		return nil
	}
	l, ok := s.ctrLocks[c.ID]
	if !ok {
		l = &sync.Mutex{}
		s.ctrLocks[c.ID] = l
	}
	return l
}

// stateOf reads c's state under s.mu.
func (s *Server) stateOf(c *store.Container) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return c.State
}

// grpcErr logs failures with the request's object and returns the gRPC status.
func (s *Server) grpcErr(op string, err error, attrs ...any) error {
	if err == nil {
		return nil
	}
	s.log.Warn(op+" failed", append(attrs, "err", err)...)
	return errdefs.ToGRPC(err)
}

var errNoShim = errors.New("the pod's shim is gone")
