// Package cniconf reads and validates CNI network configuration lists (the .conflist and .conf
// files in /etc/cni/net.d) for ingot's pod network, and decides whether ingot runs a list
// natively (bridge with host-local IPAM, portmap, loopback; firewall and an option-less tuning as
// no-ops) or must delegate it to external plugin binaries through libcni.
//
// Parsing is pure: it never touches the system, so `ingot build` and the runtime's start can
// reject a bad conflist with the same sentence. Errors name the file and the field
// (plugins[0].ipam.ranges[0][0].subnet); keys ingot does not know are warnings, as in config.toml.
package cniconf

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// DefaultConflist is the pod network when /etc/cni/net.d holds none: the seed document's example
// (bridge cni0, ipMasq, host-local 10.88.0.0/16, default route) plus what containerd's own default
// file adds: isGateway, without which the pods' default route points at an address nobody holds;
// hairpinMode, without which a pod cannot reach itself through its hostPort or a Service once
// br_netfilter hands bridged traffic to netfilter; and portmap for hostPorts.
//
//go:embed default.conflist
var DefaultConflist []byte

// DefaultFile is the name the default conflist is reported under.
const DefaultFile = "(built-in default conflist)"

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid CNI configuration")

// Error is a validation error naming the file and the field.
type Error struct {
	File  string
	Field string // e.g. plugins[0].ipam.ranges[0][0].subnet; empty for the whole file
	Msg   string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return e.File + ": " + e.Msg
	}
	return e.File + ": " + e.Field + ": " + e.Msg
}

func (e *Error) Unwrap() error { return ErrInvalid }

// List is a parsed, validated network configuration list.
type List struct {
	File         string
	CNIVersion   string
	Name         string
	DisableCheck bool
	Plugins      []Plugin
	// Bytes is the list as JSON for libcni (a single-plugin .conf is wrapped into a list).
	Bytes []byte
	// Warnings name keys ingot ignores and settings that probably do not do what was meant.
	Warnings []string
	native   string // "" when ingot runs the list itself, else why not
}

// Plugin is one entry of plugins. Exactly one of the typed fields is set for a native type.
type Plugin struct {
	Type    string
	Field   string // plugins[i]
	Bytes   json.RawMessage
	Bridge  *Bridge
	PortMap *PortMap
}

// Bridge is the bridge plugin's configuration.
type Bridge struct {
	Name             string // "bridge"; default cni0
	IsGateway        bool   // isGateway (implied by isDefaultGateway)
	IsDefaultGateway bool
	ForceAddress     bool
	IPMasq           bool
	HairpinMode      bool
	PromiscMode      bool
	MTU              int // 0: the kernel's default
	IPAM             *HostLocal
}

// HostLocal is the host-local IPAM configuration: one address is allocated from each range set.
type HostLocal struct {
	RangeSets [][]Range
	Routes    []Route
}

// Range is one host-local range with its defaults filled in.
type Range struct {
	Subnet  netip.Prefix // masked
	Start   netip.Addr   // first allocatable address
	End     netip.Addr   // last allocatable address
	Gateway netip.Addr   // never allocated
}

// Contains reports whether a lies in [Start, End].
func (r Range) Contains(a netip.Addr) bool {
	return r.Subnet.Contains(a) && r.Start.Compare(a) <= 0 && a.Compare(r.End) <= 0
}

// Route is a route for the pod's interface; an invalid GW means the range set's gateway.
type Route struct {
	Dst netip.Prefix
	GW  netip.Addr
}

// PortMap is the portmap plugin's configuration.
type PortMap struct {
	SNAT         bool // snat, default true: masquerade hairpin and localhost traffic
	PortMappings bool // capabilities.portMappings: the runtime passes the pod's hostPorts
}

// Native reports whether ingot runs the list itself; otherwise why tells what needs the
// external plugins.
func (l *List) Native() (ok bool, why string) { return l.native == "", l.native }

// Bridge returns the list's bridge plugin, or nil.
func (l *List) Bridge() *Bridge {
	for _, p := range l.Plugins {
		if p.Bridge != nil {
			return p.Bridge
		}
	}
	return nil
}

// PortMap returns the list's portmap plugin, or nil.
func (l *List) PortMap() *PortMap {
	for _, p := range l.Plugins {
		if p.PortMap != nil {
			return p.PortMap
		}
	}
	return nil
}

