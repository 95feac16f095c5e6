// Package nft writes the pod network's rules into an nftables table of ingot's own,
// `inet ingot`: masquerade for pod traffic leaving the pod subnets, hostPort DNAT with the
// portmap plugin's semantics (from other hosts, from the node's own addresses and, for the node
// itself only, from 127.0.0.1, with masquerade for localhost and hairpin connections), and the
// guard that keeps the node's 127.0.0.0/8 its own.
//
// The guard exists because localhost hostPorts need route_localnet on the bridge: the kernel
// then routes packets to and from 127.0.0.0/8 on that link instead of dropping them as
// martians, so a pod (root in its namespace, CAP_NET_RAW by default) could send to 127.0.0.1
// and reach node services bound only to localhost (CVE-2020-8558). As kube-proxy does, the
// input hook drops packets for 127.0.0.0/8 that did not come in on lo, unless conntrack says
// they belong to a connection our hostPort DNAT made (the pod's answers to the node's
// connections to 127.0.0.1:hostPort). And the hostPort DNAT matches 127.0.0.0/8 only in the
// output hook: in prerouting, DNAT would rewrite the destination before routing ever saw the
// loopback address, making localhost hostPorts reachable from the LAN and from pods.
//
// The table is declarative: Apply replaces it in one nftables transaction from the whole
// desired state, so a rule can never be left behind by a crash between two steps, and packets
// never see a half-written table. It never touches any other table (kube-proxy's, a firewall's).
//
// The equivalent ruleset, as `nft list table inet ingot` shows it:
//
//	table inet ingot {
//	  chain input       { type filter hook input priority filter;
//	                      meta nfproto ipv4 ip daddr 127.0.0.0/8 iifname != "lo" ct status dnat return comment "localhost hostport replies"
//	                      meta nfproto ipv4 ip daddr 127.0.0.0/8 iifname != "lo" drop comment "localhost is the node's" }
//	  chain prerouting  { type nat hook prerouting priority dstnat;
//	                      meta nfproto ipv4 ip daddr 127.0.0.0/8 return comment "localhost hostports from the node only"
//	                      fib daddr type local jump hostports }
//	  chain output      { type nat hook output priority dstnat; fib daddr type local jump hostports }
//	  chain hostports   { meta nfproto ipv4 meta l4proto tcp th dport 8080 dnat ip to 10.88.0.5:80 comment "pod <id>" … }
//	  chain postrouting { type nat hook postrouting priority srcnat;
//	                      meta nfproto ipv4 ct status dnat ip saddr 127.0.0.0/8 masquerade comment "hostport from localhost"
//	                      ip saddr 10.88.0.5 ip daddr 10.88.0.5 masquerade comment "pod <id>"   # hairpin
//	                      ip saddr 10.88.0.0/16 ip daddr != 10.88.0.0/16 ip daddr != 224.0.0.0/4 masquerade comment "masquerade 10.88.0.0/16" }
//	}
package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// TableName is the name of ingot's table in the inet family.
const TableName = "ingot"

// Network is the network-wide part of the ruleset.
type Network struct {
	// Masquerade lists subnets whose traffic to anywhere else is masqueraded (bridge ipMasq).
	Masquerade []netip.Prefix
	// HostPorts installs the DNAT chains (the conflist has portmap).
	HostPorts bool
	// SNAT masquerades hostPort connections from localhost and hairpin connections from a pod
	// to its own hostPort (portmap's snat, on by default).
	SNAT bool
}

// Pod is one pod's part of the ruleset.
type Pod struct {
	ID    string
	IPs   []netip.Addr
	Ports []PortMapping
}

// PortMapping is one hostPort.
type PortMapping struct {
	Protocol      string // tcp, udp or sctp
	HostPort      uint16
	ContainerPort uint16
	HostIP        netip.Addr // invalid or unspecified: every local address
}

func (m PortMapping) String() string {
	host := ""
	if m.HostIP.IsValid() && !m.HostIP.IsUnspecified() {
		host = m.HostIP.String() + ":"
	}
	return fmt.Sprintf("%s%d->%d/%s", host, m.HostPort, m.ContainerPort, m.Protocol)
}

var protocols = map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "sctp": unix.IPPROTO_SCTP}

// Validate checks a port mapping before it reaches the kernel.
func (m PortMapping) Validate() error {
	if _, ok := protocols[m.Protocol]; !ok {
		return fmt.Errorf("port mapping %s: protocol %q is not tcp, udp or sctp", m, m.Protocol)
	}
	if m.HostPort == 0 || m.ContainerPort == 0 {
		return fmt.Errorf("port mapping %s: ports must be 1-65535", m)
	}
	return nil
}

// PodComment is the comment on every rule that belongs to pod id.
func PodComment(id string) string { return "pod " + id }

