package profiles

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"path"
	"slices"
	"strconv"
	"strings"

	"ingot.dev/ingot/netsetup/cniconf"
	"ingot.dev/ingot/runtime/config"

	"ingot.dev/ingot/internal/tomlpos"
)

// Validate checks p's semantics. It does not apply defaults (Parse does), so
// a hand-built Profile must set Hostname, Kernel.Package and Kernel.Console, Disk and each
// Service's Restart. The error is an *Error whose Key names the offending
// value; it has no File or Line.
func (p *Profile) Validate() error {
	if e := p.validate(); e != nil {
		return e
	}
	return nil
}

func (p *Profile) validate() *Error {
	if p.Name == "" {
		return &Error{Key: "name", Msg: "required"}
	}
	if !isName(p.Name) {
		return invalid("name", p.Name, "lowercase letters, digits and '-'")
	}
	if !IsHostname(p.Hostname) {
		return invalid("hostname", p.Hostname, HostnameSyntax)
	}
	sysctls := func() *Error { return validateSysctls(p.Sysctls) }
	for _, check := range []func() *Error{p.Kernel.validate, sysctls, p.validateBundles, p.Disk.validate, p.Upgrade.validate, p.validateEmbedded, p.Network.validate, p.validateNTP, p.validateKubelet, p.validateServices} {
		if e := check(); e != nil {
			return e
		}
	}
	return nil
}

// HostnameSyntax says what IsHostname accepts, for error messages.
const HostnameSyntax = "an RFC 1123 hostname: dot-separated labels of 1-63 lowercase letters, digits and '-', not starting or ending with '-'"

// ValidateSysctls checks a [sysctls] table: names are dotted (or slashed) lowercase paths, values
// non-empty single lines. The error is an *Error keyed sysctls."name", without File or Line.
func ValidateSysctls(sysctls map[string]string) error {
	if e := validateSysctls(sysctls); e != nil {
		return e
	}
	return nil
}

func validateSysctls(sysctls map[string]string) *Error {
	for _, k := range slices.Sorted(maps.Keys(sysctls)) {
		key := "sysctls." + tomlpos.QuoteKey(k)
		if !isSysctl(k) {
			return &Error{Key: key, Msg: "invalid sysctl name (want dotted lowercase path like net.ipv4.ip_forward)"}
		}
		if v := sysctls[k]; v == "" || strings.ContainsAny(v, "\n\x00") {
			return &Error{Key: key, Msg: fmt.Sprintf("invalid value %q (want a non-empty single line)", v)}
		}
	}
	return nil
}

func (p *Profile) validateBundles() *Error {
	knownBundles := []string{BundleBusybox, BundleCrictl, BundleCNIPlugins, BundleKubelet}
	for i, b := range p.Bundles {
		key := fmt.Sprintf("bundles[%d]", i)
		if !slices.Contains(knownBundles, b) {
			return &Error{Key: key, Msg: fmt.Sprintf("unknown bundle %q (known: %s)", b, strings.Join(knownBundles, ", "))}
		}
		if j := slices.Index(p.Bundles, b); j < i {
			return &Error{Key: key, Msg: fmt.Sprintf("bundle %q listed twice (also bundles[%d])", b, j)}
		}
	}
	return nil
}

// validateKubelet: a kubelet needs the runtime and a binary, and its settings must make sense.
func (p *Profile) validateKubelet() *Error {
	k := p.Kubelet
	if k.Binary != "" && !path.IsAbs(k.Binary) {
		return invalid("kubelet.binary", k.Binary, "an absolute path on the build host")
	}
	if k.Binary != "" && !slices.Contains(p.Bundles, BundleKubelet) {
		return &Error{Key: "kubelet.binary", Msg: fmt.Sprintf("set, but bundles does not list %q", BundleKubelet)}
	}
	if k.Enabled && !slices.Contains(p.Bundles, BundleKubelet) {
		return &Error{Key: "kubelet.enabled", Msg: fmt.Sprintf("the kubelet needs the %q bundle (add it to bundles)", BundleKubelet)}
	}
	if k.Enabled && !p.Runtime.Enabled {
		return &Error{Key: "kubelet.enabled", Msg: "the kubelet needs the runtime (runtime.enabled = true)"}
	}
	for i, a := range k.ClusterDNS {
		if _, err := netip.ParseAddr(a); err != nil {
			return invalid(fmt.Sprintf("kubelet.cluster_dns[%d]", i), a, "an IP address")
		}
	}
	if !IsHostname(k.ClusterDomain) {
		return invalid("kubelet.cluster_domain", k.ClusterDomain, HostnameSyntax)
	}
	if k.MaxPods < 1 || k.MaxPods > 10000 {
		return &Error{Key: "kubelet.max_pods", Msg: fmt.Sprintf("%d is out of range (1 to 10000)", k.MaxPods)}
	}
	return nil
}

