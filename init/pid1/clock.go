package pid1

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"ingot.dev/ingot/init/boot"
	"ingot.dev/ingot/init/clock"
	"ingot.dev/ingot/profiles"
)

// clockRef is the running NTP client, if any: set by the boot, read by shutdown (which a panic
// can start from another goroutine, hence atomic).
type clockRef = atomic.Pointer[clock.Syncer]

// ntpServers picks the NTP servers by precedence: the node config's, else those the DHCP leases
// offered (option 42), else the profile's; from names the source for the log.
func ntpServers(node, dhcp, profile []string) (servers []string, from string) {
	switch {
	case len(node) > 0:
		return node, "node config"
	case len(dhcp) > 0:
		return dhcp, "dhcp"
	case len(profile) > 0:
		return profile, "profile"
	}
	return nil, ""
}

// startClock is the network phase's last step: it starts the NTP client in the background, so a
// slow or dead time server never holds up the boot. fromDHCP is filled by the phase's DHCP steps.
func (n *Node) startClock(p *profiles.Profile, fromDHCP *[]string) boot.Step {
	return boot.Func{Name: "ntp: keep the clock in sync (servers from the node config, else DHCP, else the profile)",
		Fn: func(ctx context.Context) error {
			servers, from := ntpServers(n.node.NTP(), *fromDHCP, p.NTP)
			if len(servers) == 0 {
				n.log.Info("ntp: no servers in the node config, DHCP or the profile; the clock runs as the hardware clock set it")
				return nil
			}
			n.log.Info("ntp: syncing the clock in the background", "servers", strings.Join(servers, " "), "from", from)
			s := &clock.Syncer{Servers: servers, Clock: clock.System{}, Log: n.log}
			n.clock.Store(s)
			n.goSafe(func() { s.Run(ctx) })
			return nil
		}}
}

// saveClock writes the time to the hardware clock at shutdown, once NTP has set it: a clock never
// synced is the hardware clock's own time, and writing it back would only lose the sub-second
// part each boot. No hardware clock is nothing to do.
func (n *Node) saveClock() {
	if s := n.clock.Load(); s == nil || !s.Synced() {
		return
	}
	set, err := clock.WriteRTC(clock.RTCDevice, time.Now())
	if err != nil {
		n.log.Warn("hardware clock not set", "err", err)
	}
	if set {
		n.log.Info("hardware clock set from the synced clock", "device", clock.RTCDevice)
	}
}