// Conn talks to nftables in one network namespace.
type Conn struct {
	nsFD int // 0: the calling thread's
}

// New returns a Conn for the network namespace open as nsFD (0: the calling thread's). The fd
// must stay open while the Conn is used.
func New(nsFD int) *Conn { return &Conn{nsFD: nsFD} }

func (c *Conn) dial() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if c.nsFD > 0 {
		opts = append(opts, nftables.WithNetNSFd(c.nsFD))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return conn, nil
}

func table() *nftables.Table {
	return &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
}

// Apply replaces table inet ingot with the ruleset for n and pods, atomically.
func (c *Conn) Apply(n Network, pods []Pod) error {
	for _, p := range pods {
		for _, m := range p.Ports {
			if err := m.Validate(); err != nil {
				return fmt.Errorf("pod %s: %w", p.ID, err)
			}
		}
	}
	conn, err := c.dial()
	if err != nil {
		return err
	}
	t := table()
	// Add-then-delete removes the table whether or not it exists, in the same transaction that
	// writes the new one.
	conn.AddTable(t)
	conn.DelTable(t)
	t = conn.AddTable(table())
	b := &builder{conn: conn, t: t}
	loopback := netip.MustParsePrefix("127.0.0.0/8")
	// IPv4 only: IPv6 drops ::1 arriving on any link but lo before any hook sees it, and has no
	// route_localnet.
	input := conn.AddChain(&nftables.Chain{Name: "input", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	// Two rules rather than one "not dnat" match: a packet without conntrack state makes the ct
	// match fail, and must then fall through to the drop.
	b.rule(input, "localhost hostport replies", family(true), match(daddr(true), loopback, true), notLo(), ctDNAT(), &expr.Verdict{Kind: expr.VerdictReturn})
	b.rule(input, "localhost is the node's", family(true), match(daddr(true), loopback, true), notLo(), &expr.Verdict{Kind: expr.VerdictDrop})
	post := conn.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	if n.HostPorts {
		hp := conn.AddChain(&nftables.Chain{Name: "hostports", Table: t})
		for _, hook := range []struct {
			name string
			hook *nftables.ChainHook
		}{{"prerouting", nftables.ChainHookPrerouting}, {"output", nftables.ChainHookOutput}} {
			ch := conn.AddChain(&nftables.Chain{Name: hook.name, Table: t, Type: nftables.ChainTypeNAT,
				Hooknum: hook.hook, Priority: nftables.ChainPriorityNATDest})
			if hook.name == "prerouting" {
				// Only the node's own connections (output) reach hostPorts on 127.0.0.0/8.
				b.rule(ch, "localhost hostports from the node only", family(true), match(daddr(true), loopback, true), &expr.Verdict{Kind: expr.VerdictReturn})
			}
			b.rule(ch, "hostports", fibLocal(), &expr.Verdict{Kind: expr.VerdictJump, Chain: hp.Name})
		}
		if n.SNAT {
			// Locally originated connections to 127.0.0.1:hostPort leave through the bridge with
			// a loopback source (allowed by route_localnet); the pod could not answer that.
			b.rule(post, "hostport from localhost", family(true), ctDNAT(), match(saddr(true), loopback, true), &expr.Masq{})
		}
		sorted := append([]Pod(nil), pods...)
		sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
		for _, p := range sorted {
			for _, m := range p.Ports {
				for _, ip := range p.IPs {
					if m.HostIP.IsValid() && !m.HostIP.IsUnspecified() && m.HostIP.Is4() != ip.Is4() {
						continue
					}
					b.rule(hp, PodComment(p.ID), dnat(m, ip))
				}
			}
			if n.SNAT && len(p.Ports) > 0 {
				for _, ip := range p.IPs {
					host := netip.PrefixFrom(ip, ip.BitLen())
					b.rule(post, PodComment(p.ID), family(ip.Is4()), match(saddr(ip.Is4()), host, true), match(daddr(ip.Is4()), host, true), &expr.Masq{})
				}
			}
		}
	}
	for _, s := range n.Masquerade {
		v4 := s.Addr().Is4()
		multicast := netip.MustParsePrefix("224.0.0.0/4")
		if !v4 {
			multicast = netip.MustParsePrefix("ff00::/8")
		}
		b.rule(post, "masquerade "+s.String(), family(v4), match(saddr(v4), s, true), match(daddr(v4), s, false), match(daddr(v4), multicast, false), &expr.Masq{})
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables: write table inet %s: %w", TableName, err)
	}
	return nil
}

// Delete removes table inet ingot; a missing table is not an error.
func (c *Conn) Delete() error {
	conn, err := c.dial()
	if err != nil {
		return err
	}
	conn.AddTable(table())
	conn.DelTable(table())
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("nftables: delete table inet %s: %w", TableName, err)
	}
	return nil
}

// Rule is a rule as read back: its chain and comment.
type Rule struct {
	Chain   string
	Comment string
}

// Rules lists the rules of table inet ingot, for status output and tests. A missing table has
// none.
func (c *Conn) Rules() ([]Rule, error) {
	conn, err := c.dial()
	if err != nil {
		return nil, err
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return nil, fmt.Errorf("nftables: list chains: %w", err)
	}
	var out []Rule
	for _, ch := range chains {
		if ch.Table.Name != TableName {
			continue
		}
		rules, err := conn.GetRules(ch.Table, ch)
		if err != nil {
			if errors.Is(err, unix.ENOENT) {
				continue
			}
			return nil, fmt.Errorf("nftables: list rules of %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			out = append(out, Rule{Chain: ch.Name, Comment: comment})
		}
	}
	return out, nil
}

// PodRules returns the rules carrying pod id's comment.
func (c *Conn) PodRules(id string) ([]Rule, error) {
	all, err := c.Rules()
	var out []Rule
	for _, r := range all {
		if r.Comment == PodComment(id) {
			out = append(out, r)
		}
	}
	return out, err
}

type builder struct {
	conn *nftables.Conn
	t    *nftables.Table
}

func (b *builder) rule(ch *nftables.Chain, comment string, parts ...any) {
	var exprs []expr.Any
	for _, p := range parts {
		switch p := p.(type) {
		case expr.Any:
			exprs = append(exprs, p)
		case []expr.Any:
			exprs = append(exprs, p...)
		default:
			panic(fmt.Sprintf("nft: rule part %T", p))
		}
	}
	if len(comment) > 200 {
		comment = comment[:200]
	}
	b.conn.AddRule(&nftables.Rule{Table: b.t, Chain: ch, Exprs: exprs,
		UserData: userdata.AppendString(nil, userdata.TypeComment, strings.ToValidUTF8(comment, "?"))})
}

// family matches meta nfproto ipv4 or ipv6 (an inet table sees both).
func family(v4 bool) []expr.Any {
	proto := byte(unix.NFPROTO_IPV6)
	if v4 {
		proto = unix.NFPROTO_IPV4
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

type field struct{ offset, len uint32 }

func saddr(v4 bool) field {
	if v4 {
		return field{12, 4}
	}
	return field{8, 16}
}

func daddr(v4 bool) field {
	if v4 {
		return field{16, 4}
	}
	return field{24, 16}
}

// match compares an address field with a prefix (eq or neq).
func match(f field, p netip.Prefix, eq bool) []expr.Any {
	op := expr.CmpOpEq
	if !eq {
		op = expr.CmpOpNeq
	}
	out := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: f.offset, Len: f.len}}
	if p.Bits() < p.Addr().BitLen() {
		mask := make([]byte, f.len)
		for i := 0; i < p.Bits(); i++ {
			mask[i/8] |= 0x80 >> (i % 8)
		}
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: f.len, Mask: mask, Xor: make([]byte, f.len)})
	}
	return append(out, &expr.Cmp{Op: op, Register: 1, Data: p.Masked().Addr().AsSlice()})
}