func (u *Upgrade) validate() *Error {
	if u.HealthTimeoutS < 1 || u.HealthTimeoutS > 24*3600 {
		return &Error{Key: "upgrade.health_timeout_s", Msg: fmt.Sprintf("%d: want 1 to 86400 seconds", u.HealthTimeoutS)}
	}
	return nil
}

func (d *Disk) validate() *Error {
	if d.ESPMiB < MinESPMiB {
		return &Error{Key: "disk.esp_mib", Msg: fmt.Sprintf("%d MiB is too small (minimum %d)", d.ESPMiB, MinESPMiB)}
	}
	if d.StateMiB < MinStateMiB {
		return &Error{Key: "disk.state_mib", Msg: fmt.Sprintf("%d MiB is too small (minimum %d)", d.StateMiB, MinStateMiB)}
	}
	return nil
}

// validateEmbedded checks the runtime config.toml a profile embeds with the runtime's own parser,
// so a bad one fails the build, not the node. (Network.validate checks the CNI conflist.)
func (p *Profile) validateEmbedded() *Error {
	if p.Runtime.Config != "" {
		_, _, err := config.Parse("config.toml", []byte(p.Runtime.Config))
		if err != nil {
			return &Error{Key: "runtime.config", Msg: "the embedded " + strings.ReplaceAll(err.Error(), "\n", "; ")}
		}
	}
	return nil
}

// Validate checks a [network] table on its own, as node.toml's [network] replaces a profile's.
// The error is an *Error whose Key starts with "network.", without File or Line.
func (n *Network) Validate() error {
	if e := n.validate(); e != nil {
		return e
	}
	return nil
}

func (n *Network) validate() *Error {
	if n.CNI != "" {
		// The pod network's own parser, so a bad conflist fails here, not on the node.
		if _, err := cniconf.Parse("conflist", []byte(n.CNI)); err != nil {
			return &Error{Key: "network.cni", Msg: "the embedded " + strings.ReplaceAll(err.Error(), "\n", "; ")}
		}
	}
	linkName := func(key, n string) *Error {
		if n == "" || len(n) > 15 || strings.ContainsAny(n, "/ \t:") {
			return &Error{Key: key, Msg: fmt.Sprintf("invalid link name %q", n)}
		}
		return nil
	}
	bondModes := []string{"balance-rr", "active-backup", "balance-xor", "broadcast", "802.3ad", "balance-tlb", "balance-alb"}
	for i, b := range n.Bonds {
		key := fmt.Sprintf("network.bond[%d]", i)
		if e := linkName(key+".name", b.Name); e != nil {
			return e
		}
		if !slices.Contains(bondModes, b.Mode) {
			return &Error{Key: key + ".mode", Msg: fmt.Sprintf("unknown bond mode %q (want one of %s)", b.Mode, strings.Join(bondModes, ", "))}
		}
	}
	for i, b := range n.Bridges {
		if e := linkName(fmt.Sprintf("network.bridge[%d].name", i), b.Name); e != nil {
			return e
		}
	}
	for i, v := range n.VLANs {
		key := fmt.Sprintf("network.vlan[%d]", i)
		if e := linkName(key+".name", v.Name); e != nil {
			return e
		}
		if e := linkName(key+".link", v.Link); e != nil {
			return e
		}
		if v.ID < 1 || v.ID > 4094 {
			return &Error{Key: key + ".id", Msg: fmt.Sprintf("VLAN id %d out of range 1-4094", v.ID)}
		}
	}
	for i, r := range n.Routes {
		key := fmt.Sprintf("network.route[%d]", i)
		if r.To != "" && r.To != "default" {
			if _, err := netip.ParsePrefix(r.To); err != nil {
				return &Error{Key: key + ".to", Msg: fmt.Sprintf("invalid destination %q (want CIDR or \"default\")", r.To)}
			}
		}
		if r.Via != "" {
			if _, err := netip.ParseAddr(r.Via); err != nil {
				return &Error{Key: key + ".via", Msg: fmt.Sprintf("invalid gateway %q", r.Via)}
			}
		}
		if r.Via == "" && r.Interface == "" {
			return &Error{Key: key, Msg: "a route needs a gateway (via) or an interface"}
		}
	}
	for i, ifc := range n.Interfaces {
		key := fmt.Sprintf("network.interface[%d]", i)
		switch {
		case ifc.Match != "" && ifc.Name != "":
			return &Error{Key: key + ".match", Msg: fmt.Sprintf("an interface has a name (%q) or a match, not both", ifc.Name)}
		case ifc.Match != "":
			if ifc.Match != MatchEthernet {
				return &Error{Key: key + ".match", Msg: fmt.Sprintf("unknown match %q (want %q: every wired Ethernet NIC)", ifc.Match, MatchEthernet)}
			}
			if !ifc.DHCP || len(ifc.Addresses) > 0 || ifc.Gateway != "" {
				return &Error{Key: key + ".match", Msg: "matched links are configured by DHCP only (dhcp = true, no addresses or gateway: the same address on every link would clash)"}
			}
			for j := range i {
				if n.Interfaces[j].Match != "" {
					return &Error{Key: key + ".match", Msg: fmt.Sprintf("one match is enough (also network.interface[%d])", j)}
				}
			}
		case ifc.Name == "" || len(ifc.Name) > 15 || strings.ContainsAny(ifc.Name, "/ \t"):
			return &Error{Key: key + ".name", Msg: fmt.Sprintf("invalid interface name %q", ifc.Name)}
		}
		for j, a := range ifc.Addresses {
			if _, err := netip.ParsePrefix(a); err != nil {
				return &Error{Key: fmt.Sprintf("%s.addresses[%d]", key, j), Msg: fmt.Sprintf("invalid address %q (want CIDR like 10.0.2.15/24)", a)}
			}
		}
		if ifc.Gateway != "" {
			if _, err := netip.ParseAddr(ifc.Gateway); err != nil {
				return &Error{Key: key + ".gateway", Msg: fmt.Sprintf("invalid gateway %q", ifc.Gateway)}
			}
		}
		if ifc.MTU < 0 || ifc.MTU > 65535 {
			return &Error{Key: key + ".mtu", Msg: fmt.Sprintf("invalid MTU %d", ifc.MTU)}
		}
	}
	return nil
}

