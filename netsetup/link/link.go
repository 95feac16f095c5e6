// Package link brings up the node's links over netlink with static addresses and a default
// route. It is the static part of node networking; DHCP, bridges, VLANs and bonds belong next to
// it in netsetup. Applying twice changes nothing: existing addresses and routes are kept.
package link

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
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
