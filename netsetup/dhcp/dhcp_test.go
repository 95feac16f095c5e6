package dhcp

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/insomniacslk/dhcp/rfc1035label"
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

// withServer runs a DHCP server (insomniacslk's server4) in one private network namespace and
// client in another, joined by a veth pair (eth0 on the client's side): the host's network is
// never touched. The server answers like QEMU's user network, with extra applied last.
func withServer(t *testing.T, extra []dhcpv4.Modifier, client func() error) error {
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
	return inNewNetns(t, func(_ netns.NsHandle) error {
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
			s, err := server4.NewServer("srv0", &net.UDPAddr{IP: net.IPv4zero, Port: 67}, handler(extra...))
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
		return client()
	})
}

// TestAcquireApply takes a lease from a server and applies it.
func TestAcquireApply(t *testing.T) {
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	err := withServer(t, nil, func() error {
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

// TestHostileServer: a DHCP server (or anyone answering on the LAN before it) chooses the node's
// hostname and search domains. Values that are not names must not become the node name, and
// must not add lines to resolv.conf, here a nameserver of the attacker's.
func TestHostileServer(t *testing.T) {
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	var lease *Lease
	err := withServer(t, []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptHostName("evil\nhost")),
		dhcpv4.WithOption(dhcpv4.OptDomainName("cluster.test\nnameserver 6.6.6.6")),
	}, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var err error
		if lease, err = Acquire(ctx, "eth0"); err != nil {
			return err
		}
		return Apply(lease, resolv)
	})
	if err != nil {
		t.Fatal(err)
	}
	if lease.Hostname != "" || len(lease.Search) != 0 {
		t.Errorf("lease hostname %q, search %q; want both ignored", lease.Hostname, lease.Search)
	}
	wantRejected := []string{
		`hostname "evil\nhost" from the DHCP server on eth0: label "evil\nhost" has a character other than letters, digits and hyphens; not used`,
		`search domain "cluster.test\nnameserver 6.6.6.6" from the DHCP server on eth0: label "test\nnameserver 6" has a character other than letters, digits, hyphens and underscores; not used`,
	}
	if strings.Join(lease.Rejected, "\n") != strings.Join(wantRejected, "\n") {
		t.Errorf("rejected:\n%s\nwant:\n%s", strings.Join(lease.Rejected, "\n"), strings.Join(wantRejected, "\n"))
	}
	var logged strings.Builder
	lease.LogRejected(slog.New(slog.NewTextHandler(&logged, nil)))
	if !strings.Contains(logged.String(), `level=WARN msg="dhcp: a name from the server was not used" interface=eth0 reason="hostname \"evil\\nhost\"`) {
		t.Errorf("log:\n%s", logged.String())
	}
	data, _ := os.ReadFile(resolv)
	want := "# written by ingot from the DHCP lease on eth0\nnameserver 10.0.2.3\n"
	if string(data) != want {
		t.Errorf("resolv.conf:\n%s\nwant:\n%s", data, want)
	}
}

// handler answers like QEMU's user network does: 10.0.2.15 with router 10.0.2.2, DNS 10.0.2.3,
// then applies extra (a later option replaces an earlier one with the same code).
func handler(extra ...dhcpv4.Modifier) server4.Handler {
	return func(conn net.PacketConn, peer net.Addr, m *dhcpv4.DHCPv4) { answer(conn, m, extra) }
}

func answer(conn net.PacketConn, m *dhcpv4.DHCPv4, extra []dhcpv4.Modifier) {
	var typ dhcpv4.MessageType
	switch m.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		typ = dhcpv4.MessageTypeAck
	default:
		return
	}
	mods := append([]dhcpv4.Modifier{
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
	}, extra...)
	resp, err := dhcpv4.NewReplyFromRequest(m, mods...)
	if err != nil {
		return
	}
	conn.WriteTo(resp.ToBytes(), &net.UDPAddr{IP: net.IPv4bcast, Port: 68})
}

