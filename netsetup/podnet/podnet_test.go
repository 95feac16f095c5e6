package podnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/netsetup/cniconf"
	"ingot.dev/ingot/netsetup/link"
	"ingot.dev/ingot/netsetup/netns"
)

// testNode is a node and its pods, each a network namespace pinned under a temporary
// directory. The host's own network is never touched: the node is a namespace too.
type testNode struct {
	t    *testing.T
	dir  string
	node string // the node's netns
	wan  string // another host on the node's uplink, 192.168.77.2
}

const nodeAddr = "192.168.77.1"

func newTestNode(t *testing.T) *testNode {
	testgate.RequireRoot(t)
	tn := &testNode{t: t, dir: t.TempDir()}
	tn.node = tn.netns("node")
	tn.wan = tn.netns("wan")
	err := netns.Do(tn.node, func() error {
		if err := link.Loopback(); err != nil {
			return err
		}
		wan, err := os.Open(tn.wan)
		if err != nil {
			return err
		}
		defer wan.Close()
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "uplink"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "wan0", PeerNamespace: netlink.NsFd(wan.Fd())}); err != nil {
			return err
		}
		return link.Apply(link.Config{Name: "uplink", Addresses: []netip.Prefix{netip.MustParsePrefix(nodeAddr + "/24")}}, 0)
	})
	if err != nil {
		t.Fatalf("node namespace: %v", err)
	}
	err = netns.Do(tn.wan, func() error {
		if err := link.Loopback(); err != nil {
			return err
		}
		return link.Apply(link.Config{Name: "wan0", Addresses: []netip.Prefix{netip.MustParsePrefix("192.168.77.2/24")}}, time.Second)
	})
	if err != nil {
		t.Fatalf("wan namespace: %v", err)
	}
	return tn
}

func (tn *testNode) netns(name string) string {
	path := filepath.Join(tn.dir, "ns", name)
	if err := netns.New(path); err != nil {
		tn.t.Fatal(err)
	}
	tn.t.Cleanup(func() { netns.Remove(path) })
	return path
}

func (tn *testNode) open(conf *cniconf.List) *Network {
	tn.t.Helper()
	n, err := Open(context.Background(), Options{Conf: conf, StateDir: filepath.Join(tn.dir, "state"), NodeNetNS: tn.node,
		Log: slog.New(slog.NewTextHandler(tn.t.Output(), nil))})
	if err != nil {
		tn.t.Fatal(err)
	}
	return n
}

// serve answers every TCP connection on port in namespace ns with reply(remote address).
func (tn *testNode) serve(ns string, port int, reply func(remote string) string) {
	tn.t.Helper()
	tn.serveAt(ns, fmt.Sprintf(":%d", port), reply)
}

// serveAt is serve on one address (host:port).
func (tn *testNode) serveAt(ns string, addr string, reply func(remote string) string) {
	tn.t.Helper()
	var l net.Listener
	err := netns.Do(ns, func() error {
		var err error
		l, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		tn.t.Fatal(err)
	}
	tn.t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			io.WriteString(c, reply(host))
			c.Close()
		}
	}()
}

// dial connects from namespace ns to addr and returns what the server said.
func dial(ns, addr string) (string, error) { return dialWithin(ns, addr, 2*time.Second) }

func dialWithin(ns, addr string, timeout time.Duration) (string, error) {
	var out string
	err := netns.Do(ns, func() error {
		c, err := net.DialTimeout("tcp", addr, timeout)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		b, err := io.ReadAll(c)
		out = string(b)
		return err
	})
	return out, err
}

func (tn *testNode) expect(from, addr, want string) {
	tn.t.Helper()
	got, err := dial(from, addr)
	if err != nil || got != want {
		tn.t.Errorf("from %s to %s: got %q, %v; want %q", filepath.Base(from), addr, got, err, want)
	}
}

