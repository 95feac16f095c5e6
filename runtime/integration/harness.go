// Package integration runs the real runtime daemon (bin/ingot-node-<arch> runtime) on the host,
// in a private mount namespace, against an in-process test registry, and drives it with an
// unmodified crictl. Root only; the tier fails instead of skipping under CI=true.
package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ingot.dev/ingot/image/bundle"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/internal/testimages"
	"ingot.dev/ingot/netsetup/netns"
	"ingot.dev/ingot/runtime/oci"
)

// Runtime is one daemon under test.
type Runtime struct {
	t      testing.TB
	Dir    string // root, state, config and logs live here
	Socket string
	Config string
	// CNIConfDir is the runtime's CNI configuration directory (empty: the built-in default network).
	CNIConfDir string
	// CNIBinDir is where the runtime looks for CNI plugin binaries.
	CNIBinDir string
	// InNodeNetNS runs the daemon itself inside the private node network namespace.
	InNodeNetNS bool
	// CgroupRoot is the daemon's own parent cgroup for pods, removed at cleanup.
	CgroupRoot string
	// RegistryAddr is the test registry as the daemon reaches it: Registry's address, or with
	// InNodeNetNS a forwarder inside the node namespace (see ForwardRegistry).
	RegistryAddr string
	crictl       string
	cmd          *exec.Cmd
	done         chan struct{}
}

var (
	registryOnce sync.Once
	registryAddr string
	registryErr  error
)

// Registry builds the test images for the host arch (cached) and serves them once per process.
func Registry(t testing.TB) string {
	t.Helper()
	registryOnce.Do(func() {
		imgs, err := testimages.Build(context.Background(), testimages.Options{})
		if err != nil {
			registryErr = err
			return
		}
		registryAddr, _, registryErr = testimages.Serve(context.Background(), imgs)
	})
	if registryErr != nil {
		testgate.Skip(t, "cannot build or serve the test images: "+registryErr.Error())
	}
	return registryAddr
}

// NodeBinary is bin/ingot-node-<host arch> ($INGOT_BIN or <repo>/bin).
func NodeBinary(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("INGOT_BIN")
	if dir == "" {
		wd, _ := os.Getwd()
		for d := wd; d != "/"; d = filepath.Dir(d) {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				dir = filepath.Join(d, "bin")
				break
			}
		}
	}
	bin := filepath.Join(dir, "ingot-node-"+runtime.GOARCH)
	if _, err := os.Stat(bin); err != nil {
		testgate.Skip(t, "the node binary "+bin+" is not built (run make build)")
	}
	return bin
}

// Start runs a daemon with a config.toml whose registry mirrors point at the test registry.
func Start(t testing.TB) *Runtime { t.Helper(); return StartWith(t, nil) }

