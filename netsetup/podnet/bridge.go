package podnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"ingot.dev/ingot/netsetup/netns"
)

// ensureBridge creates the bridge if it is missing and brings it to the configured state: MTU,
// up, the gateway addresses when isGateway. The sysctls the network needs are written when the
// bridge is created or when sysctls is set (at Open).
func (n *Network) ensureBridge(sysctls bool) (netlink.Link, error) {
	n.bridgeMu.Lock()
	defer n.bridgeMu.Unlock()
	name := n.bridge.Name
	l, err := n.nl.LinkByName(name)
	if err != nil {
		if !isNotFound(err) {
			return nil, fmt.Errorf("bridge %s: %w", name, err)
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU = name, n.bridge.MTU
		if err := n.nl.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if l, err = n.nl.LinkByName(name); err != nil {
			return nil, fmt.Errorf("bridge %s: %w", name, err)
		}
		n.log.Info("pod network: bridge created", "bridge", name)
		sysctls = true
	}
	if _, ok := l.(*netlink.Bridge); !ok {
		return nil, fmt.Errorf("bridge %s: the link exists and is a %s, not a bridge", name, l.Type())
	}
	if m := n.bridge.MTU; m > 0 && l.Attrs().MTU != m {
		if err := n.nl.LinkSetMTU(l, m); err != nil {
			return nil, fmt.Errorf("bridge %s: set MTU %d: %w", name, m, err)
		}
	}
	if n.bridge.PromiscMode && l.Attrs().Promisc == 0 {
		if err := n.nl.SetPromiscOn(l); err != nil {
			return nil, fmt.Errorf("bridge %s: promiscuous mode: %w", name, err)
		}
	}
	if n.bridge.IsGateway {
		if err := n.gatewayAddrs(l); err != nil {
			return nil, err
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := n.nl.LinkSetUp(l); err != nil {
			return nil, fmt.Errorf("bridge %s up: %w", name, err)
		}
	}
	if sysctls {
		if err := n.writeSysctls(); err != nil {
			return nil, err
		}
	}
	return l, nil
}

// gatewayAddrs puts each range set's gateway on the bridge. Another address of the bridge in the
// same subnet is an error unless forceAddress, as in the bridge plugin: it likely belongs to an
// older configuration that pods still use.
func (n *Network) gatewayAddrs(l netlink.Link) error {
	have, err := n.nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return fmt.Errorf("bridge %s: list addresses: %w", l.Attrs().Name, err)
	}
	for _, set := range n.bridge.IPAM.RangeSets {
		r := set[0]
		want := netip.PrefixFrom(r.Gateway, r.Subnet.Bits())
		found := false
		for _, a := range have {
			p := toPrefix(a.IPNet)
			switch {
			case p == want:
				found = true
			case r.Subnet.Contains(p.Addr()) && !p.Addr().IsLinkLocalUnicast():
				if !n.bridge.ForceAddress {
					return fmt.Errorf("bridge %s has address %s in subnet %s, not the gateway %s (set \"forceAddress\": true to replace it)", l.Attrs().Name, p, r.Subnet, want)
				}
				if err := n.nl.AddrDel(l, &a); err != nil {
					return fmt.Errorf("bridge %s: remove %s: %w", l.Attrs().Name, p, err)
				}
			}
		}
		if found {
			continue
		}
		if err := n.nl.AddrAdd(l, addr(want)); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("bridge %s: add gateway address %s: %w", l.Attrs().Name, want, err)
		}
	}
	return nil
}

// writeSysctls turns on forwarding, route_localnet on the bridge when hostPorts are served from
// 127.0.0.1 (table inet ingot then keeps pods off the node's 127.0.0.0/8; see netsetup/nft), and
// makes bridged traffic visible to netfilter when br_netfilter is there (so service DNAT of
// other tools applies between pods on the bridge).
func (n *Network) writeSysctls() error {
	v6 := false
	for _, set := range n.bridge.IPAM.RangeSets {
		v6 = v6 || set[0].Subnet.Addr().Is6()
	}
	return netns.DoFile(n.node, func() error {
		want := map[string]bool{"net/ipv4/ip_forward": true}
		if v6 {
			want["net/ipv6/conf/all/forwarding"] = true
		}
		if n.portmap != nil {
			want["net/ipv4/conf/"+n.bridge.Name+"/route_localnet"] = true
		}
		for _, k := range []string{"net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables"} {
			want[k] = false // optional: only when br_netfilter is loaded
		}
		for key, required := range want {
			path := filepath.Join("/proc/sys", key)
			if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
				if !required && errors.Is(err, os.ErrNotExist) {
					continue
				}
				return fmt.Errorf("sysctl %s=1: %w", key, err)
			}
		}
		return nil
	})
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf) || errors.Is(err, unix.ENODEV)
}

func toPrefix(n *net.IPNet) netip.Prefix {
	a, _ := netip.AddrFromSlice(n.IP)
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones)
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// addr is an address for netlink; IPv6 addresses skip duplicate address detection, which would
// keep them tentative (unusable) for a second or more on a link only ingot assigns addresses on.
func addr(p netip.Prefix) *netlink.Addr {
	a := &netlink.Addr{IPNet: ipNet(p)}
	if p.Addr().Is6() {
		a.Flags = unix.IFA_F_NODAD
	}
	return a
}
