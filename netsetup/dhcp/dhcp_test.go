package dhcp

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"ingot.dev/ingot/internal/testgate"
)

// inNewNetns runs fn on a thread of its own inside a fresh network namespace and returns that
// namespace's handle; the thread never returns to the scheduler, so nothing else runs there.
func inNewNetns(t *testing.T, fn func(ns netns.NsHandle) error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		ns, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		errc <- fn(ns)
	}()
	return <-errc
}

// TestAcquireApply runs a DHCP server (insomniacslk's server4) in one private network namespace
// and the client in another, joined by a veth pair: the host's network is never touched.
func TestAcquireApply(t *testing.T) {
	testgate.RequireRoot(t)
	serverReady := make(chan netns.NsHandle, 1)
	stop := make(chan struct{})
	defer close(stop)
	go inNewNetns(t, func(ns netns.NsHandle) error {
		serverReady <- ns
		<-stop
		return nil
	})
	serverNS := <-serverReady
	resolv := filepath.Join(t.TempDir(), "resolv.conf")

	err := inNewNetns(t, func(_ netns.NsHandle) error {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "srv0"}
		if err := netlink.LinkAdd(veth); err != nil {
			return err
		}
		peer, err := netlink.LinkByName("srv0")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetNsFd(peer, int(serverNS)); err != nil {
			return err
		}
		// The server side: configured and served from a thread in the server namespace.
		srvErr := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			if err := netns.Set(serverNS); err != nil {
				srvErr <- err
				return
			}
			l, err := netlink.LinkByName("srv0")
			if err != nil {
				srvErr <- err
				return
			}
			netlink.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: net.IPv4(10, 0, 2, 2), Mask: net.CIDRMask(24, 32)}})
			if err := netlink.LinkSetUp(l); err != nil {
				srvErr <- err
				return
			}
			s, err := server4.NewServer("srv0", &net.UDPAddr{IP: net.IPv4zero, Port: 67}, handler)
			if err != nil {
				srvErr <- err
				return
			}
			srvErr <- nil
			go func() { <-stop; s.Close() }()
			s.Serve()
		}()
		if err := <-srvErr; err != nil {
			return fmt.Errorf("server: %w", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		lease, err := Acquire(ctx, "eth0")
		if err != nil {
			return err
		}
		if lease.Address.String() != "10.0.2.15/24" || lease.Router.String() != "10.0.2.2" || lease.Hostname != "node-7" {
			return fmt.Errorf("lease = %s, hostname %q", lease, lease.Hostname)
		}
		for i := 0; i < 2; i++ { // applying twice changes nothing
			if err := Apply(lease, resolv); err != nil {
				return err
			}
		}
		l, _ := netlink.LinkByName("eth0")
		addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
		if len(addrs) != 1 || addrs[0].IPNet.String() != "10.0.2.15/24" {
			return fmt.Errorf("addresses after apply: %v", addrs)
		}
		routes, _ := netlink.RouteList(l, netlink.FAMILY_V4)
		gw := false
		for _, r := range routes {
			gw = gw || (r.Gw != nil && r.Gw.String() == "10.0.2.2")
		}
		if !gw {
			return fmt.Errorf("no default route via 10.0.2.2: %v", routes)
		}
		renewed, err := renew(ctx, lease)
		if err != nil || renewed.Address != lease.Address {
			return fmt.Errorf("renew: %v %v", renewed, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(resolv)
	if !strings.Contains(string(data), "nameserver 10.0.2.3\n") || !strings.Contains(string(data), "search cluster.test\n") {
		t.Fatalf("resolv.conf:\n%s", data)
	}
}

// handler answers like QEMU's user network does: 10.0.2.15 with router 10.0.2.2, DNS 10.0.2.3.
func handler(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) {
	var typ dhcpv4.MessageType
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		typ = dhcpv4.MessageTypeAck
	default:
		return
	}
	resp, err := dhcpv4.NewReplyFromRequest(m,
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithYourIP(net.IPv4(10, 0, 2, 15)),
		dhcpv4.WithServerIP(net.IPv4(10, 0, 2, 2)),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.IPv4(10, 0, 2, 2))),
		dhcpv4.WithNetmask(net.CIDRMask(24, 32)),
		dhcpv4.WithRouter(net.IPv4(10, 0, 2, 2)),
		dhcpv4.WithDNS(net.IPv4(10, 0, 2, 3)),
		dhcpv4.WithOption(dhcpv4.OptHostName("node-7")),
		dhcpv4.WithOption(dhcpv4.OptDomainName("cluster.test")),
		dhcpv4.WithLeaseTime(3600),
	)
	if err != nil {
		return
	}
	conn.WriteTo(resp.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 68})
}
