// Package cniexec runs a pod network that ingot does not build in (Calico, Flannel, Cilium, or
// the reference plugins themselves) through libcni and the plugin binaries in the configured
// directories, with the contract kubelet's runtimes keep: CNI_ARGS carries IgnoreUnknown,
// K8S_POD_NAMESPACE, K8S_POD_NAME, K8S_POD_INFRA_CONTAINER_ID and K8S_POD_UID, and plugins that
// declare the portMappings capability get the pod's hostPorts in runtimeConfig.
//
// libcni caches each attachment's result and arguments under CacheDir; DEL replays them, so
// portmap removes exactly the rules it added, and Status answers after a runtime restart. The
// cache must therefore survive restarts and reboots (it lives under /var).
package cniexec

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"

	"ingot.dev/ingot/netsetup/cniconf"
	"ingot.dev/ingot/netsetup/podnetapi"
)

// DefaultBinDir is where plugin binaries are looked for, as in containerd's default.
const DefaultBinDir = "/opt/cni/bin"

// DefaultCacheDir is libcni's own default.
const DefaultCacheDir = "/var/lib/cni"

// Options configure a Delegate.
type Options struct {
	Conf      *cniconf.List
	BinDirs   []string // nil: DefaultBinDir
	CacheDir  string   // "": DefaultCacheDir
	Interface string   // the pod's interface; "": eth0
	Log       *slog.Logger
	// Exec runs the plugins; nil runs the binaries. Tests pass a fake.
	Exec invoke.Exec
}

// Delegate runs one conflist through external plugins.
type Delegate struct {
	conf    *cniconf.List
	list    *libcni.NetworkConfigList
	cni     *libcni.CNIConfig
	binDirs []string
	ifName  string
	log     *slog.Logger
}

var _ podnetapi.Provider = (*Delegate)(nil)

// New prepares the delegate; it does not run any plugin (Ready checks that they are there).
func New(o Options) (*Delegate, error) {
	if o.Conf == nil {
		return nil, errors.New("cniexec: no network configuration")
	}
	list, err := libcni.NetworkConfFromBytes(o.Conf.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.Conf.File, err)
	}
	d := &Delegate{conf: o.Conf, list: list, binDirs: o.BinDirs, ifName: o.Interface, log: o.Log}
	if d.binDirs == nil {
		d.binDirs = []string{DefaultBinDir}
	}
	if d.ifName == "" {
		d.ifName = "eth0"
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.log = d.log.With("network", o.Conf.Name)
	cache := o.CacheDir
	if cache == "" {
		cache = DefaultCacheDir
	}
	d.cni = libcni.NewCNIConfigWithCacheDir(d.binDirs, cache, o.Exec)
	return d, nil
}

func (d *Delegate) runtimeConf(p podnetapi.PodNet) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{
		ContainerID: p.ID,
		NetNS:       p.NetNS,
		IfName:      d.ifName,
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", p.Namespace},
			{"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ID},
			{"K8S_POD_UID", p.UID},
		},
	}
	var ports []map[string]any
	for _, m := range p.PortMappings {
		if m.HostPort == 0 {
			continue
		}
		proto := strings.ToLower(m.Protocol)
		if proto == "" {
			proto = "tcp"
		}
		ports = append(ports, map[string]any{"hostPort": m.HostPort, "containerPort": m.ContainerPort, "protocol": proto, "hostIP": m.HostIP})
	}
	if len(ports) > 0 {
		rt.CapabilityArgs = map[string]any{"portMappings": ports}
	}
	return rt
}

// Setup runs ADD for the pod through every plugin of the list.
func (d *Delegate) Setup(ctx context.Context, p podnetapi.PodNet) (*podnetapi.Result, error) {
	if p.ID == "" || p.NetNS == "" {
		return nil, fmt.Errorf("pod network setup: pod id and network namespace are required: %w", podnetapi.ErrInvalid)
	}
	res, err := d.cni.AddNetworkList(ctx, d.list, d.runtimeConf(p))
	if err != nil {
		return nil, fmt.Errorf("pod network %s: ADD for pod %s: %w", d.conf.Name, p.ID, err)
	}
	out, err := d.result(res)
	if err != nil {
		return nil, fmt.Errorf("pod network %s: result for pod %s: %w", d.conf.Name, p.ID, err)
	}
	out.NetNS = p.NetNS
	return out, nil
}

