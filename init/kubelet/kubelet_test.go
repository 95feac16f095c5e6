package kubelet

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/profiles"
	"ingot.dev/ingot/profiles/nodeconfig"
)

const testCA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

func defaultKubelet() profiles.Kubelet {
	return profiles.Kubelet{Enabled: true, ClusterDomain: profiles.DefaultClusterDomain, MaxPods: profiles.DefaultMaxPods}
}

func file(t *testing.T, s *Setup, path string) File {
	t.Helper()
	for _, f := range s.Files {
		if f.Path == path {
			return f
		}
	}
	t.Fatalf("no file %s in %v", path, s.Files)
	return File{}
}

func config(t *testing.T, s *Setup) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(file(t, s, ConfigPath).Data, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestPlanBootstrapToken: a token join writes a bootstrap kubeconfig (0600) naming the API server,
// the CA and the token; the kubelet is told to bootstrap into its own kubeconfig on /var; labels
// and taints reach the command line and the configuration.
func TestPlanBootstrapToken(t *testing.T) {
	nc := &nodeconfig.Config{
		Node: nodeconfig.Node{Labels: map[string]string{"zone": "a", "role": "edge"}, Taints: []string{"dedicated=db:NoSchedule", "gpu:NoExecute"}},
		Kubernetes: nodeconfig.Kubernetes{APIServer: "https://10.0.2.2:6443", CA: testCA,
			BootstrapToken: "abcdef.0123456789abcdef"},
	}
	s, err := Plan(defaultKubelet(), "worker-1", "10.0.2.15", nc)
	if err != nil {
		t.Fatal(err)
	}
	if s.Mode != Bootstrap {
		t.Fatalf("mode %q, want %q", s.Mode, Bootstrap)
	}
	boot := file(t, s, BootstrapPath)
	if boot.Mode != 0o600 {
		t.Errorf("bootstrap kubeconfig mode %v, want 0600 (it holds the token)", boot.Mode)
	}
	var kc struct {
		Clusters []struct {
			Cluster struct {
				Server string `json:"server"`
				CA     string `json:"certificate-authority-data"`
			} `json:"cluster"`
		} `json:"clusters"`
		Users []struct {
			User struct {
				Token string `json:"token"`
			} `json:"user"`
		} `json:"users"`
		Current string `json:"current-context"`
	}
	if err := json.Unmarshal(boot.Data, &kc); err != nil {
		t.Fatal(err)
	}
	ca, _ := base64.StdEncoding.DecodeString(kc.Clusters[0].Cluster.CA)
	if kc.Clusters[0].Cluster.Server != "https://10.0.2.2:6443" || string(ca) != testCA || kc.Users[0].User.Token != "abcdef.0123456789abcdef" || kc.Current == "" {
		t.Errorf("bootstrap kubeconfig:\n%s", boot.Data)
	}
	for _, want := range []string{"--bootstrap-kubeconfig=" + BootstrapPath, "--kubeconfig=" + KubeconfigPath,
		"--hostname-override=worker-1", "--node-ip=10.0.2.15", "--node-labels=role=edge,zone=a", "--config=" + ConfigPath, "--cert-dir=" + CertDir} {
		if !slices.Contains(s.Args, want) {
			t.Errorf("args %q lack %q", s.Args, want)
		}
	}
	c := config(t, s)
	if c["containerRuntimeEndpoint"] != "unix:///run/ingot/ingot.sock" || c["cgroupDriver"] != "cgroupfs" || c["staticPodPath"] != StaticPodPath ||
		c["volumePluginDir"] != "/var/lib/kubelet/volumeplugins" {
		t.Errorf("runtime settings: %v", c)
	}
	auth := c["authentication"].(map[string]any)
	if auth["x509"].(map[string]any)["clientCAFile"] != ClientCAPath || auth["webhook"].(map[string]any)["enabled"] != true || auth["anonymous"].(map[string]any)["enabled"] != false {
		t.Errorf("authentication %v: want the cluster CA for clients, webhook on, anonymous off", auth)
	}
	if c["authorization"].(map[string]any)["mode"] != "Webhook" {
		t.Errorf("authorization %v", c["authorization"])
	}
	taints, _ := json.Marshal(c["registerWithTaints"])
	if string(taints) != `[{"effect":"NoSchedule","key":"dedicated","value":"db"},{"effect":"NoExecute","key":"gpu"}]` {
		t.Errorf("registerWithTaints %s", taints)
	}
	if string(file(t, s, ClientCAPath).Data) != testCA {
		t.Error("the client CA file is not the cluster CA")
	}
}

// TestPlanKubeconfigAndStandalone: a given kubeconfig is written as is (0600) and used; with no
// join settings the kubelet runs standalone, serving only loopback with no webhook to ask.
func TestPlanKubeconfigAndStandalone(t *testing.T) {
	s, err := Plan(defaultKubelet(), "n", "", &nodeconfig.Config{Kubernetes: nodeconfig.Kubernetes{Kubeconfig: "apiVersion: v1\nkind: Config\n"}})
	if err != nil {
		t.Fatal(err)
	}
	if f := file(t, s, KubeconfigPath); s.Mode != Kubeconfig || f.Mode != 0o600 || string(f.Data) != "apiVersion: v1\nkind: Config\n" {
		t.Errorf("kubeconfig join: mode %q, file %v", s.Mode, f)
	}
	if slices.ContainsFunc(s.Args, func(a string) bool { return strings.HasPrefix(a, "--bootstrap-kubeconfig") }) {
		t.Errorf("a kubeconfig join has a bootstrap kubeconfig: %q", s.Args)
	}

	s, err = Plan(defaultKubelet(), "n", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	c := config(t, s)
	if s.Mode != Standalone || c["address"] != "127.0.0.1" || c["authorization"].(map[string]any)["mode"] != "AlwaysAllow" {
		t.Errorf("standalone: mode %q, config %v", s.Mode, c)
	}
	if slices.ContainsFunc(s.Args, func(a string) bool { return strings.Contains(a, "kubeconfig") }) {
		t.Errorf("standalone args name a kubeconfig: %q", s.Args)
	}
	if _, err := Plan(defaultKubelet(), "n", "", &nodeconfig.Config{Kubernetes: nodeconfig.Kubernetes{BootstrapToken: "abcdef.0123456789abcdef"}}); err == nil {
		t.Error("a token without api_server and ca was accepted")
	}
}

// TestWriteKeepsWhatTheKubeletOwns: files are written with their modes, and a Keep file that
// exists is left alone.
func TestWriteKeepsWhatTheKubeletOwns(t *testing.T) {
	root := t.TempDir()
	s := &Setup{Files: []File{{Path: BootstrapPath, Data: []byte("new"), Mode: 0o600}, {Path: KubeconfigPath, Data: []byte("new"), Mode: 0o600, Keep: true}}}
	if err := os.MkdirAll(filepath.Join(root, Dir), 0o700); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, KubeconfigPath), []byte("rotated"), 0o600)
	if err := s.Write(root); err != nil {
		t.Fatal(err)
	}
	if data, _ := os.ReadFile(filepath.Join(root, KubeconfigPath)); string(data) != "rotated" {
		t.Errorf("a kept file was overwritten: %q", data)
	}
	st, err := os.Stat(filepath.Join(root, BootstrapPath))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("bootstrap kubeconfig: %v %v", st, err)
	}
	for _, d := range []string{StaticPodPath, CertDir} {
		if _, err := os.Stat(filepath.Join(root, d)); err != nil {
			t.Errorf("%s not made: %v", d, err)
		}
	}
}

