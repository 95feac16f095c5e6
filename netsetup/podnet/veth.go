package podnet

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"ingot.dev/ingot/netsetup/cniconf"
	"ingot.dev/ingot/netsetup/ipam"
	"ingot.dev/ingot/netsetup/netns"
)

// podHandle opens a netlink handle inside the pod's network namespace.
func podHandle(ns *os.File) (*netlink.Handle, error) {
	var h *netlink.Handle
	err := netns.DoFile(ns, func() error {
		var err error
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", ns.Name(), err)
	}
	return h, nil
}

// attach makes sure the pod has its veth on the bridge with the leased addresses and routes.
func (n *Network) attach(br netlink.Link, p PodNet, leases []ipam.Lease) (*Result, error) {
	ns, err := os.Open(p.NetNS)
	if err != nil {
		return nil, fmt.Errorf("pod network namespace: %w", err)
	}
	defer ns.Close()
	ph, err := podHandle(ns)
	if err != nil {
		return nil, err
	}
	defer ph.Close()
	hostName := HostVethName(p.ID)
	host, err := n.nl.LinkByName(hostName)
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("veth %s: %w", hostName, err)
	}
	pod, err := ph.LinkByName(podInterface)
	if err != nil && !isNotFound(err) {
		return nil, fmt.Errorf("pod interface %s: %w", podInterface, err)
	}
	if host != nil && (pod == nil || pod.Attrs().ParentIndex != host.Attrs().Index) {
		// Half of an earlier attempt, or a veth whose pod end went with an older namespace.
		if err := n.nl.LinkDel(host); err != nil && !isNotFound(err) {
			return nil, fmt.Errorf("delete stale veth %s: %w", hostName, err)
		}
		host = nil
	}
	if host == nil {
		if pod != nil {
			return nil, fmt.Errorf("the pod's network namespace already has an interface %s that is not ingot's", podInterface)
		}
		attrs := netlink.NewLinkAttrs()
		attrs.Name, attrs.MTU = hostName, n.bridge.MTU
		veth := &netlink.Veth{LinkAttrs: attrs, PeerName: podInterface, PeerNamespace: netlink.NsFd(ns.Fd())}
		if err := n.nl.LinkAdd(veth); err != nil {
			return nil, fmt.Errorf("create veth %s (%s in the pod): %w", hostName, podInterface, err)
		}
		if host, err = n.nl.LinkByName(hostName); err != nil {
			return nil, fmt.Errorf("veth %s: %w", hostName, err)
		}
		if pod, err = ph.LinkByName(podInterface); err != nil {
			return nil, fmt.Errorf("pod interface %s: %w", podInterface, err)
		}
	}
	if host.Attrs().MasterIndex != br.Attrs().Index {
		if err := n.nl.LinkSetMaster(host, br); err != nil {
			return nil, fmt.Errorf("veth %s: attach to bridge %s: %w", hostName, n.bridge.Name, err)
		}
	}
	if n.bridge.HairpinMode {
		if err := n.nl.LinkSetHairpin(host, true); err != nil {
			return nil, fmt.Errorf("veth %s: hairpin mode: %w", hostName, err)
		}
	}
	if err := n.nl.LinkSetUp(host); err != nil {
		return nil, fmt.Errorf("veth %s up: %w", hostName, err)
	}
	if err := configurePod(ph, pod, leases, n.bridge); err != nil {
		return nil, err
	}
	res := &Result{Interface: podInterface, MAC: pod.Attrs().HardwareAddr.String(), HostVeth: hostName, NetNS: p.NetNS}
	for _, l := range leases {
		res.IPs = append(res.IPs, l.Address)
		res.Gateways = append(res.Gateways, l.Gateway)
	}
	return res, nil
}

// configurePod sets up lo and the pod's interface: addresses, up, routes.
func configurePod(ph *netlink.Handle, pod netlink.Link, leases []ipam.Lease, br *cniconf.Bridge) error {
	lo, err := ph.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("pod lo: %w", err)
	}
	if err := ph.LinkSetUp(lo); err != nil {
		return fmt.Errorf("pod lo up: %w", err)
	}
	for _, l := range leases {
		if err := ph.AddrAdd(pod, addr(l.Address)); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("pod %s: add address %s: %w", podInterface, l.Address, err)
		}
	}
	if err := ph.LinkSetUp(pod); err != nil {
		return fmt.Errorf("pod %s up: %w", podInterface, err)
	}
	gateway := func(v4 bool) netip.Addr {
		for _, l := range leases {
			if l.Address.Addr().Is4() == v4 {
				return l.Gateway
			}
		}
		return netip.Addr{}
	}
	routes := append([]cniconf.Route(nil), br.IPAM.Routes...)
	if br.IsDefaultGateway {
		for _, v4 := range []bool{true, false} {
			if gw := gateway(v4); gw.IsValid() {
				dst := netip.MustParsePrefix("0.0.0.0/0")
				if !v4 {
					dst = netip.MustParsePrefix("::/0")
				}
				routes = append(routes, cniconf.Route{Dst: dst, GW: gw})
			}
		}
	}
	for _, r := range routes {
		gw := r.GW
		if !gw.IsValid() {
			gw = gateway(r.Dst.Addr().Is4())
		}
		if !gw.IsValid() {
			continue // no lease of this family
		}
		route := &netlink.Route{LinkIndex: pod.Attrs().Index, Dst: ipNet(r.Dst), Gw: gw.AsSlice()}
		if err := ph.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("pod %s: route %s via %s: %w", podInterface, r.Dst, gw, err)
		}
	}
	return nil
}

// detach removes the pod's veth, from inside the pod's namespace when it is still there and by
// the host end's name otherwise. A veth already gone is fine.
func (n *Network) detach(podID, netnsPath string) error {
	if netnsPath != "" && netns.Is(netnsPath) && !n.isNodeNS(netnsPath) {
		ns, err := os.Open(netnsPath)
		if err == nil {
			defer ns.Close()
			ph, err := podHandle(ns)
			if err != nil {
				return err
			}
			defer ph.Close()
			if l, err := ph.LinkByName(podInterface); err == nil && l.Type() == "veth" {
				if err := ph.LinkDel(l); err != nil && !isNotFound(err) {
					return fmt.Errorf("delete pod %s: %w", podInterface, err)
				}
			}
		}
	}
	name := HostVethName(podID)
	l, err := n.nl.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("veth %s: %w", name, err)
	}
	if err := n.nl.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete veth %s: %w", name, err)
	}
	return nil
}
