package nodeconfig

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"unicode/utf8"

	"ingot.dev/ingot/profiles"
)

func (c *Config) validate() *Error {
	if c.Hostname != "" && !profiles.IsHostname(c.Hostname) {
		return &Error{Key: "hostname", Msg: fmt.Sprintf("invalid value %q (want %s)", c.Hostname, profiles.HostnameSyntax)}
	}
	if c.Network != nil {
		if e := asError(c.Network.Validate()); e != nil {
			return e
		}
	}
	if e := asError(profiles.ValidateSysctls(c.Sysctls)); e != nil {
		return e
	}
	for i, s := range c.NTP {
		if !profiles.IsNTPServer(s) {
			return &Error{Key: fmt.Sprintf("ntp[%d]", i), Msg: fmt.Sprintf("invalid server %q (want a host name or IP address, optionally with :port)", s)}
		}
	}
	if d := c.Install.Disk; d != "" {
		name, ok := strings.CutPrefix(d, "/dev/")
		if !ok || name == "" || strings.ContainsAny(name, "/ \t") || name == "." || name == ".." {
			return &Error{Key: "install.disk", Msg: fmt.Sprintf("invalid disk %q (want a whole disk's device, as /dev/sda or /dev/nvme0n1)", d)}
		}
	}
	for _, check := range []func() *Error{c.Node.validate, c.Kubernetes.validate, c.API.validate} {
		if e := check(); e != nil {
			return e
		}
	}
	return nil
}

func alnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }

// Taint effects the kubelet accepts.
var taintEffects = []string{"NoSchedule", "PreferNoSchedule", "NoExecute"}

func (n *Node) validate() *Error {
	for _, k := range slices.Sorted(maps.Keys(n.Labels)) {
		key := keyOf("node.labels", k)
		if msg := checkLabelKey(k); msg != "" {
			return &Error{Key: key, Msg: fmt.Sprintf("invalid label key %q: %s", k, msg)}
		}
		if v := n.Labels[k]; checkLabelValue(v) != "" {
			return &Error{Key: key, Msg: fmt.Sprintf("invalid label value %q: %s", v, checkLabelValue(v))}
		}
	}
	seen := map[string]int{}
	for i, t := range n.Taints {
		key := fmt.Sprintf("node.taints[%d]", i)
		kv, effect, ok := strings.Cut(t, ":")
		if !ok {
			return &Error{Key: key, Msg: fmt.Sprintf("invalid taint %q (want key=value:Effect or key:Effect)", t)}
		}
		k, v, _ := strings.Cut(kv, "=")
		if msg := checkLabelKey(k); msg != "" {
			return &Error{Key: key, Msg: fmt.Sprintf("invalid taint %q: key %q: %s", t, k, msg)}
		}
		if msg := checkLabelValue(v); msg != "" {
			return &Error{Key: key, Msg: fmt.Sprintf("invalid taint %q: value %q: %s", t, v, msg)}
		}
		if !slices.Contains(taintEffects, effect) {
			return &Error{Key: key, Msg: fmt.Sprintf("invalid taint %q: unknown effect %q (want %s)", t, effect, strings.Join(taintEffects, ", "))}
		}
		// The kubelet refuses two taints with the same key and effect.
		if j, dup := seen[k+":"+effect]; dup {
			return &Error{Key: key, Msg: fmt.Sprintf("taint %q repeats key %q and effect %s (also node.taints[%d])", t, k, effect, j)}
		}
		seen[k+":"+effect] = i
	}
	return nil
}

// checkLabelKey returns why k is not a Kubernetes label key ([prefix/]name: prefix a lowercase DNS
// subdomain of at most 253 characters, name as checkName), or "".
func checkLabelKey(k string) string {
	name := k
	if prefix, n, ok := strings.Cut(k, "/"); ok {
		if prefix == "" || len(prefix) > 253 || !profiles.IsHostname(prefix) {
			return "the prefix before '/' must be a lowercase DNS subdomain"
		}
		name = n
	}
	if name == "" {
		return "the name is empty"
	}
	return checkName(name)
}

// checkLabelValue returns why v is not a Kubernetes label value (empty, or as checkName), or "".
func checkLabelValue(v string) string {
	if v == "" {
		return ""
	}
	return checkName(v)
}

// checkName checks a label name or value: at most 63 characters of letters, digits, '-', '_' and
// '.', beginning and ending with a letter or digit.
func checkName(s string) string {
	if len(s) > 63 {
		return fmt.Sprintf("%d characters, at most 63 allowed", len(s))
	}
	for i := range len(s) {
		c := s[i]
		if !(alnum(c) || c == '-' || c == '_' || c == '.') {
			return "want letters, digits, '-', '_' and '.' only"
		}
	}
	if !alnum(s[0]) || !alnum(s[len(s)-1]) {
		return "must begin and end with a letter or digit"
	}
	return ""
}