// TestLeaseNames: which hostnames and search domains from a server are used, and how.
func TestLeaseNames(t *testing.T) {
	for _, tc := range []struct {
		hostname, domain string
		search           []string
		wantHost         string
		wantSearch       []string
	}{
		{hostname: "node-7", domain: "cluster.test", wantHost: "node-7", wantSearch: []string{"cluster.test"}},
		{hostname: "Node-7.Example.COM", wantHost: "node-7.example.com"}, // a node name is lowercase
		{hostname: "node-7\x00", domain: "cluster.test\x00", wantHost: "node-7", // NUL-terminated by some servers
			wantSearch: []string{"cluster.test"}},
		{hostname: "7", wantHost: "7"},
		{hostname: "evil\nhost"},
		{hostname: "a b"},
		{hostname: "-node"},
		{hostname: "node-"},
		{hostname: "node..x"},
		{hostname: "node_7"},
		{hostname: "../../etc/passwd"},
		{hostname: strings.Repeat("a", 65)}, // the kernel's hostname holds 64 bytes
		{domain: "a.test b.test"},
		{domain: "cluster.test\nnameserver 6.6.6.6"},
		{domain: strings.Repeat("a", 64) + ".test"},
		{search: []string{"one.test", "two three.test", "x\noptions ndots:15", "_tcp.four.test", "five.test"},
			wantSearch: []string{"one.test", "_tcp.four.test", "five.test"}},
	} {
		mods := []dhcpv4.Modifier{dhcpv4.WithYourIP(net.IPv4(10, 0, 2, 15))}
		if tc.hostname != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(tc.hostname)))
		}
		if tc.domain != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainName(tc.domain)))
		}
		if tc.search != nil {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDomainSearch(&rfc1035label.Labels{Labels: tc.search})))
		}
		ack, err := dhcpv4.New(mods...)
		if err != nil {
			t.Fatal(err)
		}
		l, err := fromACK("eth0", &nclient4.Lease{ACK: ack})
		if err != nil {
			t.Fatal(err)
		}
		if l.Hostname != tc.wantHost || fmt.Sprint(l.Search) != fmt.Sprint(tc.wantSearch) {
			t.Errorf("hostname %q, domain %q, search %q: got hostname %q, search %q; want %q, %q",
				tc.hostname, tc.domain, tc.search, l.Hostname, l.Search, tc.wantHost, tc.wantSearch)
		}
		// Each value not used is named in Rejected, quoted so a newline cannot forge a log line.
		var notUsed []string
		if tc.hostname != "" && tc.wantHost == "" {
			notUsed = append(notUsed, fmt.Sprintf("hostname %q", tc.hostname))
		}
		for _, d := range append(tc.search, tc.domain) {
			if d != "" && !slices.Contains(tc.wantSearch, strings.TrimRight(d, "\x00")) {
				notUsed = append(notUsed, fmt.Sprintf("search domain %q", d))
			}
		}
		if len(l.Rejected) != len(notUsed) {
			t.Errorf("hostname %q, domain %q, search %q: rejected %q; want %d lines", tc.hostname, tc.domain, tc.search, l.Rejected, len(notUsed))
			continue
		}
		for i, want := range notUsed {
			if !strings.HasPrefix(l.Rejected[i], want+" from the DHCP server on eth0: ") {
				t.Errorf("rejected %q; want it to start with %s", l.Rejected[i], want)
			}
		}
	}
}

// TestLeaseNTP: the NTP servers of option 42 reach the lease, IPv4 only, in the server's order.
func TestLeaseNTP(t *testing.T) {
	ack, err := dhcpv4.New(dhcpv4.WithYourIP(net.IPv4(10, 0, 2, 15)),
		dhcpv4.WithOption(dhcpv4.OptNTPServers(net.IPv4(10, 0, 2, 2), net.IPv4(192, 0, 2, 7))))
	if err != nil {
		t.Fatal(err)
	}
	l, err := fromACK("eth0", &nclient4.Lease{ACK: ack})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(l.NTP); got != "[10.0.2.2 192.0.2.7]" {
		t.Errorf("lease NTP servers %s; want [10.0.2.2 192.0.2.7]", got)
	}
}