// TestProbe: each thing a join depends on, when wrong, gives its own line naming it.
func TestProbe(t *testing.T) {
	const token = "abcdef.0123456789abcdef"
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Authorization") {
		case "Bearer " + token:
			w.Write([]byte(`{"kind":"CertificateSigningRequestList"}`))
		case "Bearer nobind.0123456789abcdef":
			w.WriteHeader(http.StatusForbidden)
		default:
			w.WriteHeader(http.StatusUnauthorized)
		}
	}))
	defer api.Close()
	ca := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}))
	// httptest's servers all share one certificate: another CA has to be made.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other-ca"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	otherCA := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := "https://" + l.Addr().String()
	l.Close()
	// A forward with nothing behind it: it accepts the connection and ends it at once (a FIN, as
	// QEMU's guestfwd sends when its relay exits; closing with the hello unread would reset it).
	hangup, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hangup.Close()
	go func() {
		for {
			c, err := hangup.Accept()
			if err != nil {
				return
			}
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
	closed := "https://" + hangup.Addr().String()
	// The same, ended with the hello unread: a reset, not a FIN.
	reset, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer reset.Close()
	go func() {
		for {
			c, err := reset.Accept()
			if err != nil {
				return
			}
			time.Sleep(50 * time.Millisecond) // the hello has arrived
			c.Close()
		}
	}()
	resetURL := "https://" + reset.Addr().String()
	// Something other than an API server: it answers in plain text.
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	go func() {
		for {
			c, err := plain.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n")
			c.Close()
		}
	}()
	notTLS := "https://" + plain.Addr().String()

	ctx := context.Background()
	for _, tc := range []struct {
		name, server, ca, token, want string
		ok                            bool
	}{
		{"all good", api.URL, ca, token, "reachable; its certificate and the bootstrap token are accepted", true},
		{"wrong CA", api.URL, otherCA, token, "presents a certificate not signed by the node config's CA (check [kubernetes] ca)", false},
		{"expired token", api.URL, ca, "zzzzzz.0123456789abcdef", "refused the bootstrap token (expired, deleted or mistyped", false},
		{"token without RBAC", api.URL, ca, "nobind.0123456789abcdef", "does not let it request certificates", false},
		{"unreachable", dead, ca, token, "cannot reach the API server " + dead + ": connect: connection refused", false},
		{"forward to nothing", closed, ca, token, "cannot reach the API server " + closed + ": the connection was closed before TLS was set up", false},
		{"forward to nothing, reset", resetURL, ca, token, "cannot reach the API server " + resetURL + ": the connection was closed before TLS was set up", false},
		{"not TLS", notTLS, ca, token, "API server " + notTLS + " does not answer with TLS: something else serves that address", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Probe(ctx, &Setup{Mode: Bootstrap, APIServer: tc.server, CA: tc.ca, Token: nodeconfig.Secret(tc.token)}, 5*time.Second)
			if c.OK != tc.ok || !strings.Contains(c.Msg, tc.want) {
				t.Fatalf("Probe = %+v, want ok=%v and %q", c, tc.ok, tc.want)
			}
			if strings.Contains(c.Msg, tc.token) {
				t.Fatalf("the message quotes the token: %q", c.Msg)
			}
		})
	}
}

