package pid1

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"ingot.dev/ingot/init/boot"
	"ingot.dev/ingot/init/identity"
	"ingot.dev/ingot/netsetup/dhcp"
	"ingot.dev/ingot/netsetup/link"
	"ingot.dev/ingot/profiles"
)

// networkSteps brings up loopback and the profile's interfaces: static addresses, then DHCP.
// dhcpHostname lets a lease's hostname replace the profile's (the node config set none).
func (n *Node) networkSteps(p *profiles.Profile, dhcpHostname bool) []boot.Step {
	nw := p.Network
	const wait = 2 * time.Second
	var ntpFromDHCP []string // option 42 of the leases, for startClock
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
				lease, err := n.dhcp(ctx, name, dhcpHostname)
				if lease != nil {
					for _, a := range lease.NTP {
						ntpFromDHCP = append(ntpFromDHCP, a.String())
					}
				}
				return err
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
	steps = append(steps, n.startClock(p, &ntpFromDHCP))
	return steps
}

// dhcp obtains a lease for the interface, applies it and keeps renewing it in the background.
// The lease's hostname is used when useHostname says the node config set none (precedence: node
// config, DHCP, profile).
func (n *Node) dhcp(ctx context.Context, ifname string, useHostname bool) (*dhcp.Lease, error) {
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	lease, err := dhcp.Acquire(actx, ifname)
	if err != nil {
		return nil, err
	}
	if err := dhcp.Apply(lease, "/etc/resolv.conf"); err != nil {
		return nil, err
	}
	n.log.Info("dhcp lease", "interface", ifname, "address", lease.Address.String(), "router", lease.Router.String(), "lease", lease.Duration)
	lease.LogRejected(n.log)
	if useHostname && lease.Hostname != "" {
		if err := (boot.Hostname(lease.Hostname)).Do(ctx); err == nil {
			if err := identity.WriteHostFiles("/etc", lease.Hostname); err != nil {
				n.log.Warn("hostname from the dhcp lease", "err", err)
			}
		}
	}
	n.goSafe(func() { dhcp.Keep(ctx, n.log, lease, "/etc/resolv.conf") })
	return lease, nil
}