// expectDropped checks that a connection from namespace from to addr times out: its SYN was
// dropped on the way. A refusal or a missing route would mean the packet never took the path
// under test, so those fail too.
func (tn *testNode) expectDropped(from, addr string) {
	tn.t.Helper()
	got, err := dialWithin(from, addr, time.Second)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		tn.t.Errorf("from %s to %s: got %q, %v; want the connection dropped (a timeout)", filepath.Base(from), addr, got, err)
	}
}

// routeLoopbackVia makes namespace ns send traffic for 127.0.0.1 out of dev to gw, as an attacker
// who is root in its own namespace can (a pod has CAP_NET_RAW and could craft the frame
// instead): it takes 127.0.0.1 off lo (and with it the local routes of 127.0.0.0/8), routes
// 127.0.0.1 via gw, and accepts loopback addresses on dev (route_localnet) so the answers are
// not dropped as martians.
func (tn *testNode) routeLoopbackVia(ns, dev string, gw netip.Addr) {
	tn.t.Helper()
	err := netns.Do(ns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.AddrDel(lo, addr(netip.MustParsePrefix("127.0.0.1/8"))); err != nil {
			return fmt.Errorf("remove 127.0.0.1 from lo: %w", err)
		}
		if err := os.WriteFile("/proc/sys/net/ipv4/conf/"+dev+"/route_localnet", []byte("1\n"), 0o644); err != nil {
			return err
		}
		l, err := netlink.LinkByName(dev)
		if err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(netip.MustParsePrefix("127.0.0.1/32")), Gw: gw.AsSlice()})
	})
	if err != nil {
		tn.t.Fatalf("route 127.0.0.1 from %s via %s: %v", filepath.Base(ns), gw, err)
	}
}

func ip4(r *Result) string {
	for _, p := range r.IPs {
		if p.Addr().Is4() {
			return p.Addr().String()
		}
	}
	return ""
}

// ourLinks lists the veths podnet made in the node namespace.
func (tn *testNode) ourLinks() []string {
	var names []string
	err := netns.Do(tn.node, func() error {
		links, err := netlink.LinkList()
		for _, l := range links {
			if isOurVeth(l.Attrs().Name) {
				names = append(names, l.Attrs().Name)
			}
		}
		return err
	})
	if err != nil {
		tn.t.Fatal(err)
	}
	return names
}

func podRuleCount(t *testing.T, n *Network, id string) int {
	t.Helper()
	rules, err := n.Rules()
	if err != nil {
		t.Fatal(err)
	}
	c := 0
	for _, r := range rules {
		if strings.Contains(r.Comment, id) {
			c++
		}
	}
	return c
}