// fibLocal matches fib daddr type local: a packet for one of the node's own addresses.
func fibLocal() []expr.Any {
	return []expr.Any{
		&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.NativeEndian.AppendUint32(nil, unix.RTN_LOCAL)},
	}
}

// notLo matches iifname != "lo".
func notLo() []expr.Any {
	name := make([]byte, unix.IFNAMSIZ)
	copy(name, "lo")
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: name},
	}
}

// ctDNAT matches ct status dnat.
func ctDNAT() []expr.Any {
	const ipsDstNAT = 1 << 5 // IPS_DST_NAT
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binary.NativeEndian.AppendUint32(nil, ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// dnat builds: meta nfproto F [ip daddr H] meta l4proto P th dport HP dnat to IP:CP.
func dnat(m PortMapping, ip netip.Addr) []expr.Any {
	v4 := ip.Is4()
	out := family(v4)
	if m.HostIP.IsValid() && !m.HostIP.IsUnspecified() {
		out = append(out, match(daddr(v4), netip.PrefixFrom(m.HostIP, m.HostIP.BitLen()), true)...)
	}
	natFamily := uint32(unix.NFPROTO_IPV4)
	if !v4 {
		natFamily = unix.NFPROTO_IPV6
	}
	return append(out,
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{protocols[m.Protocol]}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, m.HostPort)},
		&expr.Immediate{Register: 1, Data: ip.AsSlice()},
		&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, m.ContainerPort)},
		&expr.NAT{Type: expr.NATTypeDestNAT, Family: natFamily, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
	)
}
