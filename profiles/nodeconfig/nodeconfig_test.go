package nodeconfig

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/profiles"
)

// testCert returns a self-signed certificate and its private key, both PEM.
func testCert(t *testing.T, name string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Unix(0, 0), NotAfter: time.Unix(4e9, 0),
		IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}

const (
	testToken      = "q7x2lm.9fzk3w8p1r6t0yvb"
	testKubeconfig = "apiVersion: v1\nkind: Config\nusers: [{name: n, user: {token: kubeconfig-secret-8c1f}}]\n"
)

// full returns a node.toml setting every table, and the PEM texts it holds.
func full(t *testing.T) (doc, ca, cert, key string) {
	ca, _ = testCert(t, "cluster-ca")
	cert, key = testCert(t, "node-api")
	doc = `hostname = "worker-1"
ntp = ["pool.ntp.org", "10.0.2.2:1123", "[fd00::1]:123"]

[sysctls]
"vm.max_map_count" = "262144"

[[network.interface]]
name = "eth0"
addresses = ["10.0.2.21/24"]
gateway = "10.0.2.2"

[node]
labels = { "topology.kubernetes.io/zone" = "rack-1", role = "worker" }
taints = ["dedicated=gpu:NoSchedule", "maintenance:NoExecute"]

[kubernetes]
api_server = "https://10.0.2.2:6443"
bootstrap_token = "` + testToken + `"
ca = """
` + ca + `"""

[api]
cert = """
` + cert + `"""
key = """
` + key + `"""
client_ca = """
` + ca + `"""
`
	return doc, ca, cert, key
}

func TestParseFull(t *testing.T) {
	doc, ca, cert, key := full(t)
	c, err := Parse("node.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != "worker-1" {
		t.Errorf("hostname = %q", c.Hostname)
	}
	if want := []string{"pool.ntp.org", "10.0.2.2:1123", "[fd00::1]:123"}; !slices.Equal(c.NTP, want) {
		t.Errorf("ntp = %q, want %q", c.NTP, want)
	}
	if c.Sysctls["vm.max_map_count"] != "262144" {
		t.Errorf("sysctls = %v", c.Sysctls)
	}
	if c.Network == nil || len(c.Network.Interfaces) != 1 || c.Network.Interfaces[0].Addresses[0] != "10.0.2.21/24" || c.Network.Interfaces[0].Gateway != "10.0.2.2" {
		t.Errorf("network = %+v", c.Network)
	}
	if c.Node.Labels["topology.kubernetes.io/zone"] != "rack-1" || c.Node.Labels["role"] != "worker" {
		t.Errorf("labels = %v", c.Node.Labels)
	}
	if want := []string{"dedicated=gpu:NoSchedule", "maintenance:NoExecute"}; !slices.Equal(c.Node.Taints, want) {
		t.Errorf("taints = %q", c.Node.Taints)
	}
	k := c.Kubernetes
	if k.APIServer != "https://10.0.2.2:6443" || k.CA != ca || string(k.BootstrapToken) != testToken || k.Kubeconfig != "" {
		t.Errorf("kubernetes = %+v (token %q)", k, string(k.BootstrapToken))
	}
	if c.API.Cert != cert || string(c.API.Key) != key || c.API.ClientCA != ca {
		t.Errorf("api = %+v", c.API)
	}
}