func TestPodNetwork(t *testing.T) {
	tn := newTestNode(t)
	ctx := context.Background()
	n := tn.open(nil) // the default conflist: cni0, 10.88.0.0/16, ipMasq, portmap
	defer func() { n.Close() }()

	pod1, pod2 := tn.netns("pod1"), tn.netns("pod2")
	r1, err := n.Setup(ctx, PodNet{ID: "pod1id", Name: "one", Namespace: "default", UID: "u1", NetNS: pod1,
		PortMappings: []PortMapping{{Protocol: "TCP", ContainerPort: 80, HostPort: 8080}, {Protocol: "TCP", ContainerPort: 81}}})
	if err != nil {
		t.Fatal(err)
	}
	r2, err := n.Setup(ctx, PodNet{ID: "pod2id", Name: "two", Namespace: "default", NetNS: pod2})
	if err != nil {
		t.Fatal(err)
	}
	if ip4(r1) != "10.88.0.2" || ip4(r2) != "10.88.0.3" || r1.Interface != "eth0" || r1.Gateways[0].String() != "10.88.0.1" {
		t.Fatalf("results %+v %+v", r1, r2)
	}
	leases := func() string {
		b, err := os.ReadFile(filepath.Join(tn.dir, "state", LeasesFile))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := leases(); got != "10.88.0.2 pod1id\n10.88.0.3 pod2id\n" {
		t.Fatalf("lease view:\n%s", got)
	}
	// RunPodSandbox retries: a second Setup changes nothing.
	again, err := n.Setup(ctx, PodNet{ID: "pod1id", Name: "one", Namespace: "default", NetNS: pod1,
		PortMappings: []PortMapping{{Protocol: "TCP", ContainerPort: 80, HostPort: 8080}}})
	if err != nil || fmt.Sprint(again.IPs) != fmt.Sprint(r1.IPs) || again.MAC != r1.MAC {
		t.Fatalf("second setup: %+v, %v; first %+v", again, err, r1)
	}

	tn.serve(pod1, 80, func(string) string { return "pod1" })
	tn.serve(pod2, 80, func(string) string { return "pod2" })
	tn.serve(tn.node, 9999, func(string) string { return "node" })
	tn.serve(tn.wan, 7777, func(remote string) string { return "wan sees " + remote })

	t.Run("pods reach each other and the node", func(t *testing.T) {
		tn.expect(pod2, ip4(r1)+":80", "pod1")
		tn.expect(pod1, ip4(r2)+":80", "pod2")
		tn.expect(tn.node, ip4(r1)+":80", "pod1")
		tn.expect(pod1, "10.88.0.1:9999", "node")
		tn.expect(pod1, nodeAddr+":9999", "node")
	})
	t.Run("traffic leaving the pod subnet is masqueraded", func(t *testing.T) {
		tn.expect(pod1, "192.168.77.2:7777", "wan sees "+nodeAddr)
	})
	t.Run("hostPort", func(t *testing.T) {
		tn.expect(tn.node, "127.0.0.1:8080", "pod1")
		tn.expect(tn.node, nodeAddr+":8080", "pod1")
		tn.expect(tn.node, "10.88.0.1:8080", "pod1")
		tn.expect(tn.wan, nodeAddr+":8080", "pod1")
		tn.expect(pod2, nodeAddr+":8080", "pod1")
		tn.expect(pod1, nodeAddr+":8080", "pod1") // hairpin
	})
	t.Run("status", func(t *testing.T) {
		st, err := n.Status(ctx, "pod1id")
		if err != nil || fmt.Sprint(st.IPs) != fmt.Sprint(r1.IPs) {
			t.Errorf("status %+v %v", st, err)
		}
		if _, err := n.Status(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Errorf("status of an unknown pod: %v", err)
		}
		if err := n.Ready(ctx); err != nil {
			t.Error(err)
		}
	})

	// A runtime restart: the same database, the same leases, no duplicate for a new pod, and
	// the running pods keep their hostPorts.
	n.Close()
	n = tn.open(nil)
	pod3 := tn.netns("pod3")
	r3, err := n.Setup(ctx, PodNet{ID: "pod3id", NetNS: pod3})
	if err != nil {
		t.Fatal(err)
	}
	if ip4(r3) != "10.88.0.4" {
		t.Errorf("pod3 after a restart got %v", r3.IPs)
	}
	if st, err := n.Status(ctx, "pod1id"); err != nil || ip4(st) != ip4(r1) {
		t.Errorf("pod1 after a restart: %+v %v", st, err)
	}
	tn.expect(tn.node, "127.0.0.1:8080", "pod1")

	t.Run("teardown", func(t *testing.T) {
		if podRuleCount(t, n, "pod1id") == 0 {
			t.Fatal("pod1 has no rules before teardown")
		}
		for range 2 {
			if err := n.Teardown(ctx, "pod1id", pod1); err != nil {
				t.Fatal(err)
			}
		}
		if c := podRuleCount(t, n, "pod1id"); c != 0 {
			t.Errorf("%d rules of pod1 left", c)
		}
		if _, err := n.Status(ctx, "pod1id"); !errors.Is(err, ErrNotFound) {
			t.Errorf("status after teardown: %v", err)
		}
		if owners, _ := n.ipam.Owners(); strings.Contains(fmt.Sprint(owners), "pod1id") {
			t.Errorf("lease left: %v", owners)
		}
		if got := leases(); strings.Contains(got, "pod1id") || !strings.Contains(got, "pod2id") {
			t.Errorf("lease view after pod1's teardown:\n%s", got)
		}
		for _, l := range tn.ourLinks() {
			if l == HostVethName("pod1id") {
				t.Errorf("veth %s left", l)
			}
		}
		netns.Do(pod1, func() error {
			if _, err := netlink.LinkByName("eth0"); err == nil {
				t.Error("eth0 left in pod1")
			}
			addrs, _ := netlink.AddrList(nil, netlink.FAMILY_V4)
			for _, a := range addrs {
				if !a.IP.IsLoopback() {
					t.Errorf("address %s left in pod1", a.IPNet)
				}
			}
			return nil
		})
		if _, err := dial(tn.node, "127.0.0.1:8080"); err == nil {
			t.Error("the hostPort still answers after teardown")
		}
	})
	t.Run("teardown without the namespace", func(t *testing.T) {
		netns.Remove(pod2) // as after a reboot: the namespace and its veth are gone
		if err := n.Teardown(ctx, "pod2id", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := n.Status(ctx, "pod2id"); !errors.Is(err, ErrNotFound) {
			t.Errorf("status: %v", err)
		}
	})
	t.Run("gc", func(t *testing.T) {
		// A veth of ours that no record owns, as a crash between creating and recording leaves.
		stray := HostVethName("crashed")
		netns.Do(tn.node, func() error {
			attrs := netlink.NewLinkAttrs()
			attrs.Name = stray
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "strayp"}); err != nil {
				return err
			}
			br, _ := netlink.LinkByName("cni0")
			l, _ := netlink.LinkByName(stray)
			return netlink.LinkSetMaster(l, br)
		})
		if err := n.GC(ctx, func(id string) bool { return id == "pod3id" }); err != nil {
			t.Fatal(err)
		}
		if got := tn.ourLinks(); fmt.Sprint(got) != fmt.Sprint([]string{HostVethName("pod3id")}) {
			t.Errorf("after GC keeping pod3: veths %v", got)
		}
		if err := n.GC(ctx, func(string) bool { return false }); err != nil {
			t.Fatal(err)
		}
		if got := tn.ourLinks(); len(got) != 0 {
			t.Errorf("veths left: %v", got)
		}
		rules, _ := n.Rules()
		for _, r := range rules {
			if strings.HasPrefix(r.Comment, "pod ") {
				t.Errorf("rule left: %+v", r)
			}
		}
		if ids, _ := n.Pods(); len(ids) != 0 {
			t.Errorf("pods left: %v", ids)
		}
	})
}