// validateServices checks each service, that names are unique, and that at most one owns the
// console.
func (p *Profile) validateServices() *Error {
	console := -1
	for i := range p.Services {
		s := &p.Services[i]
		if e := s.validate(fmt.Sprintf("service[%d]", i)); e != nil {
			return e
		}
		for j := range i {
			if p.Services[j].Name == s.Name {
				return &Error{Key: fmt.Sprintf("service[%d].name", i), Msg: fmt.Sprintf("duplicate service %q (also service[%d])", s.Name, j)}
			}
		}
		if s.Console && s.Echo {
			return &Error{Key: fmt.Sprintf("service[%d].echo", i), Msg: "a console service writes to the console itself; echo is for services whose output is captured"}
		}
		if s.Console {
			if console >= 0 {
				return &Error{Key: fmt.Sprintf("service[%d].console", i),
					Msg: fmt.Sprintf("only one service may own the console; service[%d] %q already does", console, p.Services[console].Name)}
			}
			console = i
		}
	}
	return nil
}

func (k *Kernel) validate() *Error {
	if pkg := k.PackageFor("amd64"); !isDebianPackage(pkg) {
		return invalid("kernel.package", k.Package, `a Debian package name, "{arch}" standing for amd64 or arm64`)
	}
	for i, a := range k.Cmdline {
		if a == "" || strings.ContainsAny(a, " \t\n\x00") {
			return invalid(fmt.Sprintf("kernel.cmdline[%d]", i), a, "one non-empty argument without spaces")
		}
	}
	if len(k.Console) == 0 {
		return &Error{Key: "kernel.console", Msg: fmt.Sprintf("no console (want one or both of %q, %q)", ConsoleSerial, ConsoleVGA)}
	}
	for i, c := range k.Console {
		key := fmt.Sprintf("kernel.console[%d]", i)
		if c != ConsoleSerial && c != ConsoleVGA {
			return &Error{Key: key, Msg: fmt.Sprintf("unknown console %q (want %q or %q)", c, ConsoleSerial, ConsoleVGA)}
		}
		if j := slices.Index(k.Console, c); j < i {
			return &Error{Key: key, Msg: fmt.Sprintf("console %q listed twice (also kernel.console[%d])", c, j)}
		}
	}
	for i, set := range k.ModuleSets {
		key := fmt.Sprintf("kernel.module_sets[%d]", i)
		if moduleSets[set] == nil {
			return &Error{Key: key, Msg: fmt.Sprintf("unknown module set %q (known: %s)", set, strings.Join(ModuleSetNames(), ", "))}
		}
		if j := slices.Index(k.ModuleSets, set); j < i {
			return &Error{Key: key, Msg: fmt.Sprintf("module set %q listed twice (also kernel.module_sets[%d])", set, j)}
		}
	}
	for i, pkg := range k.Firmware {
		key := fmt.Sprintf("kernel.firmware[%d]", i)
		if !isDebianPackage(pkg) {
			return invalid(key, pkg, "a Debian package name, as firmware-realtek")
		}
		if j := slices.Index(k.Firmware, pkg); j < i {
			return &Error{Key: key, Msg: fmt.Sprintf("package %q listed twice (also kernel.firmware[%d])", pkg, j)}
		}
	}
	for i, m := range k.Modules {
		key := fmt.Sprintf("kernel.modules[%d]", i)
		if !isModule(m) {
			return &Error{Key: key, Msg: fmt.Sprintf("invalid module name %q (want [A-Za-z0-9_-]+, without .ko)", m)}
		}
		if j := slices.Index(k.Modules, m); j < i {
			return &Error{Key: key, Msg: fmt.Sprintf("module %q listed twice (also kernel.modules[%d])", m, j)}
		}
	}
	return nil
}