// TestParseErrors: every rejected input gives one line naming file, line and key, as `ingot
// node-config validate` prints it.
func TestParseErrors(t *testing.T) {
	ca, _ := testCert(t, "ca")
	cert, key := testCert(t, "api")
	_, otherKey := testCert(t, "other")
	ml := func(s string) string { return `"""` + "\n" + s + `"""` }
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"unknown key", "hostname = \"a\"\n\n[kubernetes]\napi_servr = \"https://x\"\n",
			`n.toml:4: kubernetes: unknown key "api_servr"`},
		{"unknown top-level table", "[kubelet]\nx = 1\n",
			`n.toml:1: unknown key "kubelet"`},
		{"key in the wrong case", "\nHostname = \"a\"\n",
			`n.toml:2: unknown key "Hostname" (keys are case-sensitive: did you mean "hostname"?)`},
		{"wrong type", "ntp = \"pool.ntp.org\"\n",
			`n.toml:1: ntp: wrong type: want array of strings, got string`},
		{"wrong type in a table", "[node]\ntaints = [\"a:NoSchedule\", 3]\n",
			`n.toml:2: node.taints[1]: wrong type: want string, got integer`},
		{"bad CA PEM", "[kubernetes]\nca = \"MIIB not pem\"\n",
			`n.toml:2: kubernetes.ca: not PEM: want one or more -----BEGIN CERTIFICATE----- blocks`},
		{"CA PEM that is not a certificate", "[kubernetes]\nca = " + ml("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n") + "\n",
			`n.toml:2: kubernetes.ca: PEM block 1 is not an X.509 certificate: x509: malformed certificate`},
		{"CA holding a key", "[kubernetes]\nca = " + ml(ca+otherKey) + "\n",
			`n.toml:2: kubernetes.ca: PEM block 2 is a PRIVATE KEY, want only CERTIFICATE blocks`},
		{"non-https URL", "[kubernetes]\n\napi_server = \"http://10.0.2.2:6443\"\n",
			`n.toml:3: kubernetes.api_server: invalid URL "http://10.0.2.2:6443": want an https:// URL`},
		{"URL without a host", "[kubernetes]\napi_server = \"https:///x\"\n",
			`n.toml:2: kubernetes.api_server: invalid URL "https:///x": no host`},
		{"hostname with capitals", "hostname = \"Worker-1\"\n",
			`n.toml:1: hostname: invalid value "Worker-1" (want ` + profiles.HostnameSyntax + `)`},
		{"bad taint effect", "[node]\ntaints = [\n  \"a=b:NoSchedule\",\n  \"dedicated=gpu:NoShedule\",\n]\n",
			`n.toml:4: node.taints[1]: invalid taint "dedicated=gpu:NoShedule": unknown effect "NoShedule" (want NoSchedule, PreferNoSchedule, NoExecute)`},
		{"taint without effect", "[node]\ntaints = [\"dedicated=gpu\"]\n",
			`n.toml:2: node.taints[0]: invalid taint "dedicated=gpu" (want key=value:Effect or key:Effect)`},
		{"taint twice", "[node]\ntaints = [\"a=1:NoSchedule\", \"a=2:NoSchedule\"]\n",
			`n.toml:2: node.taints[1]: taint "a=2:NoSchedule" repeats key "a" and effect NoSchedule (also node.taints[0])`},
		{"bad label key", "[node.labels]\n\"example.com/\" = \"x\"\n",
			`n.toml:2: node.labels."example.com/": invalid label key "example.com/": the name is empty`},
		{"bad label value", "[node]\nlabels = { zone = \"-a\" }\n",
			`n.toml:2: node.labels.zone: invalid label value "-a": must begin and end with a letter or digit`},
		{"dotted label key", "[node.labels]\nexample.com = \"x\"\n",
			`n.toml:2: node.labels: key example.com is dotted, so TOML reads it as nested tables; quote it: "example.com" = "..."`},
		{"dotted label key in an inline table", "[node]\nlabels = { example.com = \"x\" }\n",
			`n.toml:2: node.labels: wrong type: a value in this table is a table, want string (a dotted key is read as nested tables: quote it, "a.b" = ...)`},
		{"token and kubeconfig", "[kubernetes]\napi_server = \"https://k\"\nbootstrap_token = \"" + testToken + "\"\n\nkubeconfig = \"apiVersion: v1\"\nca = " + ml(ca) + "\n",
			`n.toml:5: kubernetes.kubeconfig: set either bootstrap_token or kubeconfig, not both`},
		{"malformed bootstrap token", "[kubernetes]\nbootstrap_token = \"ABCDEF.0123456789abcdef\"\n",
			`n.toml:2: kubernetes.bootstrap_token: malformed bootstrap token (want 6 then 16 lowercase letters or digits joined by '.', like abcdef.0123456789abcdef)`},
		{"token without CA", "[kubernetes]\napi_server = \"https://k\"\nbootstrap_token = \"" + testToken + "\"\n",
			`n.toml:1: kubernetes.ca: required with bootstrap_token`},
		{"api key that does not match", "[api]\n\nkey = " + ml(otherKey) + "\ncert = " + ml(cert) + "\n",
			`n.toml:3: api.key: private key does not match public key`},
		{"api cert without key", "[api]\ncert = " + ml(cert) + "\n",
			`n.toml:1: api.key: required with api.cert`},
		{"api cert without client CA", "[api]\ncert = " + ml(cert) + "\nkey = " + ml(key) + "\n",
			`n.toml:1: api.client_ca: required with api.cert (the CA client certificates must chain to)`},
		{"install disk not a device", "[install]\ndisk = \"sda\"\n",
			`n.toml:2: install.disk: invalid disk "sda" (want a whole disk's device, as /dev/sda or /dev/nvme0n1)`},
		{"install disk a path", "[install]\ndisk = \"/dev/disk/by-id/x\"\n",
			`n.toml:2: install.disk: invalid disk "/dev/disk/by-id/x" (want a whole disk's device, as /dev/sda or /dev/nvme0n1)`},
		{"api port", "[api]\nport = 70000\n",
			`n.toml:2: api.port: invalid port 70000 (want 1-65535; 0 or none is 50000)`},
		{"ntp server", "ntp = [\"pool.ntp.org\", \"time:0\"]\n",
			`n.toml:1: ntp[1]: invalid server "time:0" (want a host name or IP address, optionally with :port)`},
		{"sysctl", "[sysctls]\n\"Net.IPv4\" = \"1\"\n",
			`n.toml:2: sysctls."Net.IPv4": invalid sysctl name (want dotted lowercase path like net.ipv4.ip_forward)`},
		{"static pod name with a slash", "[kubernetes.static_pods]\n\"../etc/x.yaml\" = \"kind: Pod\"\n",
			`n.toml:2: kubernetes.static_pods."../etc/x.yaml": file name "../etc/x.yaml": want lowercase letters, digits, '-', '_' and '.' only`},
		{"static pod name without extension", "[kubernetes.static_pods]\nweb = \"kind: Pod\"\n",
			`n.toml:2: kubernetes.static_pods.web: file name "web": want a name ending in .yaml, .yml or .json`},
		{"hidden static pod", "[kubernetes]\nstatic_pods = { \".web.yaml\" = \"kind: Pod\" }\n",
			`n.toml:2: kubernetes.static_pods.".web.yaml": file name ".web.yaml": must not start with '.' (the kubelet skips hidden files)`},
		{"empty static pod", "[kubernetes.static_pods]\n\"web.yaml\" = \"  \"\n",
			`n.toml:2: kubernetes.static_pods."web.yaml": want the text of a pod manifest (YAML or JSON): it is empty, or holds a NUL byte or invalid UTF-8`},
		{"network", "[[network.interface]]\nname = \"eth0\"\naddresses = [\"10.0.2.21\"]\n",
			`n.toml:3: network.interface[0].addresses[0]: invalid address "10.0.2.21" (want CIDR like 10.0.2.15/24)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("n.toml", []byte(tc.doc))
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", c)
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got %s\nwant %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Errorf("error is a %T, want *Error", err)
			}
		})
	}
}

// TestSecretsNeverPrinted: the bootstrap token, the kubeconfig and the API key appear in no
// formatting of a Config, nor in an error about them.
func TestSecretsNeverPrinted(t *testing.T) {
	doc, _, _, key := full(t)
	c, err := Parse("node.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	c2 := *c
	c2.Kubernetes.BootstrapToken = ""
	c2.Kubernetes.Kubeconfig = testKubeconfig
	keyBody := strings.Split(key, "\n")[1] // a line of the key's base64
	secrets := []string{testToken, "9fzk3w8p1r6t0yvb", "kubeconfig-secret-8c1f", keyBody}

	var shown []string
	for _, v := range []any{c, *c, &c2, c2, c.Kubernetes, c2.Kubernetes, c.API, c.Kubernetes.BootstrapToken, c.API.Key} {
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
			shown = append(shown, fmt.Sprintf(verb, v))
		}
	}
	shown = append(shown, c.Kubernetes.BootstrapToken.String(), c.API.Key.String())
	// Errors about a secret describe it without quoting it.
	for _, bad := range []string{
		"[kubernetes]\nbootstrap_token = \"" + strings.ToUpper(testToken) + "\"\n",
		"[kubernetes]\nbootstrap_token = \"" + testToken + "0\"\n",
		"[kubernetes]\nbootstrap_token = \"" + testToken + "\"\nkubeconfig = '''" + testKubeconfig + "'''\n",
		"[api]\nkey = '''" + key + "'''\n",
		"[api]\ncert = '''" + key + "'''\nkey = '''" + key + "'''\n",
		"[kubernetes]\nbootstrap_token = 7\n",
	} {
		_, err := Parse("n.toml", []byte(bad))
		if err == nil {
			t.Fatalf("accepted %q", bad)
		}
		shown = append(shown, err.Error(), fmt.Sprintf("%+v", err))
	}
	for _, s := range shown {
		for _, secret := range secrets {
			if strings.Contains(s, secret) || strings.Contains(s, fmt.Sprintf("%x", secret)) {
				t.Errorf("secret %q printed in %q", secret, s)
			}
		}
	}
	if got := fmt.Sprintf("%v", c.Kubernetes.BootstrapToken); got != Redacted {
		t.Errorf("token prints as %q, want %q", got, Redacted)
	}
	if got := fmt.Sprintf("%q", Secret("")); got != `""` {
		t.Errorf("an empty secret prints as %s, want \"\"", got)
	}
}

// TestNetworkFor: no [network] table keeps the profile's network; one replaces its links, even
// when empty, and keeps its CNI conflist unless it sets one.
func TestNetworkFor(t *testing.T) {
	profile := profiles.Network{
		Interfaces: []profiles.Interface{{Name: "eth0", DHCP: true}},
		CNI:        `{"cniVersion":"1.0.0","name":"p","plugins":[{"type":"loopback"}]}`,
	}
	for _, tc := range []struct {
		name, doc string
		want      profiles.Network
	}{
		{"absent", "hostname = \"a\"\n", profile},
		{"empty", "[network]\n", profiles.Network{CNI: profile.CNI}},
		{"static", "[[network.interface]]\nname = \"eth1\"\naddresses = [\"10.0.0.2/24\"]\n",
			profiles.Network{Interfaces: []profiles.Interface{{Name: "eth1", Addresses: []string{"10.0.0.2/24"}}}, CNI: profile.CNI}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("n.toml", []byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			got := c.NetworkFor(profile)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("NetworkFor = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestDocExample: the commented full example in docs/node-config.md parses, and sets every table.
func TestDocExample(t *testing.T) {
	md, err := os.ReadFile("../../docs/node-config.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(md), "```toml\n")
	block, _, ok2 := strings.Cut(block, "```\n")
	if !ok || !ok2 {
		t.Fatal("docs/node-config.md has no ```toml block")
	}
	c, err := Parse("docs/node-config.md", []byte(block))
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname == "" || len(c.NTP) == 0 || len(c.Sysctls) == 0 || c.Network == nil || len(c.Node.Labels) == 0 ||
		len(c.Node.Taints) == 0 || c.Kubernetes.CA == "" || c.Kubernetes.BootstrapToken == "" || c.API.Key == "" || c.API.ClientCA == "" {
		t.Errorf("the example leaves a table out: %+v", c)
	}
}

// A node.toml over MaxSize is refused before it is decoded: the node reads no more than that.
func TestParseTooLarge(t *testing.T) {
	data := []byte("hostname = \"n\"\n" + strings.Repeat("#", MaxSize))
	_, err := Parse("big.toml", data)
	if err == nil || !strings.Contains(err.Error(), "big.toml") || !strings.Contains(err.Error(), "more than the 1048576 a node config may have") {
		t.Fatalf("Parse of %d bytes: %v", len(data), err)
	}
}