// TestLocalhostIsolation: the node's 127.0.0.1 is the node's alone. route_localnet on the bridge
// (needed to forward localhost hostPorts to pods) must not let a pod reach node services bound to
// 127.0.0.1 (CVE-2020-8558), and a hostPort on hostIP 127.0.0.1 must not be reachable from a pod
// or from a neighbour on the node's LAN, only from the node itself.
func TestLocalhostIsolation(t *testing.T) {
	tn := newTestNode(t)
	ctx := context.Background()
	n := tn.open(nil)
	defer n.Close()
	pod1, attacker := tn.netns("pod1"), tn.netns("attacker")
	r1, err := n.Setup(ctx, PodNet{ID: "pod1id", NetNS: pod1, PortMappings: []PortMapping{
		{Protocol: "TCP", ContainerPort: 80, HostPort: 8080, HostIP: "127.0.0.1"},
		{Protocol: "TCP", ContainerPort: 80, HostPort: 8081}}})
	if err != nil {
		t.Fatal(err)
	}
	ra, err := n.Setup(ctx, PodNet{ID: "attackerid", NetNS: attacker})
	if err != nil {
		t.Fatal(err)
	}
	tn.serve(pod1, 80, func(string) string { return "pod1" })
	tn.serveAt(tn.node, "127.0.0.1:9998", func(string) string { return "node localhost" })

	// The attacker pod and the LAN neighbour send to 127.0.0.1 through the node.
	tn.routeLoopbackVia(attacker, "eth0", ra.Gateways[0])
	tn.routeLoopbackVia(tn.wan, "wan0", netip.MustParseAddr(nodeAddr))

	// Node services bound to 127.0.0.1 are the node's alone (CVE-2020-8558).
	tn.expect(tn.node, "127.0.0.1:9998", "node localhost")
	tn.expectDropped(attacker, "127.0.0.1:9998")
	// A hostPort on hostIP 127.0.0.1 serves the node, not the LAN or other pods.
	tn.expect(tn.node, "127.0.0.1:8080", "pod1")
	tn.expectDropped(tn.wan, "127.0.0.1:8080")
	tn.expectDropped(attacker, "127.0.0.1:8080")
	// A hostPort on every address serves them all, on addresses they may reach.
	tn.expect(tn.node, "127.0.0.1:8081", "pod1")
	tn.expect(tn.wan, nodeAddr+":8081", "pod1")
	tn.expect(attacker, ra.Gateways[0].String()+":8081", "pod1")
	tn.expectDropped(tn.wan, "127.0.0.1:8081")
	tn.expectDropped(attacker, "127.0.0.1:8081")
	// Pod to pod is untouched.
	tn.expect(attacker, ip4(r1)+":80", "pod1")
}

