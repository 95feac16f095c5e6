// Package dhcp configures a node link by DHCPv4: it obtains a lease, applies the address, the
// default route and DNS servers, and renews the lease in the background for as long as the node
// runs (at T1, retrying with backoff; a lease that lapses starts discovery again). It runs inside
// PID 1, without executing any helper.
package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Lease is what the server handed out.
type Lease struct {
	Interface string
	Address   netip.Prefix
	Router    netip.Addr // invalid when the server gave none (QEMU user networking with restrict=on)
	DNS       []netip.Addr
	NTP       []netip.Addr // option 42, for the node's NTP client when the node config names none
	Search    []string     // checked DNS names, each fit for a resolv.conf search line
	Hostname  string       // a checked RFC 1123 hostname, in lowercase as node names are; "" if none
	Duration  time.Duration
	Renew     time.Duration // T1
	// Rejected says which names from the server were not used and why, naming each value, for
	// the caller to log: the server (or whoever answers first on the LAN) must not be able to
	// pick a node name that is not a name, or add lines to resolv.conf.
	Rejected []string
	// RouteMetric is the default route's metric, set by the caller before Apply and kept by Keep.
	// 0 for a node's one DHCP link; a distinct one per link where several have leases, so each
	// keeps its default route rather than replacing the others' (the lowest metric is used).
	RouteMetric int
	raw         *nclient4.Lease
}

func (l *Lease) String() string {
	s := fmt.Sprintf("%s %s lease %s", l.Interface, l.Address, l.Duration)
	if l.Router.IsValid() {
		s += " router " + l.Router.String()
	}
	return s
}

// Acquire brings the link up and runs DISCOVER/OFFER/REQUEST/ACK within ctx.
func Acquire(ctx context.Context, ifname string) (*Lease, error) {
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return nil, fmt.Errorf("dhcp on %s: %w", ifname, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("dhcp on %s: link up: %w", ifname, err)
	}
	c, err := nclient4.New(ifname, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
	if err != nil {
		return nil, fmt.Errorf("dhcp on %s: %w", ifname, err)
	}
	defer c.Close()
	raw, err := c.Request(ctx, dhcpv4.WithOption(dhcpv4.OptParameterRequestList(
		dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
		dhcpv4.OptionDomainName, dhcpv4.OptionDNSDomainSearchList, dhcpv4.OptionHostName,
		dhcpv4.OptionNTPServers)))
	if err != nil {
		return nil, fmt.Errorf("dhcp on %s: %w", ifname, err)
	}
	return fromACK(ifname, raw)
}

func fromACK(ifname string, raw *nclient4.Lease) (*Lease, error) {
	ack := raw.ACK
	ip, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok || !ip.IsValid() || ip.IsUnspecified() {
		return nil, fmt.Errorf("dhcp on %s: the server offered no address", ifname)
	}
	mask := ack.SubnetMask()
	bits := 24
	if mask != nil {
		bits, _ = mask.Size()
	}
	l := &Lease{Interface: ifname, Address: netip.PrefixFrom(ip, bits), raw: raw,
		Duration: ack.IPAddressLeaseTime(time.Hour)}
	if h := strings.TrimRight(ack.HostName(), "\x00"); h != "" {
		if err := checkHostname(h); err != nil {
			l.Rejected = append(l.Rejected, fmt.Sprintf("hostname %q from the DHCP server on %s: %v; not used", h, ifname, err))
		} else {
			l.Hostname = strings.ToLower(h)
		}
	}
	l.Renew = ack.IPAddressRenewalTime(l.Duration / 2)
	if rs := ack.Router(); len(rs) > 0 {
		if r, ok := netip.AddrFromSlice(rs[0].To4()); ok {
			l.Router = r
		}
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok {
			l.DNS = append(l.DNS, a)
		}
	}
	for _, d := range ack.NTPServers() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok {
			l.NTP = append(l.NTP, a)
		}
	}
	var search []string
	if s := ack.DomainSearch(); s != nil {
		search = s.Labels
	} else if d := ack.DomainName(); d != "" {
		search = []string{d}
	}
	for _, d := range search {
		d = strings.TrimSuffix(strings.TrimRight(d, "\x00"), ".")
		if err := checkDomain(d); err != nil {
			l.Rejected = append(l.Rejected, fmt.Sprintf("search domain %q from the DHCP server on %s: %v; not used", d, ifname, err))
			continue
		}
		l.Search = append(l.Search, d)
	}
	return l, nil
}

// hostNameMax is the kernel's limit on the hostname (HOST_NAME_MAX).
const hostNameMax = 64

