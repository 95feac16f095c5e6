package pid1

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"ingot.dev/ingot/profiles"
)

// TestNTPServers: the node config's servers win, then those DHCP offered, then the profile's.
func TestNTPServers(t *testing.T) {
	node, lease, profile := []string{"time.node.test"}, []string{"10.0.2.2"}, []string{"pool.ntp.org"}
	for _, tc := range []struct {
		node, dhcp, profile []string
		want                []string
		from                string
	}{
		{node, lease, profile, node, "node config"},
		{nil, lease, profile, lease, "dhcp"},
		{nil, nil, profile, profile, "profile"},
		{[]string{}, []string{}, profile, profile, "profile"},
		{nil, nil, nil, nil, ""},
	} {
		got, from := ntpServers(tc.node, tc.dhcp, tc.profile)
		if !slices.Equal(got, tc.want) || from != tc.from {
			t.Errorf("ntpServers(%q, %q, %q) = %q from %q; want %q from %q", tc.node, tc.dhcp, tc.profile, got, from, tc.want, tc.from)
		}
	}
}

// TestPlanStartsClock: the NTP client starts as the network phase's last step, after DHCP.
func TestPlanStartsClock(t *testing.T) {
	p, _, err := profiles.Builtin("dev")
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{log: slog.New(slog.DiscardHandler)}
	plan := n.Plan(p, nil).String()
	want := "  dhcp on eth0\n  log the network\n  ntp: keep the clock in sync (servers from the node config, else DHCP, else the profile)\nvar-layout\n"
	if !strings.Contains(plan, want) {
		t.Errorf("plan lacks\n%s\nin:\n%s", want, plan)
	}
}