// StartWith is Start with prepare run on the runtime's directory before the daemon starts
// (e.g. to write a CNI conflist).
func StartWith(t testing.TB, prepare func(r *Runtime)) *Runtime {
	t.Helper()
	testgate.RequireRoot(t)
	testgate.RequireCommand(t, "unshare")
	bin := NodeBinary(t)
	addr := Registry(t)
	crictl, err := bundle.Crictl(context.Background(), cachedir.Default(), "")
	if err != nil {
		testgate.Skip(t, "cannot build crictl: "+err.Error())
	}
	dir, err := os.MkdirTemp("", "ingot-rt-")
	if err != nil {
		t.Fatal(err)
	}
	r := &Runtime{t: t, Dir: dir, Socket: filepath.Join(dir, "state", "ingot.sock"), Config: filepath.Join(dir, "config.toml"), crictl: crictl,
		CgroupRoot: "/" + filepath.Base(dir)}
	// The CNI directories are the test's own: the host's /etc/cni/net.d must not decide the
	// pods' network.
	r.CNIConfDir = filepath.Join(dir, "cni", "net.d")
	r.CNIBinDir = filepath.Join(dir, "cni", "bin")
	os.MkdirAll(r.CNIConfDir, 0o755)
	r.RegistryAddr = addr
	cfg := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\n\n[grpc]\n  address = %q\n\n", filepath.Join(dir, "root"), filepath.Join(dir, "state"), r.Socket) +
		fmt.Sprintf("[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  conf_dir = %q\n  bin_dir = %q\n\n", r.CNIConfDir, r.CNIBinDir) +
		testimages.MirrorsTOML(addr)
	if err := os.WriteFile(r.Config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "crictl.yaml"), []byte(fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", r.Socket, r.Socket)), 0o644)
	t.Cleanup(r.cleanup)
	if err := netns.New(r.NodeNetNS()); err != nil {
		t.Fatal(err)
	}
	if prepare != nil {
		prepare(r)
	}
	if r.RegistryAddr != addr {
		// prepare pointed the daemon at a forwarder: the mirrors follow (prepare may have
		// added to the config, so only they change).
		data, err := os.ReadFile(r.Config)
		if err != nil {
			t.Fatal(err)
		}
		data = []byte(strings.Replace(string(data), testimages.MirrorsTOML(addr), testimages.MirrorsTOML(r.RegistryAddr), 1))
		if err := os.WriteFile(r.Config, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r.start(bin)
	return r
}

func (r *Runtime) start(bin string) {
	r.t.Helper()
	logf, err := os.OpenFile(filepath.Join(r.Dir, "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	// A private mount namespace: overlay and shm mounts never show up on the host.
	// The pod network uses a private network namespace as the node's, so the host's network is
	// never touched; the daemon itself stays in the host's to reach the test registry.
	nodeNetNS := r.NodeNetNS()
	if !netns.Is(nodeNetNS) {
		if err := netns.New(nodeNetNS); err != nil {
			r.t.Fatal(err)
		}
	}
	r.cmd = exec.Command("unshare", "--mount", "--propagation", "private", bin, "runtime", "--config", r.Config,
		"--cgroup-root", r.CgroupRoot, "--node-netns", nodeNetNS)
	if r.InNodeNetNS {
		// External CNI plugins act on the runtime's own network namespace: run the whole daemon in
		// the private one (it then reaches the test registry only through RegistryAddr set to a
		// ForwardRegistry address).
		r.cmd = exec.Command("nsenter", "--net="+nodeNetNS, "--", "unshare", "--mount", "--propagation", "private",
			bin, "runtime", "--config", r.Config, "--cgroup-root", r.CgroupRoot)
	}
	r.cmd.Stdout, r.cmd.Stderr = logf, logf
	r.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.done = make(chan struct{})
	go func() { r.cmd.Wait(); logf.Close(); close(r.done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := r.Crictl("version"); err == nil {
			return
		}
		select {
		case <-r.done:
			r.t.Fatalf("runtime exited at start:\n%s", r.Log())
		default:
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("runtime did not answer within 30s:\n%s", r.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// NodeNetNS is the private network namespace the daemon's pod network uses as the node's.
func (r *Runtime) NodeNetNS() string { return filepath.Join(r.Dir, "node.netns") }

// Restart starts the daemon again after Kill.
func (r *Runtime) Restart() { r.start(NodeBinary(r.t)) }

// RestartFails starts the daemon again after Kill, expects it to exit at start, and returns
// what it printed.
func (r *Runtime) RestartFails() string {
	r.t.Helper()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", NodeBinary(r.t), "runtime", "--config", r.Config,
		"--cgroup-root", r.CgroupRoot, "--node-netns", filepath.Join(r.Dir, "node.netns"))
	out, err := cmd.CombinedOutput()
	if err == nil {
		r.t.Fatalf("the runtime started although it should not have:\n%s", out)
	}
	return string(out)
}

// Kill sends SIGKILL to the daemon (not to its shims, which run in their own sessions).
func (r *Runtime) Kill() {
	r.cmd.Process.Signal(syscall.SIGKILL)
	<-r.done
	// unshare execs the daemon, so the process killed is the daemon itself.
}

// Log is the daemon's output so far.
func (r *Runtime) Log() string {
	data, _ := os.ReadFile(filepath.Join(r.Dir, "daemon.log"))
	return string(data)
}

// Crictl runs crictl against the daemon and returns its standard output; on failure the error
// carries its standard error.
func (r *Runtime) Crictl(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.crictl, append([]string{"--config", filepath.Join(r.Dir, "crictl.yaml")}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), err
}

// MustCrictl runs crictl and fails the test on error.
func (r *Runtime) MustCrictl(args ...string) string {
	r.t.Helper()
	out, err := r.Crictl(args...)
	if err != nil {
		r.t.Fatalf("crictl %s: %v\n%s\ndaemon log:\n%s", strings.Join(args, " "), err, out, tail(r.Log(), 3000))
	}
	return out
}

// cleanup removes every pod (so shims and containers end), stops the daemon and the directory.
func (r *Runtime) cleanup() {
	if r.cmd == nil { // the test ended before the daemon was started
		netns.Remove(r.NodeNetNS())
		os.RemoveAll(r.Dir)
		return
	}
	select {
	case <-r.done:
		r.start(NodeBinary(r.t))
	default:
	}
	if out, err := r.Crictl("pods", "-q"); err == nil {
		for _, id := range strings.Fields(out) {
			r.Crictl("stopp", id)
			r.Crictl("rmp", id)
		}
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		r.cmd.Process.Kill()
		<-r.done
	}
	if r.t.Failed() {
		r.t.Logf("daemon log:\n%s", tail(r.Log(), 4000))
	}
	if err := oci.RemoveCgroup(r.CgroupRoot); err != nil {
		r.t.Errorf("cgroups left behind: %v", err)
	}
	netns.Remove(filepath.Join(r.Dir, "node.netns"))
	os.RemoveAll(r.Dir)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