// Subnets returns the host-local subnets of the list's native bridge.
func (l *List) Subnets() []netip.Prefix {
	var out []netip.Prefix
	if b := l.Bridge(); b != nil && b.IPAM != nil {
		for _, set := range b.IPAM.RangeSets {
			for _, r := range set {
				out = append(out, r.Subnet)
			}
		}
	}
	return out
}

// Default returns the parsed default conflist.
func Default() *List {
	l, err := Parse(DefaultFile, DefaultConflist)
	if err != nil {
		panic("cniconf: the built-in default conflist is invalid: " + err.Error())
	}
	return l
}

// DefaultFor returns the default network over the pod subnets the cluster gave this node (CRI's
// UpdateRuntimeConfig pod CIDR, one per family for dual stack) instead of 10.88.0.0/16. The
// runtime uses it when /etc/cni/net.d holds no file, as containerd fills its conflist template.
func DefaultFor(podCIDRs []netip.Prefix) (*List, error) {
	if len(podCIDRs) == 0 {
		return Default(), nil
	}
	var conf map[string]any
	if err := json.Unmarshal(DefaultConflist, &conf); err != nil {
		return nil, err
	}
	var sets [][]map[string]string
	var routes []map[string]string
	for _, p := range podCIDRs {
		sets = append(sets, []map[string]string{{"subnet": p.String()}})
		dst := "0.0.0.0/0"
		if p.Addr().Is6() {
			dst = "::/0"
		}
		if !slices.ContainsFunc(routes, func(r map[string]string) bool { return r["dst"] == dst }) {
			routes = append(routes, map[string]string{"dst": dst})
		}
	}
	bridge := conf["plugins"].([]any)[0].(map[string]any)
	bridge["ipam"] = map[string]any{"type": "host-local", "ranges": sets, "routes": routes}
	data, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return nil, err
	}
	return Parse(fmt.Sprintf("(built-in default conflist for pod CIDR %v)", podCIDRs), data)
}

// Extensions are the file name endings Load considers, as libcni and containerd do.
var Extensions = []string{".conflist", ".conf", ".json"}

// Load parses the first configuration file in dir in lexical order, as containerd does. A
// missing or empty dir returns an error wrapping os.ErrNotExist, so the caller can fall back to
// Default. A bad first file is an error, not a reason to try the next: a typo must not silently
// switch the node to another network.
func Load(dir string) (*List, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("CNI configuration directory %s: %w", dir, err)
	}
	var files []string
	for _, e := range entries {
		if !e.IsDir() && slices.Contains(Extensions, filepath.Ext(e.Name())) {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("CNI configuration directory %s has no %s file: %w", dir, strings.Join(Extensions, ", "), os.ErrNotExist)
	}
	sort.Strings(files)
	data, err := os.ReadFile(files[0])
	if err != nil {
		return nil, fmt.Errorf("CNI configuration: %w", err)
	}
	return Parse(files[0], data)
}