// checkHostname accepts an RFC 1123 hostname (dot-separated labels of letters, digits and
// hyphens, not starting or ending with a hyphen) that fits the kernel's hostname.
func checkHostname(h string) error {
	if len(h) > hostNameMax {
		return fmt.Errorf("longer than %d bytes", hostNameMax)
	}
	return checkLabels(h, false)
}

// checkDomain accepts a DNS name for resolv.conf's search line: at most 253 bytes of
// dot-separated labels as in a hostname, where underscores are allowed too (service names
// such as _tcp are labels). Nothing else, so no whitespace can end the line or start another.
func checkDomain(d string) error {
	if len(d) > 253 {
		return errors.New("longer than 253 bytes")
	}
	return checkLabels(d, true)
}

func checkLabels(name string, underscore bool) error {
	if name == "" {
		return errors.New("empty")
	}
	allowed := "letters, digits and hyphens"
	if underscore {
		allowed = "letters, digits, hyphens and underscores"
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("label %q is not 1-63 bytes long", label)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with a hyphen", label)
		}
		for _, c := range []byte(label) {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || underscore && c == '_'
			if !ok {
				return fmt.Errorf("label %q has a character other than %s", label, allowed)
			}
		}
	}
	return nil
}

// Apply puts the lease on the link: the address (with the lease's lifetime, so the kernel drops
// it if renewal fails for good), the default route, and /etc/resolv.conf when DNS was offered.
func Apply(l *Lease, resolvConf string) error {
	link, err := netlink.LinkByName(l.Interface)
	if err != nil {
		return fmt.Errorf("apply lease on %s: %w", l.Interface, err)
	}
	a := l.Address
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), 32)},
		ValidLft: int(l.Duration.Seconds()), PreferedLft: int(l.Duration.Seconds())}
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("apply lease on %s: address %s: %w", l.Interface, a, err)
	}
	if l.Router.IsValid() {
		r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: l.Router.AsSlice(), Priority: l.RouteMetric}
		if err := netlink.RouteReplace(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("apply lease on %s: default route via %s: %w", l.Interface, l.Router, err)
		}
	}
	if len(l.DNS) > 0 && resolvConf != "" {
		for _, d := range l.Search {
			// fromACK checked them; a Lease made elsewhere must not write lines either.
			if err := checkDomain(d); err != nil {
				return fmt.Errorf("apply lease on %s: search domain %q: %w", l.Interface, d, err)
			}
		}
		var b strings.Builder
		b.WriteString("# written by ingot from the DHCP lease on " + l.Interface + "\n")
		if len(l.Search) > 0 {
			b.WriteString("search " + strings.Join(l.Search, " ") + "\n")
		}
		for _, d := range l.DNS {
			b.WriteString("nameserver " + d.String() + "\n")
		}
		if err := os.WriteFile(resolvConf, []byte(b.String()), 0o644); err != nil {
			return fmt.Errorf("apply lease on %s: %w", l.Interface, err)
		}
	}
	return nil
}

// Keep renews the lease until ctx ends: at T1, retrying every few seconds up to the lease's end,
// and acquiring a new lease if it lapsed. Each new lease is applied.
func Keep(ctx context.Context, log *slog.Logger, l *Lease, resolvConf string) {
	for {
		wait := l.Renew
		if wait <= 0 {
			wait = l.Duration / 2
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		expires := time.Now().Add(l.Duration - wait)
		for {
			next, err := renew(ctx, l)
			if err == nil {
				next.RouteMetric = l.RouteMetric
				next.LogRejected(log)
				if err := Apply(next, resolvConf); err != nil {
					log.Warn("dhcp: apply renewed lease", "err", err)
				}
				l = next
				break
			}
			if time.Now().After(expires) {
				log.Warn("dhcp: lease expired; discovering again", "interface", l.Interface, "err", err)
				if next, err = Acquire(ctx, l.Interface); err == nil {
					next.RouteMetric = l.RouteMetric
					next.LogRejected(log)
					if err := Apply(next, resolvConf); err == nil {
						l = next
						break
					}
				}
				expires = time.Now().Add(time.Minute)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
		}
	}
}

// LogRejected logs the names of the lease that were not used, one line each.
func (l *Lease) LogRejected(log *slog.Logger) {
	for _, r := range l.Rejected {
		log.Warn("dhcp: a name from the server was not used", "interface", l.Interface, "reason", r)
	}
}

func renew(ctx context.Context, l *Lease) (*Lease, error) {
	c, err := nclient4.New(l.Interface, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(2))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	raw, err := c.Renew(ctx, l.raw)
	if err != nil {
		return nil, err
	}
	return fromACK(l.Interface, raw)
}
