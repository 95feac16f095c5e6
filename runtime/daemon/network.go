package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"ingot.dev/ingot/netsetup/cniconf"
	"ingot.dev/ingot/netsetup/cniexec"
	"ingot.dev/ingot/netsetup/podnet"
	"ingot.dev/ingot/netsetup/podnetapi"
	"ingot.dev/ingot/runtime/config"
)

// network owns the pod network provider across pod CIDR changes.
type network struct {
	cfg       *config.Config
	nodeNetNS string
	log       *slog.Logger
	fromFile  bool // a conflist in conf_dir defines the network; the kubelet's pod CIDR is ignored
	current   podnetapi.Provider
}

func (n *network) cidrFile() string { return filepath.Join(n.cfg.RootDir, "net", "pod-cidr") }

// open reads the CNI configuration (the first conflist in conf_dir, as containerd does; none:
// ingot's default bridge network, over the pod CIDR the kubelet gave earlier if any) and opens
// the pod network: built in when every plugin of the list is one ingot implements, otherwise the
// plugins' binaries through libcni. A bad conflist stops the runtime with the file and field
// named; pods already running keep their network, which lives in their own namespaces.
func (n *network) open(ctx context.Context) (podnetapi.Provider, error) {
	list, err := cniconf.Load(n.cfg.CNI.ConfDir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		list = cniconf.Default()
		if cidrs := n.savedCIDRs(); len(cidrs) > 0 {
			if list, err = cniconf.DefaultFor(cidrs); err != nil {
				return nil, fmt.Errorf("pod network over %v: %w", cidrs, err)
			}
		}
		n.log.Info("no CNI configuration; using the built-in default network", "dir", n.cfg.CNI.ConfDir, "subnets", fmt.Sprint(list.Subnets()))
	case err != nil:
		return nil, fmt.Errorf("pod network: %w", err)
	default:
		n.fromFile = true
	}
	p, err := n.provider(ctx, list)
	if err != nil {
		return nil, err
	}
	n.current = p
	return p, nil
}

func (n *network) provider(ctx context.Context, list *cniconf.List) (podnetapi.Provider, error) {
	if ok, why := list.Native(); !ok {
		n.log.Info("pod network through CNI plugins", "network", list.Name, "why", why, "bin_dirs", n.cfg.CNI.BinDirs)
		return cniexec.New(cniexec.Options{Conf: list, BinDirs: n.cfg.CNI.BinDirs,
			CacheDir: filepath.Join(n.cfg.RootDir, "cni", "cache"), Log: n.log})
	}
	p, err := podnet.Open(ctx, podnet.Options{Conf: list, StateDir: filepath.Join(n.cfg.RootDir, "net"), NodeNetNS: n.nodeNetNS, Log: n.log})
	if err != nil {
		return nil, fmt.Errorf("pod network: %w", err)
	}
	n.log.Info("built-in pod network", "network", list.Name, "subnets", fmt.Sprint(list.Subnets()))
	return p, nil
}

func (n *network) savedCIDRs() []netip.Prefix {
	data, err := os.ReadFile(n.cidrFile())
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, f := range strings.Fields(string(data)) {
		if p, err := netip.ParsePrefix(f); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// podCIDR is the CRI server's hook for UpdateRuntimeConfig: the kubelet's pod CIDR replaces the
// default network's 10.88.0.0/16 (as containerd's conflist template does) and is remembered for
// later starts. A conflist file wins over it; with pods on the network the switch waits for the
// next start, so no running pod loses its address.
func (n *network) podCIDR(ctx context.Context, cidrs []netip.Prefix, busy bool) (podnetapi.Provider, error) {
	if n.fromFile {
		n.log.Info("the CNI configuration file defines the pod network; the kubelet's pod CIDR is not used", "cidrs", fmt.Sprint(cidrs))
		return nil, nil
	}
	var b strings.Builder
	for _, c := range cidrs {
		b.WriteString(c.String() + "\n")
	}
	if err := os.MkdirAll(filepath.Dir(n.cidrFile()), 0o700); err != nil {
		return nil, err
	}
	tmp := n.cidrFile() + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o600); err != nil {
		return nil, fmt.Errorf("remember pod CIDR: %w", err)
	}
	if err := os.Rename(tmp, n.cidrFile()); err != nil {
		return nil, fmt.Errorf("remember pod CIDR: %w", err)
	}
	if busy {
		n.log.Warn("pods use the current pod network; the new pod CIDR takes effect when the runtime next starts", "cidrs", fmt.Sprint(cidrs))
		return nil, nil
	}
	list, err := cniconf.DefaultFor(cidrs)
	if err != nil {
		return nil, fmt.Errorf("pod network over %v: %w", cidrs, err)
	}
	// The built-in network holds its database open: close it before opening the new one.
	if n.current != nil {
		n.current.Close()
	}
	p, err := n.provider(ctx, list)
	if err != nil {
		n.current = nil
		return nil, err
	}
	n.current = p
	return p, nil
}

func (n *network) close() {
	if n.current != nil {
		n.current.Close()
	}
}