func (k *Kubernetes) validate() *Error {
	if k.APIServer != "" {
		if msg := checkHTTPS(k.APIServer); msg != "" {
			return &Error{Key: "kubernetes.api_server", Msg: fmt.Sprintf("invalid URL %q: %s", k.APIServer, msg)}
		}
	}
	if k.CA != "" {
		if msg := checkCerts(k.CA); msg != "" {
			return &Error{Key: "kubernetes.ca", Msg: msg}
		}
	}
	if k.BootstrapToken != "" && k.Kubeconfig != "" {
		return &Error{Key: "kubernetes.kubeconfig", Msg: "set either bootstrap_token or kubeconfig, not both"}
	}
	if k.BootstrapToken != "" {
		// The value is a secret: the message says what is wrong without quoting it.
		if !isBootstrapToken(string(k.BootstrapToken)) {
			return &Error{Key: "kubernetes.bootstrap_token", Msg: "malformed bootstrap token (want 6 then 16 lowercase letters or digits joined by '.', like abcdef.0123456789abcdef)"}
		}
		// A token alone does not say where to join, and sending it to a server whose certificate
		// nobody checked would hand it to whoever answers.
		if k.APIServer == "" {
			return &Error{Key: "kubernetes.api_server", Msg: "required with bootstrap_token"}
		}
		if k.CA == "" {
			return &Error{Key: "kubernetes.ca", Msg: "required with bootstrap_token"}
		}
	}
	if k.Kubeconfig != "" && strings.ContainsRune(string(k.Kubeconfig), 0) {
		return &Error{Key: "kubernetes.kubeconfig", Msg: "holds a NUL byte (want the text of a kubeconfig file)"}
	}
	for _, name := range slices.Sorted(maps.Keys(k.StaticPods)) {
		key := keyOf("kubernetes.static_pods", name)
		if msg := checkManifestName(name); msg != "" {
			return &Error{Key: key, Msg: fmt.Sprintf("file name %q: %s", name, msg)}
		}
		text := k.StaticPods[name]
		if strings.TrimSpace(text) == "" || strings.ContainsRune(text, 0) || !utf8.ValidString(text) {
			return &Error{Key: key, Msg: "want the text of a pod manifest (YAML or JSON): it is empty, or holds a NUL byte or invalid UTF-8"}
		}
	}
	return nil
}

// checkManifestName returns why name cannot be a static pod manifest's file name in the
// kubelet's staticPodPath, or "". The kubelet reads every file there that does not start with a
// dot; a name is one plain path element so that no manifest lands outside the directory.
func checkManifestName(name string) string {
	base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(name, ".yaml"), ".yml"), ".json")
	switch {
	case base == name:
		return "want a name ending in .yaml, .yml or .json"
	case base == "" || len(name) > 253:
		return "want 1 to 253 characters before the extension"
	}
	for _, r := range base {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return "want lowercase letters, digits, '-', '_' and '.' only"
		}
	}
	if base[0] == '.' {
		return "must not start with '.' (the kubelet skips hidden files)"
	}
	return ""
}

// checkHTTPS returns why u is not an absolute https URL with a host and no credentials, or "".
func checkHTTPS(u string) string {
	p, err := url.Parse(u)
	switch {
	case err != nil:
		return "not a URL"
	case p.Scheme != "https":
		return "want an https:// URL"
	case p.Host == "" || p.Hostname() == "":
		return "no host"
	case p.User != nil:
		return "credentials do not belong in the URL"
	case p.RawQuery != "" || p.Fragment != "":
		return "want no query or fragment"
	}
	return ""
}

// checkCerts returns why s is not PEM text holding one or more X.509 certificates and nothing
// else, or "".
func checkCerts(s string) string {
	_, msg := parseCerts(s)
	return msg
}

func parseCerts(s string) ([]*x509.Certificate, string) {
	var certs []*x509.Certificate
	rest := []byte(s)
	for n := 1; ; n++ {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Sprintf("PEM block %d is a %s, want only CERTIFICATE blocks", n, b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Sprintf("PEM block %d is not an X.509 certificate: %v", n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, "not PEM: want one or more -----BEGIN CERTIFICATE----- blocks"
	}
	if strings.TrimSpace(string(rest)) != "" {
		return nil, fmt.Sprintf("text after certificate %d is not PEM", len(certs))
	}
	return certs, ""
}

func isBootstrapToken(t string) bool {
	id, secret, ok := strings.Cut(t, ".")
	lowerDigits := func(s string) bool {
		for i := range len(s) {
			if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
				return false
			}
		}
		return true
	}
	return ok && len(id) == 6 && len(secret) == 16 && lowerDigits(id) && lowerDigits(secret)
}

func (a *API) validate() *Error {
	if a.Cert != "" {
		if msg := checkCerts(a.Cert); msg != "" {
			return &Error{Key: "api.cert", Msg: msg}
		}
	}
	if a.ClientCA != "" {
		if msg := checkCerts(a.ClientCA); msg != "" {
			return &Error{Key: "api.client_ca", Msg: msg}
		}
	}
	if a.Port < 0 || a.Port > 65535 {
		return &Error{Key: "api.port", Msg: fmt.Sprintf("invalid port %d (want 1-65535; 0 or none is 50000)", a.Port)}
	}
	switch {
	case a.Cert != "" && a.Key == "":
		return &Error{Key: "api.key", Msg: "required with api.cert"}
	case a.Key != "" && a.Cert == "":
		return &Error{Key: "api.cert", Msg: "required with api.key"}
	case a.Key != "":
		// tls's messages name the problem (no PEM, key does not match) without the key's bytes.
		if _, err := tls.X509KeyPair([]byte(a.Cert), []byte(a.Key)); err != nil {
			return &Error{Key: "api.key", Msg: strings.TrimPrefix(err.Error(), "tls: ")}
		}
	}
	switch {
	case a.Cert != "" && a.ClientCA == "":
		// Without it no client could be verified: an API nobody can call, or worse, one a
		// later change might open to anybody.
		return &Error{Key: "api.client_ca", Msg: "required with api.cert (the CA client certificates must chain to)"}
	case a.ClientCA != "" && a.Cert == "":
		return &Error{Key: "api.cert", Msg: "required with api.client_ca"}
	}
	return nil
}