func TestSetupErrors(t *testing.T) {
	tn := newTestNode(t)
	ctx := context.Background()
	n := tn.open(nil)
	defer n.Close()
	pod := tn.netns("pod")
	for _, tc := range []struct {
		p    PodNet
		want string
	}{
		{PodNet{NetNS: pod}, "empty pod id"},
		{PodNet{ID: "x", NetNS: filepath.Join(tn.dir, "missing")}, "is not a network namespace"},
		{PodNet{ID: "x", NetNS: tn.node}, "is the node's network namespace"},
		{PodNet{ID: "x", NetNS: pod, PortMappings: []PortMapping{{Protocol: "icmp", HostPort: 1, ContainerPort: 1}}}, `protocol "icmp"`},
		{PodNet{ID: "x", NetNS: pod, PortMappings: []PortMapping{{HostPort: 70000, ContainerPort: 1}}}, "ports must be 1-65535"},
		{PodNet{ID: "x", NetNS: pod, PortMappings: []PortMapping{{HostPort: 8080, ContainerPort: 80, HostIP: "localhost"}}}, `host IP "localhost"`},
	} {
		if _, err := n.Setup(ctx, tc.p); err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v; want ErrInvalid containing %q", tc.p, err, tc.want)
		}
	}
	// Someone else's eth0 in the pod: an error, and nothing of ours left behind.
	netns.Do(pod, func() error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "eth0"
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "other"})
	})
	if _, err := n.Setup(ctx, PodNet{ID: "x", NetNS: pod}); err == nil || !strings.Contains(err.Error(), "already has an interface eth0") {
		t.Errorf("foreign eth0: %v", err)
	}
	if owners, _ := n.ipam.Owners(); len(owners) != 0 || len(tn.ourLinks()) != 0 {
		t.Errorf("failed setup left leases %v, veths %v", owners, tn.ourLinks())
	}
	// A Teardown handed the node's namespace (a hostNetwork pod the caller did not skip) must not
	// touch the node's interfaces.
	netns.Do(tn.node, func() error {
		attrs := netlink.NewLinkAttrs()
		attrs.Name = "eth0"
		return netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: "eth0peer"})
	})
	if err := n.Teardown(ctx, "hostnet", tn.node); err != nil {
		t.Error(err)
	}
	netns.Do(tn.node, func() error {
		if _, err := netlink.LinkByName("eth0"); err != nil {
			t.Errorf("the node's eth0 after Teardown with the node's namespace: %v", err)
		}
		return nil
	})
	// A non-native conflist is refused with the reason.
	l, _ := cniconf.Parse("calico.conflist", []byte(`{"cniVersion":"0.3.1","name":"k8s","plugins":[{"type":"calico"}]}`))
	if _, err := Open(ctx, Options{Conf: l, StateDir: tn.dir, NodeNetNS: tn.node}); err == nil || !strings.Contains(err.Error(), `plugin type "calico" is not built into ingot`) {
		t.Errorf("calico conflist: %v", err)
	}
	// A second runtime on the same database is refused, not blocked forever.
	if _, err := Open(ctx, Options{StateDir: filepath.Join(tn.dir, "state"), NodeNetNS: tn.node}); err == nil || !strings.Contains(err.Error(), "locked by another process") {
		t.Errorf("second open: %v", err)
	}
}

