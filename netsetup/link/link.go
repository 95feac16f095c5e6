// Package link configures the node's links over netlink: loopback (Loopback), an interface's MTU,
// static addresses and default route (Apply), bonds (Bond), bridges (Bridge), 802.1Q VLANs (VLAN)
// and static routes (Route), and renders the result for `ingot-node net show` (Show). PID 1 calls
// it for the profile's [network] table in a fixed order: bonds, bridges, VLANs, then interfaces,
// then routes. DHCP is netsetup/dhcp. Applying twice changes nothing: existing links, members and
// addresses are kept, and Route replaces a route to the same destination.
package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Config is one interface's static configuration.
type Config struct {
	Name      string
	Addresses []netip.Prefix
	Gateway   netip.Addr // invalid: no default route
	MTU       int        // 0: keep
}

// Loopback brings lo up.
func Loopback() error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("link lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("link lo up: %w", err)
	}
	return nil
}

// Apply configures one interface. The link may appear shortly after its driver loads, so Apply
// waits up to wait for it.
func Apply(c Config, wait time.Duration) error {
	var l netlink.Link
	deadline := time.Now().Add(wait)
	for {
		var err error
		if l, err = netlink.LinkByName(c.Name); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("link %s: %w", c.Name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if c.MTU > 0 && l.Attrs().MTU != c.MTU {
		if err := netlink.LinkSetMTU(l, c.MTU); err != nil {
			return fmt.Errorf("link %s: set MTU %d: %w", c.Name, c.MTU, err)
		}
	}
	for _, p := range c.Addresses {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}}
		if err := netlink.AddrAdd(l, addr); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("link %s: add address %s: %w", c.Name, p, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return fmt.Errorf("link %s up: %w", c.Name, err)
	}
	if c.Gateway.IsValid() {
		route := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: c.Gateway.AsSlice()}
		if err := netlink.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("link %s: default route via %s: %w", c.Name, c.Gateway, err)
		}
	}
	return nil
}

// Bridge makes sure a bridge exists with the given member links enslaved, and is up.
func Bridge(name string, members []string, wait time.Duration) error {
	br, err := ensure(name, func() netlink.Link { return &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}} })
	if err != nil {
		return err
	}
	return enslave(br, members, wait)
}

// Bond makes sure a bond exists in mode (e.g. "active-backup", "802.3ad", "balance-rr") with the
// members enslaved (a member must be down to join), and is up.
func Bond(name, mode string, members []string, wait time.Duration) error {
	m := netlink.StringToBondMode(mode)
	if m == netlink.BOND_MODE_UNKNOWN {
		return fmt.Errorf("bond %s: unknown mode %q", name, mode)
	}
	bond, err := ensure(name, func() netlink.Link {
		b := netlink.NewLinkBond(netlink.LinkAttrs{Name: name})
		b.Mode = m
		return b
	})
	if err != nil {
		return err
	}
	return enslave(bond, members, wait)
}

// VLAN makes sure an 802.1Q link name exists on parent with the VLAN id, and is up.
func VLAN(name, parent string, id int, wait time.Duration) error {
	p, err := waitLink(parent, wait)
	if err != nil {
		return fmt.Errorf("vlan %s: %w", name, err)
	}
	// A VLAN link cannot come up before its parent does.
	if err := netlink.LinkSetUp(p); err != nil {
		return fmt.Errorf("vlan %s: parent %s up: %w", name, parent, err)
	}
	_, err = ensure(name, func() netlink.Link {
		return &netlink.Vlan{LinkAttrs: netlink.LinkAttrs{Name: name, ParentIndex: p.Attrs().Index}, VlanId: id}
	})
	return err
}

// Route adds a route to dst via gw (either may be the zero value: an on-link route, or the
// default route). An existing identical route is kept.
func Route(dst netip.Prefix, gw netip.Addr, dev string) error {
	r := &netlink.Route{}
	if dst.IsValid() {
		r.Dst = &net.IPNet{IP: dst.Addr().AsSlice(), Mask: net.CIDRMask(dst.Bits(), dst.Addr().BitLen())}
	}
	if gw.IsValid() {
		r.Gw = gw.AsSlice()
	}
	if dev != "" {
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return fmt.Errorf("route %s: %w", dst, err)
		}
		r.LinkIndex = l.Attrs().Index
	}
	if err := netlink.RouteReplace(r); err != nil {
		return fmt.Errorf("route %s via %s: %w", dst, gw, err)
	}
	return nil
}