func (s *Service) validate(key string) *Error {
	if s.Name == "" {
		return &Error{Key: key + ".name", Msg: "required"}
	}
	if !isName(s.Name) {
		return invalid(key+".name", s.Name, "lowercase letters, digits and '-'")
	}
	if len(s.Command) == 0 {
		return &Error{Key: key + ".command", Msg: "required (want an array: absolute path, then arguments)"}
	}
	if !path.IsAbs(s.Command[0]) {
		return &Error{Key: key + ".command[0]", Msg: fmt.Sprintf("%q is not an absolute path (init does not search $PATH)", s.Command[0])}
	}
	var seen []string
	for i, kv := range s.Env {
		k, _, ok := strings.Cut(kv, "=")
		ekey := fmt.Sprintf("%s.env[%d]", key, i)
		if !ok || !isEnvName(k) {
			return invalid(ekey, kv, "KEY=VALUE, KEY of letters, digits and '_'")
		}
		if slices.Contains(seen, k) {
			return &Error{Key: ekey, Msg: fmt.Sprintf("variable %s set twice", k)}
		}
		seen = append(seen, k)
	}
	switch s.Restart {
	case RestartAlways, RestartOnFailure, RestartNever:
	default:
		return invalid(key+".restart", s.Restart, "always, on-failure or never")
	}
	return nil
}

func (p *Profile) validateNTP() *Error {
	for i, s := range p.NTP {
		if !IsNTPServer(s) {
			return invalid(fmt.Sprintf("ntp[%d]", i), s, "a host name or IP address, optionally with :port")
		}
	}
	return nil
}

// IsNTPServer accepts what an NTP client can query: an IP address or a host name (any case, as
// DNS names are), optionally followed by :port; an IPv6 address with a port is in brackets.
func IsNTPServer(s string) bool {
	host := s
	if h, port, err := net.SplitHostPort(s); err == nil {
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			return false
		}
		host = h
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return !strings.Contains(host, "%") // a zone names a link of this machine, not a server's
	}
	return IsHostname(strings.ToLower(host))
}

func invalid(key, value, want string) *Error {
	return &Error{Key: key, Msg: fmt.Sprintf("invalid value %q (want %s)", value, want)}
}

// only reports whether s is non-empty and made of bytes ok accepts.
func only(s string, ok func(c byte) bool) bool {
	for i := range len(s) {
		if !ok(s[i]) {
			return false
		}
	}
	return s != ""
}

func lowerDigit(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func isName(s string) bool {
	return only(s, func(c byte) bool { return lowerDigit(c) || c == '-' })
}

// isModule: module names are file names under /lib/modules, mostly lowercase, but netfilter's
// targets are not (xt_MASQUERADE, xt_CT).
func isModule(s string) bool {
	return only(s, func(c byte) bool { return lowerDigit(c) || c >= 'A' && c <= 'Z' || c == '_' || c == '-' })
}

func isEnvName(s string) bool {
	return only(s, func(c byte) bool { return lowerDigit(c) || c >= 'A' && c <= 'Z' || c == '_' }) &&
		!(s[0] >= '0' && s[0] <= '9')
}

// isDebianPackage follows Debian policy 5.6.1: [a-z0-9][a-z0-9+.-]+.
func isDebianPackage(s string) bool {
	return len(s) >= 2 && lowerDigit(s[0]) &&
		only(s, func(c byte) bool { return lowerDigit(c) || c == '+' || c == '.' || c == '-' })
}

// IsHostname accepts RFC 1123 names in lowercase, as Kubernetes node names must be.
func IsHostname(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if len(l) > 63 || !isName(l) || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
	}
	return true
}

// isSysctl accepts net.ipv4.ip_forward and the slash form net/ipv4/ip_forward.
func isSysctl(s string) bool {
	parts := strings.Split(strings.ReplaceAll(s, "/", "."), ".")
	return len(parts) >= 2 && !slices.ContainsFunc(parts, func(p string) bool {
		return !only(p, func(c byte) bool { return lowerDigit(c) || c == '_' || c == '-' })
	})
}
