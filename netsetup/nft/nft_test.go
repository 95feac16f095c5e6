package nft

import (
	"fmt"
	"net/netip"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"ingot.dev/ingot/internal/testgate"
)

// inPrivateNetns runs fn on a thread in a network namespace of its own; the thread is never
// handed back to the scheduler, so the host's network is never touched.
func inPrivateNetns(t *testing.T, fn func()) {
	t.Helper()
	testgate.RequireRoot(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			t.Errorf("unshare: %v", err)
			return
		}
		fn()
	}()
	<-done
}

func summary(rules []Rule) string {
	var s []string
	for _, r := range rules {
		s = append(s, r.Chain+":"+r.Comment)
	}
	return strings.Join(s, " ")
}

func TestApplyReplacesTable(t *testing.T) {
	inPrivateNetns(t, func() {
		c := New(0)
		n := Network{Masquerade: []netip.Prefix{netip.MustParsePrefix("10.88.0.0/16"), netip.MustParsePrefix("fd00:88::/64")}, HostPorts: true, SNAT: true}
		pods := []Pod{
			{ID: "b", IPs: []netip.Addr{netip.MustParseAddr("10.88.0.3"), netip.MustParseAddr("fd00:88::3")},
				Ports: []PortMapping{{Protocol: "tcp", HostPort: 8080, ContainerPort: 80}, {Protocol: "udp", HostPort: 53, ContainerPort: 5353, HostIP: netip.MustParseAddr("127.0.0.1")}}},
			{ID: "a", IPs: []netip.Addr{netip.MustParseAddr("10.88.0.2")}},
		}
		for range 2 {
			if err := c.Apply(n, pods); err != nil {
				t.Fatal(err)
			}
		}
		rules, err := c.Rules()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		for _, r := range rules {
			got[r.Chain+":"+r.Comment]++
		}
		want := map[string]int{
			"input:localhost hostport replies":                  1,
			"input:localhost is the node's":                     1,
			"prerouting:localhost hostports from the node only": 1,
			"prerouting:hostports":                              1,
			"output:hostports":                                  1,
			"hostports:pod b":                                   3, // tcp v4, tcp v6, udp v4 on 127.0.0.1
			"postrouting:pod b":                                 2, // hairpin v4 and v6
			"postrouting:hostport from localhost":               1,
			"postrouting:masquerade 10.88.0.0/16":               1,
			"postrouting:masquerade fd00:88::/64":               1,
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("rules after two applies:\n got %v\nwant %v", got, want)
		}
		if err := c.Apply(n, pods[1:]); err != nil {
			t.Fatal(err)
		}
		if r, _ := c.PodRules("b"); len(r) != 0 {
			t.Errorf("pod b's rules survived its removal: %s", summary(r))
		}
		if err := c.Delete(); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(); err != nil {
			t.Errorf("second delete: %v", err)
		}
		if r, err := c.Rules(); len(r) != 0 || err != nil {
			t.Errorf("after delete: %s %v", summary(r), err)
		}
	})
}

func TestValidate(t *testing.T) {
	for _, m := range []PortMapping{{Protocol: "icmp", HostPort: 1, ContainerPort: 1}, {Protocol: "tcp", ContainerPort: 1}} {
		if err := m.Validate(); err == nil {
			t.Errorf("%v accepted", m)
		}
	}
}
