package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"ingot.dev/ingot/image/bundle"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/internal/testimages"
	"ingot.dev/ingot/netsetup/netns"
	"ingot.dev/ingot/runtime/oci"
)

// Containerd is a containerd daemon (bundle.ContainerdVersion, with runc bundle.RuncVersion)
// run beside ingot's for the comparison benchmarks, set up the way ingot's is: a private mount
// namespace, its own node network namespace, the same test registry, the same CNI conflist and
// the same reference plugin binaries. Its CRI plugin keeps its default configuration except for
// paths, which all point into Dir so that nothing lands on the host.
type Containerd struct {
	t      testing.TB
	Dir    string
	Socket string
	NetNS  string // the node network namespace containerd and its CNI plugins act in
	// ownsCgroup is whether the k8s.io cgroup containerd's pods go under (the CRI plugin's
	// parent when the pod names none) is this daemon's to remove at cleanup.
	ownsCgroup bool
	cmd        *exec.Cmd
	done       chan struct{}
}

// StartContainerd builds (once, into the cache) and starts containerd with conflist as its only
// CNI network. The registry is reached through a forwarder inside the node namespace.
func StartContainerd(t testing.TB, conflist string) *Containerd {
	t.Helper()
	testgate.RequireRoot(t)
	testgate.RequireCommand(t, "unshare")
	testgate.RequireCommand(t, "nsenter")
	ctrDir, runcDir, err := bundle.Containerd(context.Background(), cachedir.Default())
	if err != nil {
		testgate.Skip(t, "cannot build containerd and runc: "+err.Error())
	}
	plugins, err := bundle.CNIPlugins(context.Background(), cachedir.Default(), "")
	if err != nil {
		testgate.Skip(t, "cannot build the CNI reference plugins: "+err.Error())
	}
	addr := Registry(t)
	dir, err := os.MkdirTemp("", "ingot-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	c := &Containerd{t: t, Dir: dir, Socket: filepath.Join(dir, "containerd.sock"), NetNS: filepath.Join(dir, "node.netns")}
	c.ownsCgroup = !exists("/sys/fs/cgroup/"+podCgroup) && !exists("/sys/fs/cgroup/memory/"+podCgroup)
	t.Cleanup(c.cleanup)
	if err := netns.New(c.NetNS); err != nil {
		t.Fatal(err)
	}
	inside := ForwardRegistry(t, c.NetNS, addr)
	if err := testimages.WriteHostsDir(filepath.Join(dir, "certs.d"), inside); err != nil {
		t.Fatal(err)
	}
	// The programs run from a tmpfs, as ingot's side does (see ProgramDir).
	progDir := ProgramDir(t)
	for _, p := range []string{filepath.Join(ctrDir, "containerd"), filepath.Join(ctrDir, "containerd-shim-runc-v2"), filepath.Join(runcDir, "runc")} {
		copyFile(t, p, filepath.Join(progDir, filepath.Base(p)))
	}
	binDir, confDir := filepath.Join(dir, "cni", "bin"), filepath.Join(dir, "cni", "net.d")
	os.MkdirAll(binDir, 0o755)
	os.MkdirAll(confDir, 0o755)
	for _, p := range plugins {
		copyFile(t, p, filepath.Join(binDir, filepath.Base(p)))
	}
	if err := os.WriteFile(filepath.Join(confDir, "10-bench.conflist"), []byte(strings.ReplaceAll(conflist, "@DIR@", dir)), 0o644); err != nil {
		t.Fatal(err)
	}
	// Only paths differ from containerd's defaults, and NRI is off (its socket would be the
	// host's). Where root lacks CAP_SYS_RESOURCE (some sandboxes), runc cannot give the pause
	// process containerd's oom_score_adj of -998, and restrict_oom_score_adj is containerd's own
	// answer: what ingot does there by itself.
	cfg := fmt.Sprintf(`version = 3
root = %q
state = %q

[grpc]
  address = %q

[plugins.'io.containerd.internal.v1.opt']
  path = %q

[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = %q

[plugins.'io.containerd.cri.v1.runtime']
  restrict_oom_score_adj = %t

[plugins.'io.containerd.cri.v1.runtime'.cni]
  bin_dirs = [%q]
  conf_dir = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Socket, filepath.Join(dir, "opt"),
		filepath.Join(dir, "certs.d"), !hasCapSysResource(), binDir, confDir)
	config := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	// The shims keep runc's state under /run/containerd and the CRI plugin pins pod network
	// namespaces under /run/netns: a tmpfs over /run in the private mount namespace keeps both
	// off the host.
	c.cmd = exec.Command("nsenter", "--net="+c.NetNS, "--", "unshare", "--mount", "--propagation", "private", "--",
		"/bin/sh", "-c", `mount -t tmpfs -o mode=0755 tmpfs /run && exec "$0" "$@"`,
		filepath.Join(progDir, "containerd"), "--config", config)
	c.cmd.Env = append(os.Environ(), "PATH="+progDir+":/usr/sbin:/usr/bin:/sbin:/bin")
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.done = make(chan struct{})
	go func() { c.cmd.Wait(); logf.Close(); close(c.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if conn, err := net.Dial("unix", c.Socket); err == nil {
			conn.Close()
			if c.cmd.Process != nil && c.Pid() > 0 {
				return c
			}
		}
		select {
		case <-c.done:
			t.Fatalf("containerd exited at start:\n%s", c.Log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("containerd did not answer within 60s:\n%s", tail(c.Log(), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Pid is the containerd process (nsenter, unshare and sh exec into it, so it is the child's pid).
func (c *Containerd) Pid() int { return c.cmd.Process.Pid }

// Log is what containerd has printed so far.
func (c *Containerd) Log() string {
	data, _ := os.ReadFile(filepath.Join(c.Dir, "containerd.log"))
	return string(data)
}

// Shims are the pids of containerd-shim-runc-v2 processes serving this daemon. The shims
// daemonize (their parent is not containerd), so they are found by the daemon address on their
// command line.
func (c *Containerd) Shims() []int {
	var pids []int
	for pid := range processTable() {
		cl := cmdline(pid)
		if strings.Contains(cl, "containerd-shim-runc-v2\x00") && strings.Contains(cl, "\x00-address\x00"+c.Socket+"\x00") {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cleanup stops containerd's pods through the CRI, then containerd, and removes its directory.
func (c *Containerd) cleanup() {
	if c.cmd != nil && c.cmd.Process != nil {
		removeAllPods(c.Socket)
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			c.cmd.Process.Kill()
			<-c.done
		}
		// A shim whose pod could not be removed would otherwise outlive the test.
		for _, pid := range c.Shims() {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if c.ownsCgroup {
		if err := oci.RemoveCgroup("/" + podCgroup); err != nil {
			c.t.Errorf("containerd's cgroups left behind: %v", err)
		}
	}
	if c.t.Failed() {
		c.t.Logf("containerd log:\n%s", tail(c.Log(), 4000))
	}
	// The overlay mounts of containerd's snapshots lived in its private mount namespace and went
	// with it; its root is plain files now.
	netns.Remove(c.NetNS)
	os.RemoveAll(c.Dir)
}

// ForwardRegistry listens on 127.0.0.1 inside the network namespace at path (bringing its
// loopback up) and forwards every connection to the test registry at addr in the host's, so a
// daemon confined to that namespace pulls from the same registry. It returns the address to use
// inside the namespace.
func ForwardRegistry(t testing.TB, path, addr string) string {
	t.Helper()
	var l net.Listener
	err := netns.Do(path, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		t.Fatalf("registry forwarder in %s: %v", path, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				// This goroutine is not on the namespace's locked thread: it dials from the host's.
				out, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer out.Close()
				go func() { io.Copy(out, in); out.(*net.TCPConn).CloseWrite() }()
				io.Copy(in, out)
			}()
		}
	}()
	return l.Addr().String()
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
}

// podCgroup is where containerd's CRI plugin puts a pod whose config names no cgroup parent.
const podCgroup = "k8s.io"

func exists(path string) bool { _, err := os.Stat(path); return err == nil }

// hasCapSysResource reports whether this process has CAP_SYS_RESOURCE in its effective set.
func hasCapSysResource() bool {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && caps&(1<<unix.CAP_SYS_RESOURCE) != 0
		}
	}
	return false
}
