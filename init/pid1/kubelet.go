package pid1

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"ingot.dev/ingot/init/cgroup"
	"ingot.dev/ingot/init/kubelet"
	"ingot.dev/ingot/init/supervise"
	"ingot.dev/ingot/profiles"
)

// maxOpenFiles is the descriptor limit PID 1 gives its services: the kubelet and the runtime hold
// a descriptor per watched file, pod, log and connection (the kernel's default nr_open).
const maxOpenFiles = 1 << 20

// raiseOpenFiles lifts the descriptor limit every service inherits. syscall.Setrlimit (not
// unix's) also tells os/exec not to restore the limit Go started with in children.
func raiseOpenFiles() error {
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: maxOpenFiles, Max: maxOpenFiles})
}

// startKubelet writes the kubelet's configuration from the profile and the node config and
// starts it under supervision. The runtime answers by now.
func (n *Node) startKubelet(ctx context.Context, prof *profiles.Profile) error {
	hostname, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("kubelet: %w", err)
	}
	setup, err := kubelet.Plan(prof.Kubelet, hostname, nodeIP(), n.node.Config)
	if err != nil {
		return err
	}
	if err := setup.Write("/"); err != nil {
		return err
	}
	// The kubelet builds every pod's DNS settings from the node's resolv.conf and refuses to
	// start a pod when the file is missing, which it is on a network that offered no DNS
	// server. An empty one means no servers; DHCP replaces it when a lease names some.
	if f, err := os.OpenFile(kubelet.DefaultResolvConf, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); err == nil {
		f.Close()
		n.log.Info("no DNS servers known; pods get an empty resolv.conf until DHCP names some", "path", kubelet.DefaultResolvConf)
	}
	// The kubelet's mount propagation (Bidirectional and HostToContainer volumes) needs mounts
	// under / to propagate: make the whole tree shared, as systemd does on other distributions.
	if err := unix.Mount("", "/", "", unix.MS_SHARED|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("kubelet: make / rshared: %w", err)
	}
	spec := supervise.Spec{
		Name:      "kubelet",
		Path:      "/bin/kubelet",
		Args:      setup.Args,
		Env:       []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin"},
		Dir:       "/",
		Restart:   supervise.Always,
		Echo:      prof.Kubelet.Echo,
		CgroupDir: filepath.Join(cgroup.Root, cgroup.Services, "kubelet"),
		LogFile:   kubelet.LogPath,
	}
	if _, err := n.sup.Start(ctx, spec); err != nil {
		return fmt.Errorf("start the kubelet: %w", err)
	}
	n.log.Info("kubelet started", "node", hostname, "join", string(setup.Mode), "api_server", setup.APIServer, "args", strings.Join(setup.Args, " "))
	if setup.Mode == kubelet.Bootstrap {
		n.goSafe(func() { n.watchJoin(ctx, setup) })
	}
	return nil
}

// joinedCert is the client certificate TLS bootstrapping leaves: once it exists the node has
// joined, and the bootstrap token (which expires) no longer matters.
var joinedCert = filepath.Join(kubelet.CertDir, "kubelet-client-current.pem")

// watchJoin checks, until the node has joined, what a bootstrap-token join depends on, and says
// on the console and in the kubelet's log, once per change, what is wrong or that it is right.
// The kubelet retries by itself meanwhile.
func (n *Node) watchJoin(ctx context.Context, setup *kubelet.Setup) {
	last := ""
	for {
		if _, err := os.Stat(joinedCert); err == nil {
			return
		}
		c := kubelet.Probe(ctx, setup, 10*time.Second)
		if c.Msg != last {
			if c.OK {
				n.log.Info("kubelet join: " + c.Msg)
			} else {
				n.log.Warn("kubelet join: " + c.Msg + "; retrying")
			}
			noteKubeletLog("ingot: kubelet join: " + c.Msg)
			last = c.Msg
		}
		if c.OK {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Second):
		}
	}
}

// noteKubeletLog appends one line to the kubelet's persistent log, so the reason a join fails is
// beside the kubelet's own retries.
func noteKubeletLog(line string) {
	f, err := os.OpenFile(kubelet.LogPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return
	}
	defer f.Close()
	f.WriteString(time.Now().UTC().Format(time.RFC3339) + " " + line + "\n")
}

// nodeIP is the address the kubelet registers the node with (kubelet.NodeIP over the links).
func nodeIP() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return ""
	}
	var list []kubelet.Iface
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		k := kubelet.Iface{Name: ifc.Name}
		for _, a := range addrs {
			if pfx, err := netip.ParsePrefix(a.String()); err == nil {
				k.Addrs = append(k.Addrs, pfx)
			}
		}
		list = append(list, k)
	}
	return kubelet.NodeIP(list)
}