// Versions are the CNI spec versions ingot accepts.
var Versions = []string{"0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`)

// Keys every plugin may carry (the spec's and those runtimes inject).
var commonKeys = []string{"type", "name", "cniVersion", "capabilities", "runtimeConfig", "args", "prevResult", "dns", "ipam"}

// Parse parses and validates one file's contents; file names it in errors. A file with a
// top-level "type" is a single-plugin .conf and is wrapped into a list.
func Parse(file string, data []byte) (*List, error) {
	p := &parser{file: file}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, p.jsonErr(data, err)
	}
	if _, single := top["type"]; single {
		if _, hasPlugins := top["plugins"]; hasPlugins {
			return nil, p.errf("", `has both "type" and "plugins": a .conf names one plugin, a .conflist lists them under "plugins"`)
		}
		wrapped := map[string]any{"plugins": []json.RawMessage{data}}
		for _, k := range []string{"cniVersion", "name"} {
			if v, ok := top[k]; ok {
				wrapped[k] = v
			}
		}
		data, _ = json.Marshal(wrapped)
		top = nil
		if err := json.Unmarshal(data, &top); err != nil {
			return nil, p.jsonErr(data, err)
		}
	}
	l := &List{File: file, Bytes: data}
	p.list = l
	if err := p.str(top, "cniVersion", "", &l.CNIVersion, true); err != nil {
		return nil, err
	}
	if !slices.Contains(Versions, l.CNIVersion) {
		return nil, p.errf("cniVersion", "%q is not a CNI version ingot knows (%s)", l.CNIVersion, strings.Join(Versions, ", "))
	}
	if err := p.str(top, "name", "", &l.Name, true); err != nil {
		return nil, err
	}
	if !validName.MatchString(l.Name) {
		return nil, p.errf("name", "%q is not a valid network name (letters, digits, '_', '.', '-')", l.Name)
	}
	if raw, ok := top["disableCheck"]; ok {
		if err := json.Unmarshal(raw, &l.DisableCheck); err != nil {
			return nil, p.errf("disableCheck", "want true or false, got %s", raw)
		}
	}
	for k := range top {
		if !slices.Contains([]string{"cniVersion", "name", "plugins", "disableCheck", "disableGC", "loadOnlyInlinedPlugins", "cniVersions"}, k) {
			p.warnf(k, "unknown key, ignored")
		}
	}
	var plugins []json.RawMessage
	raw, ok := top["plugins"]
	if !ok {
		return nil, p.errf("plugins", "missing: a conflist lists its plugins under \"plugins\"")
	}
	if err := json.Unmarshal(raw, &plugins); err != nil {
		return nil, p.errf("plugins", "want a list of plugin objects: %v", err)
	}
	if len(plugins) == 0 {
		return nil, p.errf("plugins", "empty: a network needs at least one plugin")
	}
	for i, raw := range plugins {
		pl, err := p.plugin(fmt.Sprintf("plugins[%d]", i), raw)
		if err != nil {
			return nil, err
		}
		l.Plugins = append(l.Plugins, *pl)
	}
	if err := p.overlaps(); err != nil {
		return nil, err
	}
	l.native = p.nativeReason()
	sort.Strings(l.Warnings)
	return l, nil
}

type parser struct {
	file    string
	list    *List
	reasons []string // why the list is not native
	ranges  []fieldRange
}

type fieldRange struct {
	field string
	r     Range
}

