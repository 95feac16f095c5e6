package link

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"ingot.dev/ingot/internal/testgate"
)

// TestApplyInPrivateNetns configures a veth link inside a network namespace of its own (the
// host's network is never touched) and applies the same config twice.
func TestApplyInPrivateNetns(t *testing.T) {
	testgate.RequireRoot(t)
	done := make(chan error, 1)
	go func() {
		// This thread enters a new netns and is never handed back to the scheduler.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		done <- func() error {
			if err := Loopback(); err != nil {
				return err
			}
			// veth, not dummy: the dummy driver is not always built (it is not on the build hosts).
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth0"}, PeerName: "peer0"}); err != nil {
				return err
			}
			c := Config{Name: "eth0", Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.2.15/24")},
				Gateway: netip.MustParseAddr("10.0.2.2"), MTU: 1400}
			for i := 0; i < 2; i++ {
				if err := Apply(c, 0); err != nil {
					return err
				}
			}
			l, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
			if len(addrs) != 1 || addrs[0].IPNet.String() != "10.0.2.15/24" || l.Attrs().MTU != 1400 {
				t.Errorf("addresses %v, mtu %d", addrs, l.Attrs().MTU)
			}
			routes, _ := netlink.RouteList(l, netlink.FAMILY_V4)
			hasDefault := false
			for _, r := range routes {
				if r.Dst == nil || r.Dst.String() == "0.0.0.0/0" {
					hasDefault = r.Gw.String() == "10.0.2.2"
				}
			}
			if !hasDefault {
				t.Errorf("no default route via 10.0.2.2: %v", routes)
			}
			if err := Apply(Config{Name: "nope"}, 0); err == nil {
				t.Error("a missing link was accepted")
			}
			return nil
		}()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestBridgeRouteShow enslaves a veth to a new bridge, adds a route and renders the state, in a
// private network namespace. (Bonds and VLANs need drivers this host's kernel lacks; the VM test
// creates them under the Debian kernel.)
func TestBridgeRouteShow(t *testing.T) {
	testgate.RequireRoot(t)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		done <- func() error {
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth1"}, PeerName: "peer1"}); err != nil {
				return err
			}
			for i := 0; i < 2; i++ { // idempotent
				if err := Bridge("br0", []string{"eth1"}, 0); err != nil {
					return err
				}
			}
			if err := Apply(Config{Name: "br0", Addresses: []netip.Prefix{netip.MustParsePrefix("192.168.50.1/24")}}, 0); err != nil {
				return err
			}
			if err := Route(netip.MustParsePrefix("10.20.0.0/16"), netip.MustParseAddr("192.168.50.254"), ""); err != nil {
				return err
			}
			if err := Bond("bond0", "no-such-mode", nil, 0); err == nil {
				return fmt.Errorf("an unknown bond mode was accepted")
			}
			out, err := Show()
			if err != nil {
				return err
			}
			for _, want := range []string{"link br0 type bridge up", "link eth1 type veth", "master br0", "addr 192.168.50.1/24", "route 10.20.0.0/16 via 192.168.50.254 dev br0"} {
				if !strings.Contains(out, want) {
					return fmt.Errorf("show lacks %q:\n%s", want, out)
				}
			}
			return nil
		}()
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestEthernet picks the wired NICs out of a /sys/class/net laid out as the kernel lays it out:
// a device link and type 1, without a wireless directory. (The VM tests run it on real sysfs.)
func TestEthernet(t *testing.T) {
	dir := t.TempDir()
	mk := func(name, typ string, extra ...string) {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(d, "type"), []byte(typ+"\n"), 0o644)
		for _, e := range extra {
			os.MkdirAll(filepath.Join(d, e), 0o755)
		}
	}
	mk("enp0s3", "1", "device")
	mk("eth1", "1", "device")
	mk("wlp2s0", "1", "device", "wireless")
	mk("wlan1", "1", "device", "phy80211")
	mk("cni0", "1")           // a bridge: no device
	mk("veth1234", "1")       // a pod's veth
	mk("ib0", "32", "device") // InfiniBand
	mk("lo", "772")
	got, err := Ethernet(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"enp0s3", "eth1"}; !slices.Equal(got, want) {
		t.Fatalf("Ethernet = %v, want %v", got, want)
	}
	if _, err := Ethernet(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "ethernet links") {
		t.Fatalf("Ethernet of a missing directory: %v, want an error naming what it read", err)
	}
}
