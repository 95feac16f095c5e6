// Package nodeconfig reads node.toml, the per-node configuration that one image's many nodes are
// each handed at boot (by QEMU fw_cfg, a config drive or a NoCloud cidata volume): a hostname, the
// node's network, extra sysctls, NTP servers, Kubernetes labels and taints, and the credentials the
// node joins its cluster and serves its API with.
//
// Parsing is as strict as profiles': an unknown or misspelt key is an error, and every error is one
// line naming the file, the line and the key, so a node can print it on its console and boot on.
// Secrets (the bootstrap token, the kubeconfig, the API key) are of type Secret, which never
// formats its value: a Config can be logged, and no error message quotes a secret.
//
// The package only describes a node; it never reads the host or a device (PID 1 finds the file).
package nodeconfig

import (
	"fmt"
	"io"
	"strings"

	"ingot.dev/ingot/internal/tomlpos"
	"ingot.dev/ingot/profiles"
)

// Config is the parsed and validated content of a node.toml. Every field is optional: a zero
// value leaves the image's (profile's) setting in place.
type Config struct {
	// Hostname is the node's name, an RFC 1123 hostname in lowercase (a Kubernetes node name). It
	// wins over DHCP and the profile.
	Hostname string `toml:"hostname"`
	// Network replaces the profile's network when the file has a [network] table; nil when it has
	// none (an empty [network] table is present and clears the profile's links). See NetworkFor.
	Network *profiles.Network `toml:"network"`
	// Sysctls are set after the profile's, and win over them.
	Sysctls map[string]string `toml:"sysctls"`
	// NTP lists time servers, "host" or "host:port" (port 123 by default); they win over DHCP
	// option 42 and the profile's.
	NTP []string `toml:"ntp"`
	// Node holds the Kubernetes node's labels and taints.
	Node Node `toml:"node"`
	// Kubernetes is how the node joins its cluster.
	Kubernetes Kubernetes `toml:"kubernetes"`
	// API is the node API's TLS identity.
	API API `toml:"api"`
	// Install is for a node booted from ingot.iso: the disk it installs the image onto.
	Install Install `toml:"install"`
}

// Install is the [install] table. It acts only on a node booted from an install medium with no
// state partition of its own (a live boot); ingot.install= on the kernel command line wins.
type Install struct {
	Disk string `toml:"disk"` // a whole disk's device, e.g. /dev/nvme0n1
}

// Node is the [node] table: what the kubelet registers the node with.
type Node struct {
	// Labels are Kubernetes labels: keys [prefix/]name, values up to 63 characters.
	Labels map[string]string `toml:"labels"`
	// Taints are "key=value:Effect" or "key:Effect", Effect one of NoSchedule, PreferNoSchedule
	// and NoExecute (the kubelet's --register-with-taints syntax).
	Taints []string `toml:"taints"`
}

// Kubernetes is the [kubernetes] table. A node joins either with a bootstrap token (and then needs
// api_server and ca) or with a ready kubeconfig, never both.
type Kubernetes struct {
	APIServer      string `toml:"api_server"`      // https URL of the API server
	CA             string `toml:"ca"`              // PEM: the cluster CA certificate(s)
	BootstrapToken Secret `toml:"bootstrap_token"` // [a-z0-9]{6}.[a-z0-9]{16}
	Kubeconfig     Secret `toml:"kubeconfig"`      // a kubeconfig file's text
	// StaticPods maps a manifest's file name (NAME.yaml, NAME.yml or NAME.json) to its text;
	// PID 1 writes them into the kubelet's staticPodPath at every boot, so the node config is
	// their one source (a manifest dropped there by hand lasts until the next boot).
	StaticPods map[string]string `toml:"static_pods"`
}

// API is the [api] table: the node API server's certificate and key, the CA its clients'
// certificates must chain to, and its port. Without a certificate the node serves no API.
type API struct {
	Cert     string `toml:"cert"`      // PEM certificate chain, leaf first
	Key      Secret `toml:"key"`       // PEM private key matching Cert
	ClientCA string `toml:"client_ca"` // PEM CA certificate(s) for client certificates
	Port     int    `toml:"port"`      // TCP port; 0 is 50000
}

// Enabled reports whether the node serves its API: it has a certificate (and then, by
// validation, a key and a client CA).
func (a API) Enabled() bool { return a.Cert != "" }

// Error is a problem with a node.toml, rendered "file:line: key: message".
type Error = tomlpos.Error

// Secret is a string that must not be shown: every fmt verb prints Redacted instead of its value.
// string(s) is the value itself, for the code that writes it (0600) where it is used.
type Secret string

// Redacted is what a set Secret prints as; an empty one prints as "".
const Redacted = "<redacted>"

// String returns Redacted, or "" for an empty secret (so a missing one is told from a set one).
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return Redacted
}

// Format implements fmt.Formatter so that %v, %+v, %#v, %q, %x and friends — directly or on a
// struct that holds the secret — print the redacted form.
func (s Secret) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		fmt.Fprintf(f, "%q", s.String())
	default:
		io.WriteString(f, s.String())
	}
}

// MaxSize bounds a node.toml: the node reads no more from any source, and the host tools refuse
// to write a larger one. A node config is settings and certificates, a few KiB.
const MaxSize = 1 << 20

// Parse decodes and validates a node.toml. file is used only in error messages. Errors are *Error.
func Parse(file string, data []byte) (*Config, error) {
	if len(data) > MaxSize {
		return nil, &Error{File: file, Msg: fmt.Sprintf("%d bytes, more than the %d a node config may have", len(data), MaxSize)}
	}
	c := &Config{}
	idx, err := tomlpos.Decode(file, data, c)
	if err != nil {
		return nil, err
	}
	if e := c.validate(); e != nil {
		e.File = file
		e.Line = idx.LineOf(e.Key)
		return nil, e
	}
	return c, nil
}

// Validate checks c's semantics. The error is an *Error whose Key names the offending value; it
// has no File or Line.
func (c *Config) Validate() error {
	if e := c.validate(); e != nil {
		return e
	}
	return nil
}

// NetworkFor returns the network a node with this config runs: the profile's when node.toml has
// no [network] table, else node.toml's links, bonds, bridges, VLANs and routes in place of all of
// the profile's (a node's links are described together: half from each would not add up), and its
// CNI conflist when it sets one.
func (c *Config) NetworkFor(profile profiles.Network) profiles.Network {
	if c.Network == nil {
		return profile
	}
	n := *c.Network
	if n.CNI == "" {
		n.CNI = profile.CNI
	}
	return n
}

// asError turns a validation error from profiles (always an *Error) into one.
func asError(err error) *Error {
	if err == nil {
		return nil
	}
	if e, ok := err.(*Error); ok {
		return e
	}
	return &Error{Msg: err.Error()}
}

// keyOf renders one key of a free-form table (labels."app.kubernetes.io/name").
func keyOf(table, k string) string { return table + "." + tomlpos.QuoteKey(k) }

// oneLine reports whether s has no line break or NUL.
func oneLine(s string) bool { return !strings.ContainsAny(s, "\n\r\x00") }
