package pid1

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/init/boot"
	"ingot.dev/ingot/init/cgroup"
	"ingot.dev/ingot/init/supervise"
	"ingot.dev/ingot/netsetup/dhcp"
	"ingot.dev/ingot/netsetup/link"
	"ingot.dev/ingot/profiles"
)

// RuntimeSocket is the CRI socket the runtime serves (runtime/config's default).
const RuntimeSocket = "/run/ingot/ingot.sock"

// ServiceLogDir holds each service's output as <name>.log (`ingot-node logs NAME` reads it).
const ServiceLogDir = "/run/ingot/services"

// runtimeSpec supervises `/init runtime`, the CRI daemon (this same binary); echo copies its log
// to the console.
func runtimeSpec(echo bool) supervise.Spec {
	return supervise.Spec{
		Name:      "runtime",
		Path:      "/init",
		Args:      []string{"runtime"},
		Env:       []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin"},
		Dir:       "/",
		Restart:   supervise.Always,
		Echo:      echo,
		CgroupDir: filepath.Join(cgroup.Root, cgroup.Services, "runtime"),
	}
}

// waitRuntime blocks until the runtime answers a CRI Status call, saying so on the console every
// 10 s while it does not.
func (n *Node) waitRuntime(ctx context.Context, socket string) {
	start := time.Now()
	last := start
	for {
		if err := criStatus(ctx, socket); err == nil {
			n.log.Info("CRI runtime ready", "socket", socket, "took", time.Since(start).Round(time.Millisecond))
			return
		} else if time.Since(last) > 10*time.Second {
			n.log.Warn("still waiting for the CRI runtime", "socket", socket, "err", err)
			last = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func criStatus(ctx context.Context, socket string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := runtimeapi.NewRuntimeServiceClient(conn).Status(ctx, &runtimeapi.StatusRequest{})
	if err != nil {
		return err
	}
	for _, c := range resp.GetStatus().GetConditions() {
		if c.GetType() == runtimeapi.RuntimeReady && !c.GetStatus() {
			return fmt.Errorf("runtime not ready: %s", c.GetMessage())
		}
	}
	return nil
}

// networkSteps brings up loopback and the profile's interfaces: static addresses, then DHCP.
func (n *Node) networkSteps(p *profiles.Profile) []boot.Step {
	nw := p.Network
	const wait = 2 * time.Second
	steps := []boot.Step{boot.Func{Name: "link lo up", Fn: func(context.Context) error { return link.Loopback() }}}
	for _, b := range nw.Bonds {
		steps = append(steps, boot.Func{Name: fmt.Sprintf("bond %s %s %v", b.Name, b.Mode, b.Interfaces),
			Fn: func(context.Context) error { return link.Bond(b.Name, b.Mode, b.Interfaces, wait) }})
	}
	for _, b := range nw.Bridges {
		steps = append(steps, boot.Func{Name: fmt.Sprintf("bridge %s %v", b.Name, b.Interfaces),
			Fn: func(context.Context) error { return link.Bridge(b.Name, b.Interfaces, wait) }})
	}
	for _, v := range nw.VLANs {
		steps = append(steps, boot.Func{Name: fmt.Sprintf("vlan %s on %s id %d", v.Name, v.Link, v.ID),
			Fn: func(context.Context) error { return link.VLAN(v.Name, v.Link, v.ID, wait) }})
	}
	for _, ifc := range nw.Interfaces {
		c := link.Config{Name: ifc.Name, MTU: ifc.MTU}
		for _, a := range ifc.Addresses {
			c.Addresses = append(c.Addresses, netip.MustParsePrefix(a)) // validated with the profile
		}
		if ifc.Gateway != "" {
			c.Gateway = netip.MustParseAddr(ifc.Gateway)
		}
		desc := fmt.Sprintf("link %s up %v", ifc.Name, ifc.Addresses)
		if ifc.Gateway != "" {
			desc += " via " + ifc.Gateway
		}
		steps = append(steps, boot.Func{Name: desc, Fn: func(context.Context) error { return link.Apply(c, 2*time.Second) }})
		if ifc.DHCP {
			name := ifc.Name
			steps = append(steps, boot.Func{Name: "dhcp on " + name, Fn: func(ctx context.Context) error {
				return n.dhcp(ctx, name, p.Hostname == profiles.DefaultHostname)
			}})
		}
	}
	for _, r := range nw.Routes {
		var dst netip.Prefix
		if r.To != "" && r.To != "default" {
			dst = netip.MustParsePrefix(r.To) // validated with the profile
		}
		var gw netip.Addr
		if r.Via != "" {
			gw = netip.MustParseAddr(r.Via)
		}
		steps = append(steps, boot.Func{Name: fmt.Sprintf("route %s via %s dev %s", r.To, r.Via, r.Interface),
			Fn: func(context.Context) error { return link.Route(dst, gw, r.Interface) }})
	}
	steps = append(steps, boot.Func{Name: "log the network", Fn: func(context.Context) error {
		out, err := link.Show()
		if err == nil {
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				n.log.Info("net: " + line)
			}
		}
		return nil
	}})
	return steps
}

// dhcp obtains a lease for the interface, applies it and keeps renewing it in the background.
// The lease's hostname is used when the profile left the hostname at its default.
func (n *Node) dhcp(ctx context.Context, ifname string, useHostname bool) error {
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	lease, err := dhcp.Acquire(actx, ifname)
	if err != nil {
		return err
	}
	if err := dhcp.Apply(lease, "/etc/resolv.conf"); err != nil {
		return err
	}
	n.log.Info("dhcp lease", "interface", ifname, "address", lease.Address.String(), "router", lease.Router.String(), "lease", lease.Duration)
	lease.LogRejected(n.log)
	if useHostname && lease.Hostname != "" {
		if err := (boot.Hostname(lease.Hostname)).Do(ctx); err == nil {
			os.WriteFile("/etc/hostname", []byte(lease.Hostname+"\n"), 0o644)
		}
	}
	n.goSafe(func() { dhcp.Keep(ctx, n.log, lease, "/etc/resolv.conf") })
	return nil
}
