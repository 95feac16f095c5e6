package pid1

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netlink"

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
		if ifc.Match != "" {
			steps = append(steps, boot.Func{Name: "dhcp on every " + ifc.Match + " link", Fn: func(ctx context.Context) error {
				ntp, err := n.dhcpEthernet(ctx, ifc.MTU, configuredLinks(nw), dhcpHostname)
				ntpFromDHCP = append(ntpFromDHCP, ntp...)
				return err
			}})
			continue
		}
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

// configuredLinks are the links the network names: interfaces by name, and the members of bonds
// and bridges (which carry no address of their own). A match leaves them alone.
func configuredLinks(nw profiles.Network) []string {
	var names []string
	for _, ifc := range nw.Interfaces {
		if ifc.Name != "" {
			names = append(names, ifc.Name)
		}
	}
	for _, b := range nw.Bonds {
		names = append(names, b.Interfaces...)
	}
	for _, b := range nw.Bridges {
		names = append(names, b.Interfaces...)
	}
	return names
}

// Waits of dhcpEthernet: for the first NIC to appear (its driver was loaded by the hardware phase,
// but a link registers a moment after its probe) and for a link that was just brought up to
// report a carrier (autonegotiation takes a second or two on real NICs).
const (
	ethernetAppearWait = 5 * time.Second
	carrierWait        = 5 * time.Second
)

// dhcpEthernet brings up every wired Ethernet NIC not in skip and asks for a lease on each with a
// carrier, all at once. It returns once one link has its lease applied (with that lease's NTP
// servers); the others go on in the background and are logged. Each link's default route gets its
// own metric (1024 + its index, so the first NIC's is preferred), so several leases add up rather
// than replace each other's routes. It fails only when no link got a lease.
func (n *Node) dhcpEthernet(ctx context.Context, mtu int, skip []string, useHostname bool) ([]string, error) {
	const sysClassNet = "/sys/class/net"
	var names []string
	deadline := time.Now().Add(ethernetAppearWait)
	for {
		all, err := link.Ethernet(sysClassNet)
		if err != nil {
			return nil, err
		}
		names = slices.DeleteFunc(all, func(name string) bool { return slices.Contains(skip, name) })
		if len(names) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no Ethernet NIC found (links in %s with a device, not wireless%s)", sysClassNet, skipped(skip))
	}
	n.log.Info("ethernet links", "links", strings.Join(names, " "))
	type result struct {
		name  string
		lease *dhcp.Lease
		err   error
	}
	results := make(chan result, len(names))
	for _, name := range names {
		n.goSafe(func() {
			if err := link.Apply(link.Config{Name: name, MTU: mtu}, 2*time.Second); err != nil {
				results <- result{name: name, err: err}
				return
			}
			if !link.WaitCarrier(sysClassNet, name, carrierWait) {
				results <- result{name: name, err: fmt.Errorf("link %s: no carrier after %s (no cable?); left without an address", name, carrierWait)}
				return
			}
			metric := 1024
			if l, err := netlink.LinkByName(name); err == nil {
				metric += l.Attrs().Index
			}
			lease, err := n.dhcpMetric(ctx, name, useHostname, metric)
			results <- result{name: name, lease: lease, err: err}
		})
	}
	var failed []string
	for range names {
		r := <-results
		if r.err != nil {
			n.log.Warn("ethernet link not configured", "link", r.name, "err", r.err)
			failed = append(failed, r.err.Error())
			continue
		}
		var ntp []string
		for _, a := range r.lease.NTP {
			ntp = append(ntp, a.String())
		}
		// The rest report to the log as they finish.
		go func(left int) {
			for range left {
				if r := <-results; r.err != nil {
					n.log.Warn("ethernet link not configured", "link", r.name, "err", r.err)
				}
			}
		}(len(names) - 1 - len(failed))
		return ntp, nil
	}
	return nil, fmt.Errorf("no Ethernet link got a DHCP lease: %s", strings.Join(failed, "; "))
}

func skipped(skip []string) string {
	if len(skip) == 0 {
		return ""
	}
	return ", besides " + strings.Join(skip, " ")
}

// dhcp obtains a lease for the interface, applies it and keeps renewing it in the background.
// The lease's hostname is used when useHostname says the node config set none (precedence: node
// config, DHCP, profile).
func (n *Node) dhcp(ctx context.Context, ifname string, useHostname bool) (*dhcp.Lease, error) {
	return n.dhcpMetric(ctx, ifname, useHostname, 0)
}

// dhcpMetric is dhcp with the lease's default route at the given metric.
func (n *Node) dhcpMetric(ctx context.Context, ifname string, useHostname bool, metric int) (*dhcp.Lease, error) {
	actx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	lease, err := dhcp.Acquire(actx, ifname)
	if err != nil {
		return nil, err
	}
	lease.RouteMetric = metric
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