// TestNodeIP: the node's own IPv4 address wins over the pod bridge's, loopback and QEMU's
// site-local IPv6 one.
func TestNodeIP(t *testing.T) {
	p := func(s ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, x := range s {
			out = append(out, netip.MustParsePrefix(x))
		}
		return out
	}
	for _, tc := range []struct {
		ifaces []Iface
		want   string
	}{
		{[]Iface{{"lo", p("127.0.0.1/8", "::1/128")}, {"eth0", p("fec0::5054:ff:fe12:3456/64", "fe80::1/64", "10.0.2.15/24")}, {"cni0", p("10.88.0.1/16")}}, "10.0.2.15"},
		{[]Iface{{"cni0", p("10.88.0.1/16")}, {"eth1", p("192.168.1.5/24")}}, "192.168.1.5"},
		{[]Iface{{"eth0", p("fe80::1/64", "fec0::1/64", "2001:db8::5/64")}}, "2001:db8::5"},
		{[]Iface{{"lo", p("127.0.0.1/8")}}, ""},
	} {
		if got := NodeIP(tc.ifaces); got != tc.want {
			t.Errorf("NodeIP(%v) = %q, want %q", tc.ifaces, got, tc.want)
		}
	}
}

// TestPlanStaticPods: the node config's static pods become files in the staticPodPath, named as
// the node config names them, whatever the join mode.
func TestPlanStaticPods(t *testing.T) {
	nc, err := nodeconfig.Parse("n.toml", []byte("[kubernetes.static_pods]\n\"web.yaml\" = \"kind: Pod\\n\"\n\"b.json\" = '{\"kind\":\"Pod\"}'\n"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Plan(profiles.Kubelet{Enabled: true}, "n1", "", nc)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := s.Write(root); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"web.yaml": "kind: Pod\n", "b.json": `{"kind":"Pod"}`} {
		got, err := os.ReadFile(filepath.Join(root, StaticPodPath, name))
		if err != nil || string(got) != want {
			t.Errorf("%s: %q, %v; want %q", name, got, err, want)
		}
	}
}