// TestDualStackAndSysctls runs an IPv4+IPv6 network with its own bridge name and MTU and
// checks the sysctls landed in the node's namespace only.
func TestDualStackAndSysctls(t *testing.T) {
	tn := newTestNode(t)
	ctx := context.Background()
	conf, err := cniconf.Parse("dual.conflist", []byte(`{"cniVersion":"1.0.0","name":"dual","plugins":[
		{"type":"bridge","bridge":"br-pods","isDefaultGateway":true,"ipMasq":true,"mtu":1400,"hairpinMode":true,
		 "ipam":{"type":"host-local","ranges":[[{"subnet":"10.77.0.0/24"}],[{"subnet":"fd00:77::/64"}]]}},
		{"type":"portmap","capabilities":{"portMappings":true}}]}`))
	if err != nil {
		t.Fatal(err)
	}
	// A new namespace copies the host's IPv4 forwarding (net.core.devconf_inherit_init_net=0),
	// and a host may forward: the wan namespace starts from 0 so a leak into it shows.
	if err := netns.Do(tn.wan, func() error {
		return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("0"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	n := tn.open(conf)
	defer n.Close()
	pod1, pod2 := tn.netns("pod1"), tn.netns("pod2")
	r1, err := n.Setup(ctx, PodNet{ID: "a", NetNS: pod1, PortMappings: []PortMapping{{Protocol: "tcp", ContainerPort: 80, HostPort: 8080}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n.Setup(ctx, PodNet{ID: "b", NetNS: pod2}); err != nil {
		t.Fatal(err)
	}
	if len(r1.IPs) != 2 || r1.IPs[1].String() != "fd00:77::2/64" {
		t.Fatalf("ips %v", r1.IPs)
	}
	tn.serve(pod1, 80, func(string) string { return "a" })
	tn.expect(pod2, "[fd00:77::2]:80", "a")
	tn.expect(tn.node, "[fd00:77::1]:8080", "a")
	netns.Do(pod1, func() error {
		l, err := netlink.LinkByName("eth0")
		if err != nil || l.Attrs().MTU != 1400 {
			t.Errorf("pod eth0 %v, %v", l, err)
		}
		routes, _ := netlink.RouteList(l, netlink.FAMILY_ALL)
		defaults := 0
		for _, r := range routes {
			if r.Dst == nil || r.Dst.IP.IsUnspecified() {
				defaults++
			}
		}
		if defaults != 2 {
			t.Errorf("pod routes %v: want an IPv4 and an IPv6 default route", routes)
		}
		return nil
	})
	err = netns.Do(tn.node, func() error {
		for key, want := range map[string]string{
			"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1",
			"net/ipv4/conf/br-pods/route_localnet": "1", "net/bridge/bridge-nf-call-iptables": "1",
		} {
			b, err := os.ReadFile(filepath.Join("/proc/sys", key))
			if errors.Is(err, os.ErrNotExist) && strings.HasPrefix(key, "net/bridge/") {
				continue // no br_netfilter here
			}
			if err != nil || strings.TrimSpace(string(b)) != want {
				t.Errorf("node sysctl %s = %q, %v", key, b, err)
			}
		}
		br, err := netlink.LinkByName("br-pods")
		if err != nil || br.Attrs().MTU != 1400 {
			t.Errorf("bridge %v %v", br, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The sysctls were written in the node namespace, not the wan namespace beside it.
	netns.Do(tn.wan, func() error {
		if b, _ := os.ReadFile("/proc/sys/net/ipv4/ip_forward"); strings.TrimSpace(string(b)) != "0" {
			t.Errorf("ip_forward leaked into another namespace: %q", b)
		}
		return nil
	})
	for _, id := range []string{"a", "b"} {
		if err := n.Teardown(ctx, id, ""); err != nil {
			t.Fatal(err)
		}
	}
	if got := tn.ourLinks(); len(got) != 0 {
		t.Errorf("veths left %v", got)
	}
}

// BenchmarkSetupTeardown measures one pod's network (veth, addresses, routes, NAT table with a
// hostPort) up and down again.
func BenchmarkSetupTeardown(b *testing.B) {
	testgate.RequireRoot(b)
	dir := b.TempDir()
	nodeNS, podNS := filepath.Join(dir, "node"), filepath.Join(dir, "pod")
	for _, p := range []string{nodeNS, podNS} {
		if err := netns.New(p); err != nil {
			b.Fatal(err)
		}
		defer netns.Remove(p)
	}
	ctx := context.Background()
	n, err := Open(ctx, Options{StateDir: filepath.Join(dir, "state"), NodeNetNS: nodeNS, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	p := PodNet{ID: "bench", NetNS: podNS, PortMappings: []PortMapping{{ContainerPort: 80, HostPort: 8080}}}
	for b.Loop() {
		if _, err := n.Setup(ctx, p); err != nil {
			b.Fatal(err)
		}
		if err := n.Teardown(ctx, p.ID, p.NetNS); err != nil {
			b.Fatal(err)
		}
	}
}

// TestConcurrentPods sets up and tears down pods in parallel, as kubelet does: no duplicate
// address, and nothing left afterwards.
func TestConcurrentPods(t *testing.T) {
	tn := newTestNode(t)
	ctx := context.Background()
	n := tn.open(nil)
	defer n.Close()
	const pods = 8
	paths := make([]string, pods)
	for i := range paths {
		paths[i] = tn.netns(fmt.Sprint("p", i))
	}
	ips := make([]string, pods)
	errs := make(chan error, pods)
	for i := range pods {
		go func() {
			r, err := n.Setup(ctx, PodNet{ID: fmt.Sprint("pod", i), NetNS: paths[i],
				PortMappings: []PortMapping{{ContainerPort: 80, HostPort: int32(9000 + i)}}})
			if err == nil {
				ips[i] = ip4(r)
			}
			errs <- err
		}()
	}
	for range pods {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	for _, ip := range ips {
		if seen[ip] {
			t.Errorf("duplicate address %s in %v", ip, ips)
		}
		seen[ip] = true
	}
	if c := len(tn.ourLinks()); c != pods {
		t.Errorf("%d veths, want %d", c, pods)
	}
	for i := range pods {
		go func() { errs <- n.Teardown(ctx, fmt.Sprint("pod", i), paths[i]) }()
	}
	for range pods {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	rules, _ := n.Rules()
	for _, r := range rules {
		if strings.HasPrefix(r.Comment, "pod ") {
			t.Errorf("rule left: %+v", r)
		}
	}
	if links := tn.ourLinks(); len(links) != 0 {
		t.Errorf("veths left: %v", links)
	}
}