func waitLink(name string, wait time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(wait)
	for {
		l, err := netlink.LinkByName(name)
		if err == nil {
			return l, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("link %s: %w", name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// ensure returns the link called name, creating it with mk when missing, and sets it up.
func ensure(name string, mk func() netlink.Link) (netlink.Link, error) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		if err := netlink.LinkAdd(mk()); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("create link %s: %w", name, err)
		}
		if l, err = netlink.LinkByName(name); err != nil {
			return nil, fmt.Errorf("link %s: %w", name, err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("link %s up: %w", name, err)
	}
	return l, nil
}

func enslave(master netlink.Link, members []string, wait time.Duration) error {
	for _, m := range members {
		l, err := waitLink(m, wait)
		if err != nil {
			return fmt.Errorf("%s: member %w", master.Attrs().Name, err)
		}
		if l.Attrs().MasterIndex == master.Attrs().Index {
			continue
		}
		netlink.LinkSetDown(l)
		if err := netlink.LinkSetMaster(l, master); err != nil {
			return fmt.Errorf("%s: enslave %s: %w", master.Attrs().Name, m, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("%s: member %s up: %w", master.Attrs().Name, m, err)
		}
	}
	return nil
}

// Show renders the node's links, addresses and routes, one line each, for people and logs.
func Show() (string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return "", fmt.Errorf("list links: %w", err)
	}
	var b strings.Builder
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	for _, l := range links {
		a := l.Attrs()
		state := "down"
		if a.Flags&net.FlagUp != 0 {
			state = "up"
		}
		fmt.Fprintf(&b, "link %s type %s %s mtu %d", a.Name, l.Type(), state, a.MTU)
		if a.MasterIndex != 0 {
			fmt.Fprintf(&b, " master %s", names[a.MasterIndex])
		}
		if v, ok := l.(*netlink.Vlan); ok {
			fmt.Fprintf(&b, " vlan %d on %s", v.VlanId, names[a.ParentIndex])
		}
		b.WriteString("\n")
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_ALL)
		for _, ad := range addrs {
			fmt.Fprintf(&b, "  addr %s\n", ad.IPNet)
		}
	}
	routes, _ := netlink.RouteList(nil, netlink.FAMILY_ALL)
	for _, r := range routes {
		dst := "default"
		if r.Dst != nil {
			dst = r.Dst.String()
		}
		fmt.Fprintf(&b, "route %s", dst)
		if r.Gw != nil {
			fmt.Fprintf(&b, " via %s", r.Gw)
		}
		fmt.Fprintf(&b, " dev %s\n", names[r.LinkIndex])
	}
	return b.String(), nil
}

// Ethernet lists the machine's wired Ethernet NICs by name, sorted, from sysClassNet
// (/sys/class/net): links with a device behind them, of type Ethernet (ARPHRD_ETHER, 1), and not
// wireless. Bridges, bonds, VLANs, veths and tunnels have no device; sysfs is the kernel's own
// answer to "is this hardware", where names and drivers are not.
func Ethernet(sysClassNet string) ([]string, error) {
	entries, err := os.ReadDir(sysClassNet)
	if err != nil {
		return nil, fmt.Errorf("ethernet links: %w", err)
	}
	var names []string
	for _, e := range entries {
		dir := filepath.Join(sysClassNet, e.Name())
		if _, err := os.Stat(filepath.Join(dir, "device")); err != nil {
			continue
		}
		typ, err := os.ReadFile(filepath.Join(dir, "type"))
		if err != nil || strings.TrimSpace(string(typ)) != "1" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "wireless")); err == nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "phy80211")); err == nil {
			continue
		}
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return names, nil
}

// WaitCarrier waits up to wait for an up link to report a carrier (a cable, or a virtual NIC's
// link) and reports whether it did.
func WaitCarrier(sysClassNet, name string, wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for {
		b, err := os.ReadFile(filepath.Join(sysClassNet, name, "carrier"))
		if err == nil && strings.TrimSpace(string(b)) == "1" {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