func (d *Delegate) result(res types.Result) (*podnetapi.Result, error) {
	r, err := types100.NewResultFromResult(res)
	if err != nil {
		return nil, err
	}
	out := &podnetapi.Result{Interface: d.ifName}
	for _, ifc := range r.Interfaces {
		if ifc.Name == d.ifName && ifc.Sandbox != "" {
			out.MAC = ifc.Mac
		}
	}
	for _, ip := range r.IPs {
		a, ok := netip.AddrFromSlice(ip.Address.IP)
		if !ok {
			continue
		}
		ones, _ := ip.Address.Mask.Size()
		out.IPs = append(out.IPs, netip.PrefixFrom(a.Unmap(), ones))
		if gw, ok := netip.AddrFromSlice(ip.Gateway); ok {
			out.Gateways = append(out.Gateways, gw.Unmap())
		}
	}
	return out, nil
}

// Teardown runs DEL with the arguments ADD had (from libcni's cache), so portmap and friends
// remove what they added. Plugins must accept a repeated DEL, which makes it idempotent.
func (d *Delegate) Teardown(ctx context.Context, podID, netnsPath string) error {
	rt := &libcni.RuntimeConf{ContainerID: podID, IfName: d.ifName, NetNS: netnsPath,
		Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_INFRA_CONTAINER_ID", podID}}}
	if _, cached, err := d.cni.GetNetworkListCachedConfig(d.list, rt); err == nil && cached != nil {
		rt.Args, rt.CapabilityArgs = cached.Args, cached.CapabilityArgs
	}
	if rt.NetNS == "" {
		rt.NetNS = d.cachedNetNS(podID)
	}
	if rt.NetNS != "" {
		if _, err := os.Stat(rt.NetNS); err != nil {
			rt.NetNS = "" // gone (a reboot): the spec lets plugins clean up without it
		}
	}
	if err := d.cni.DelNetworkList(ctx, d.list, rt); err != nil {
		return fmt.Errorf("pod network %s: DEL for pod %s: %w", d.conf.Name, podID, err)
	}
	return nil
}

// Status returns the cached ADD result, or an error wrapping podnetapi.ErrNotFound.
func (d *Delegate) Status(ctx context.Context, podID string) (*podnetapi.Result, error) {
	rt := &libcni.RuntimeConf{ContainerID: podID, IfName: d.ifName}
	res, err := d.cni.GetNetworkListCachedResult(d.list, rt)
	if err != nil {
		return nil, fmt.Errorf("pod network %s: cached result of %s: %w", d.conf.Name, podID, err)
	}
	if res == nil {
		return nil, fmt.Errorf("pod network of %s: %w", podID, podnetapi.ErrNotFound)
	}
	out, err := d.result(res)
	if err != nil {
		return nil, err
	}
	out.NetNS = d.cachedNetNS(podID)
	return out, nil
}

// cachedNetNS is the namespace path ADD ran with, from libcni's cache.
func (d *Delegate) cachedNetNS(podID string) string {
	atts, _ := d.cni.GetCachedAttachments(podID)
	for _, a := range atts {
		if a.Network == d.list.Name && a.IfName == d.ifName {
			return a.NetNS
		}
	}
	return ""
}

// Ready checks that every plugin binary the list names is installed (Calico and friends install
// theirs from a DaemonSet after the node starts, so this turns true later) and, for CNI 1.1
// lists, asks the plugins with STATUS.
func (d *Delegate) Ready(ctx context.Context) error {
	for _, p := range d.list.Plugins {
		if _, err := invoke.FindInPath(p.Network.Type, d.binDirs); err != nil {
			return fmt.Errorf("pod network %s: plugin %q is not installed in %s", d.conf.Name, p.Network.Type, strings.Join(d.binDirs, ":"))
		}
	}
	if err := d.cni.GetStatusNetworkList(ctx, d.list); err != nil {
		return fmt.Errorf("pod network %s: STATUS: %w", d.conf.Name, err)
	}
	return nil
}

// GC runs DEL for every cached attachment of a pod keep rejects, and GC for CNI 1.1 plugins.
func (d *Delegate) GC(ctx context.Context, keep func(podID string) bool) error {
	cached, err := d.cni.GetCachedAttachments("")
	if err != nil {
		return fmt.Errorf("pod network %s: cached attachments: %w", d.conf.Name, err)
	}
	args := &libcni.GCArgs{}
	for _, a := range cached {
		if a.Network == d.list.Name && keep(a.ContainerID) {
			args.ValidAttachments = append(args.ValidAttachments, types.GCAttachment{ContainerID: a.ContainerID, IfName: a.IfName})
		}
	}
	if err := d.cni.GCNetworkList(ctx, d.list, args); err != nil {
		return fmt.Errorf("pod network %s: GC: %w", d.conf.Name, err)
	}
	return nil
}

// Close does nothing: plugins keep no connection.
func (d *Delegate) Close() error { return nil }