func (p *parser) errf(field, format string, args ...any) error {
	return &Error{File: p.file, Field: field, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) warnf(field, format string, args ...any) {
	p.list.Warnings = append(p.list.Warnings, (&Error{File: p.file, Field: field, Msg: fmt.Sprintf(format, args...)}).Error())
}

func (p *parser) delegate(field, format string, args ...any) {
	p.reasons = append(p.reasons, field+": "+fmt.Sprintf(format, args...))
}

// jsonErr turns a syntax or type error into one that names the line and column.
func (p *parser) jsonErr(data []byte, err error) error {
	var off int64 = -1
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		off = se.Offset - 1 // Offset counts the offending byte

	case errors.As(err, &te):
		off = te.Offset
	}
	if off < 0 {
		return p.errf("", "not JSON: %v", err)
	}
	line, col := 1, 1
	for _, c := range data[:min(int(off), len(data))] {
		if c == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return p.errf("", "line %d, column %d: not valid JSON: %v", line, col, err)
}

// str reads a string key of obj; field is the path of obj.
func (p *parser) str(obj map[string]json.RawMessage, key, field string, dst *string, required bool) error {
	raw, ok := obj[key]
	if !ok {
		if required {
			return p.errf(join(field, key), "missing")
		}
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return p.errf(join(field, key), "want a string, got %s", raw)
	}
	if required && *dst == "" {
		return p.errf(join(field, key), "empty")
	}
	return nil
}

func (p *parser) boolean(obj map[string]json.RawMessage, key, field string, dst *bool) error {
	if raw, ok := obj[key]; ok {
		if err := json.Unmarshal(raw, dst); err != nil {
			return p.errf(join(field, key), "want true or false, got %s", raw)
		}
	}
	return nil
}

func join(field, key string) string {
	if field == "" {
		return key
	}
	return field + "." + key
}

// Keys each native plugin type knows besides commonKeys; a key in delegated[type] is valid but
// asks for something only the external plugin does.
var (
	known = map[string][]string{
		"bridge":     {"bridge", "isGateway", "isDefaultGateway", "forceAddress", "ipMasq", "mtu", "hairpinMode", "promiscMode"},
		"portmap":    {"snat"},
		"loopback":   {},
		"firewall":   {"backend", "iptablesAdminChainName", "firewalldZone", "ingressPolicy"},
		"tuning":     {},
		"host-local": {"type", "ranges", "subnet", "rangeStart", "rangeEnd", "gateway", "routes", "dataDir", "resolvConf"},
	}
	delegated = map[string][]string{
		"bridge":  {"vlan", "vlanTrunk", "preserveDefaultVlan", "macspoofchk", "enabledad", "disableContainerInterface", "portIsolation", "ipMasqBackend"},
		"portmap": {"conditionsV4", "conditionsV6", "markMasqBit", "externalSetMarkChain", "backend", "masqAll"},
		"tuning":  {"mac", "mtu", "promisc", "allmulti", "sysctl", "txQLen"},
	}
)

func (p *parser) plugin(field string, raw json.RawMessage) (*Plugin, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, p.errf(field, "want a plugin object, got %s", short(raw))
	}
	pl := &Plugin{Field: field, Bytes: raw}
	if err := p.str(obj, "type", field, &pl.Type, true); err != nil {
		return nil, err
	}
	if strings.ContainsAny(pl.Type, `/\`) || pl.Type == "." || pl.Type == ".." {
		return nil, p.errf(join(field, "type"), "%q is not a plugin name", pl.Type)
	}
	var version string
	if p.str(obj, "cniVersion", field, &version, false) == nil && version != "" && version != p.list.CNIVersion {
		p.warnf(join(field, "cniVersion"), "%q differs from the list's %q; the list's is used", version, p.list.CNIVersion)
	}
	keys, native := known[pl.Type]
	if !native {
		p.delegate(field, "plugin type %q is not built into ingot", pl.Type)
		if ipamRaw, ok := obj["ipam"]; ok {
			// Still catch overlapping host-local subnets: they break whichever plugin runs them.
			if _, err := p.ipam(join(field, "ipam"), ipamRaw, false); err != nil {
				return nil, err
			}
		}
		return pl, nil
	}
	for k := range obj {
		switch {
		case slices.Contains(commonKeys, k), slices.Contains(keys, k):
		case slices.Contains(delegated[pl.Type], k):
			p.delegate(join(field, k), "%s's %q is not implemented by ingot", pl.Type, k)
		default:
			p.warnf(join(field, k), "unknown key for plugin type %q, ignored", pl.Type)
		}
	}
	var err error
	switch pl.Type {
	case "bridge":
		pl.Bridge, err = p.bridge(field, obj)
	case "portmap":
		pl.PortMap = &PortMap{SNAT: true}
		if err = p.boolean(obj, "snat", field, &pl.PortMap.SNAT); err == nil {
			pl.PortMap.PortMappings = capability(obj, "portMappings")
			if !pl.PortMap.PortMappings {
				p.warnf(join(field, "capabilities"), `portmap without "portMappings": true receives no hostPorts from the runtime`)
			}
		}
	case "firewall":
		// ingot adds no filter rules of its own and leaves forwarding open, which is what the
		// firewall plugin's rules permit; nothing to do.
	case "loopback":
		// ingot brings lo up in every pod anyway.
	case "tuning":
		// Without options tuning changes nothing; with them it is delegated (see delegated).
	}
	if err != nil {
		return nil, err
	}
	if _, ok := obj["ipam"]; ok && pl.Type != "bridge" {
		p.warnf(join(field, "ipam"), "plugin type %q takes no ipam, ignored", pl.Type)
	}
	return pl, nil
}

func capability(obj map[string]json.RawMessage, name string) bool {
	var caps map[string]bool
	if raw, ok := obj["capabilities"]; ok && json.Unmarshal(raw, &caps) == nil {
		return caps[name]
	}
	return false
}

func (p *parser) bridge(field string, obj map[string]json.RawMessage) (*Bridge, error) {
	b := &Bridge{Name: "cni0"}
	if err := p.str(obj, "bridge", field, &b.Name, false); err != nil {
		return nil, err
	}
	if err := validIfName(b.Name); err != nil {
		return nil, p.errf(join(field, "bridge"), "%q: %v", b.Name, err)
	}
	for _, kv := range []struct {
		key string
		dst *bool
	}{{"isGateway", &b.IsGateway}, {"isDefaultGateway", &b.IsDefaultGateway}, {"forceAddress", &b.ForceAddress},
		{"ipMasq", &b.IPMasq}, {"hairpinMode", &b.HairpinMode}, {"promiscMode", &b.PromiscMode}} {
		if err := p.boolean(obj, kv.key, field, kv.dst); err != nil {
			return nil, err
		}
	}
	if b.IsDefaultGateway {
		b.IsGateway = true
	}
	if raw, ok := obj["mtu"]; ok {
		if err := json.Unmarshal(raw, &b.MTU); err != nil || (b.MTU != 0 && (b.MTU < 68 || b.MTU > 65535)) {
			return nil, p.errf(join(field, "mtu"), "want a number from 68 to 65535 (or 0 for the default), got %s", raw)
		}
	}
	raw, ok := obj["ipam"]
	if !ok {
		p.delegate(field, "a bridge without ipam (layer 2 only) is not implemented by ingot")
		return b, nil
	}
	ipam, err := p.ipam(join(field, "ipam"), raw, true)
	if err != nil {
		return nil, err
	}
	b.IPAM = ipam
	if ipam != nil && !b.IsGateway {
		for _, r := range ipam.Routes {
			if r.Dst.Bits() == 0 && !r.GW.IsValid() {
				p.warnf(join(field, "isGateway"), "false, so the bridge holds no gateway address and the pods' default route via the range's gateway reaches nothing; set \"isGateway\": true")
				break
			}
		}
	}
	return b, nil
}

// ipam parses an ipam object. Only host-local is native; for other types (dhcp, static, …) the
// list is delegated and nil is returned.
func (p *parser) ipam(field string, raw json.RawMessage, mark bool) (*HostLocal, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, p.errf(field, "want an object, got %s", short(raw))
	}
	var typ string
	if err := p.str(obj, "type", field, &typ, true); err != nil {
		return nil, err
	}
	if typ != "host-local" {
		if mark {
			p.delegate(join(field, "type"), "IPAM type %q is not built into ingot", typ)
		}
		return nil, nil
	}
	for k := range obj {
		if !slices.Contains(known["host-local"], k) {
			p.warnf(join(field, k), "unknown key for host-local, ignored")
		}
	}
	if _, ok := obj["dataDir"]; ok && mark {
		p.warnf(join(field, "dataDir"), "ignored: ingot keeps its leases in its own database under the runtime's root")
	}
	h := &HostLocal{}
	if rawRanges, ok := obj["ranges"]; ok {
		if _, old := obj["subnet"]; old {
			return nil, p.errf(join(field, "subnet"), `set together with "ranges"; use one of them`)
		}
		var sets [][]json.RawMessage
		if err := json.Unmarshal(rawRanges, &sets); err != nil {
			return nil, p.errf(join(field, "ranges"), `want a list of range sets, each a list of ranges: [[{"subnet": "10.88.0.0/16"}]]`)
		}
		if len(sets) == 0 {
			return nil, p.errf(join(field, "ranges"), "empty")
		}
		for i, set := range sets {
			if len(set) == 0 {
				return nil, p.errf(fmt.Sprintf("%s.ranges[%d]", field, i), "empty range set")
			}
			var rs []Range
			for j, rr := range set {
				f := fmt.Sprintf("%s.ranges[%d][%d]", field, i, j)
				var ro map[string]json.RawMessage
				if err := json.Unmarshal(rr, &ro); err != nil {
					return nil, p.errf(f, "want a range object, got %s", short(rr))
				}
				r, err := p.rangeOf(f, ro)
				if err != nil {
					return nil, err
				}
				if len(rs) > 0 && rs[0].Subnet.Addr().Is4() != r.Subnet.Addr().Is4() {
					return nil, p.errf(join(f, "subnet"), "%s mixes address families in one range set", r.Subnet)
				}
				rs = append(rs, r)
				p.ranges = append(p.ranges, fieldRange{join(f, "subnet"), r})
			}
			h.RangeSets = append(h.RangeSets, rs)
		}
	} else {
		r, err := p.rangeOf(field, obj)
		if err != nil {
			return nil, err
		}
		h.RangeSets = [][]Range{{r}}
		p.ranges = append(p.ranges, fieldRange{join(field, "subnet"), r})
	}
	if rawRoutes, ok := obj["routes"]; ok {
		var routes []map[string]string
		if err := json.Unmarshal(rawRoutes, &routes); err != nil {
			return nil, p.errf(join(field, "routes"), `want a list like [{"dst": "0.0.0.0/0"}]`)
		}
		for i, ro := range routes {
			f := fmt.Sprintf("%s.routes[%d]", field, i)
			dst, err := netip.ParsePrefix(ro["dst"])
			if err != nil {
				return nil, p.errf(f+".dst", "%q is not a CIDR", ro["dst"])
			}
			r := Route{Dst: dst.Masked()}
			if gw, ok := ro["gw"]; ok {
				if r.GW, err = netip.ParseAddr(gw); err != nil {
					return nil, p.errf(f+".gw", "%q is not an IP address", gw)
				}
				if r.GW.Is4() != dst.Addr().Is4() {
					return nil, p.errf(f+".gw", "%s is not of the same family as dst %s", gw, dst)
				}
			} else if !h.hasFamily(dst.Addr().Is4()) {
				return nil, p.errf(f+".dst", "%s has no gw and no range of its family supplies one", dst)
			}
			h.Routes = append(h.Routes, r)
		}
	}
	return h, nil
}

func (h *HostLocal) hasFamily(v4 bool) bool {
	for _, set := range h.RangeSets {
		if set[0].Subnet.Addr().Is4() == v4 {
			return true
		}
	}
	return false
}

// rangeOf reads subnet, rangeStart, rangeEnd and gateway, filling host-local's defaults.
func (p *parser) rangeOf(field string, obj map[string]json.RawMessage) (Range, error) {
	var s, start, end, gw string
	for _, kv := range []struct {
		key string
		dst *string
	}{{"subnet", &s}, {"rangeStart", &start}, {"rangeEnd", &end}, {"gateway", &gw}} {
		if err := p.str(obj, kv.key, field, kv.dst, kv.key == "subnet"); err != nil {
			return Range{}, err
		}
	}
	prefix, err := netip.ParsePrefix(s)
	if err != nil {
		return Range{}, p.errf(join(field, "subnet"), "%q is not a CIDR like 10.88.0.0/16", s)
	}
	r := Range{Subnet: prefix.Masked()}
	bits := prefix.Addr().BitLen()
	if bits-prefix.Bits() < 2 {
		return Range{}, p.errf(join(field, "subnet"), "%s is too small: host-local needs at least a /%d", s, bits-2)
	}
	first := r.Subnet.Addr().Next() // the network address is never handed out
	last := lastAddr(r.Subnet)
	if r.Subnet.Addr().Is4() {
		last = last.Prev() // nor the broadcast address
	}
	r.Start, r.End, r.Gateway = first, last, first
	for _, kv := range []struct {
		key, s string
		dst    *netip.Addr
	}{{"rangeStart", start, &r.Start}, {"rangeEnd", end, &r.End}, {"gateway", gw, &r.Gateway}} {
		if kv.s == "" {
			continue
		}
		a, err := netip.ParseAddr(kv.s)
		if err != nil {
			return Range{}, p.errf(join(field, kv.key), "%q is not an IP address", kv.s)
		}
		if !r.Subnet.Contains(a) {
			return Range{}, p.errf(join(field, kv.key), "%s is outside subnet %s", a, r.Subnet)
		}
		*kv.dst = a
	}
	if r.Start.Compare(first) < 0 || r.End.Compare(last) > 0 {
		return Range{}, p.errf(field, "range %s-%s includes the network or broadcast address of %s", r.Start, r.End, r.Subnet)
	}
	if r.Start.Compare(r.End) > 0 {
		return Range{}, p.errf(join(field, "rangeEnd"), "%s is before rangeStart %s", r.End, r.Start)
	}
	return r, nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// overlaps rejects host-local ranges that share addresses, in one plugin or across plugins: two
// allocators would hand out the same address.
func (p *parser) overlaps() error {
	for i, a := range p.ranges {
		for _, b := range p.ranges[:i] {
			if a.r.Subnet.Overlaps(b.r.Subnet) {
				return p.errf(a.field, "%s overlaps %s (%s)", a.r.Subnet, b.field, b.r.Subnet)
			}
		}
	}
	return nil
}

func (p *parser) nativeReason() string {
	bridges := 0
	for _, pl := range p.list.Plugins {
		if pl.Type == "bridge" {
			bridges++
		}
	}
	if bridges == 0 && len(p.reasons) == 0 {
		p.delegate("plugins", "no bridge plugin: ingot's built-in network is a bridge")
	}
	if bridges > 1 {
		p.delegate("plugins", "%d bridge plugins: ingot's built-in network attaches one interface", bridges)
	}
	return strings.Join(p.reasons, "; ")
}

func validIfName(name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return errors.New("not an interface name")
	case len(name) > 15:
		return errors.New("longer than 15 bytes, the kernel's limit for interface names")
	case strings.ContainsAny(name, "/: \t\n"):
		return errors.New("contains '/', ':' or whitespace")
	}
	return nil
}

func short(raw []byte) string {
	if len(raw) > 40 {
		return string(raw[:40]) + "…"
	}
	return string(raw)
}
