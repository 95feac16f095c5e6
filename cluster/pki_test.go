package cluster

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/profiles/nodeconfig"
)

var testNow = time.Date(2026, 12, 2, 16, 0, 0, 0, time.UTC)

func newTestPKI(t *testing.T) *PKI {
	t.Helper()
	p, err := NewPKI(testNow, net.IPv4(10, 96, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

// verify checks kp against roots for usage at time at.
func verify(kp KeyPair, roots *x509.CertPool, usage x509.ExtKeyUsage, at time.Time) error {
	_, err := kp.Cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}, CurrentTime: at})
	return err
}

func TestPKIChainsAndUsages(t *testing.T) {
	p := newTestPKI(t)
	cluster, etcd := pool(p.CA.Cert), pool(p.EtcdCA.Cert)
	server, client := x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth
	for _, c := range []struct {
		name  string
		kp    KeyPair
		roots *x509.CertPool
		usage x509.ExtKeyUsage
		ok    bool
	}{
		{"apiserver serves", p.APIServer, cluster, server, true},
		{"apiserver is no client", p.APIServer, cluster, client, false},
		{"admin is a client", p.Admin, cluster, client, true},
		{"admin serves nothing", p.Admin, cluster, server, false},
		{"kubelet client", p.KubeletClient, cluster, client, true},
		{"controller manager", p.ControllerManager, cluster, client, true},
		{"etcd serves", p.EtcdServer, etcd, server, true},
		{"etcd peer is a client", p.EtcdServer, etcd, client, true},
		{"etcd client", p.EtcdClient, etcd, client, true},
		// The two CAs do not vouch for each other's certificates: a node certificate from
		// the cluster CA must not open etcd.
		{"etcd client not under the cluster CA", p.EtcdClient, cluster, client, false},
		{"admin not under the etcd CA", p.Admin, etcd, client, false},
		{"etcd server not under the cluster CA", p.EtcdServer, cluster, server, false},
	} {
		err := verify(c.kp, c.roots, c.usage, testNow)
		if (err == nil) != c.ok {
			t.Errorf("%s: verify = %v, want ok=%v", c.name, err, c.ok)
		}
	}
	for name, kp := range map[string]KeyPair{"ca": p.CA, "etcd-ca": p.EtcdCA} {
		c := kp.Cert
		if !c.IsCA || !c.MaxPathLenZero || c.KeyUsage&x509.KeyUsageCertSign == 0 {
			t.Errorf("%s: IsCA=%v MaxPathLenZero=%v KeyUsage=%b, want a CA that signs leaves only", name, c.IsCA, c.MaxPathLenZero, c.KeyUsage)
		}
	}
	for name, kp := range map[string]KeyPair{"apiserver": p.APIServer, "admin": p.Admin, "etcd": p.EtcdServer} {
		if kp.Cert.IsCA || kp.Cert.KeyUsage&x509.KeyUsageCertSign != 0 {
			t.Errorf("%s: a leaf that can sign certificates", name)
		}
	}
}

func TestPKIServingNames(t *testing.T) {
	p := newTestPKI(t)
	for _, h := range []string{"127.0.0.1", "::1", "10.0.2.100", "10.96.0.1", "localhost", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"} {
		if err := p.APIServer.Cert.VerifyHostname(h); err != nil {
			t.Errorf("API server certificate: %v", err)
		}
	}
	// The guest's own address, or any other, is not the API server.
	for _, h := range []string{"10.0.2.15", "10.96.0.10", "example.com"} {
		if err := p.APIServer.Cert.VerifyHostname(h); err == nil {
			t.Errorf("API server certificate is valid for %s", h)
		}
	}
	if err := p.EtcdServer.Cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("etcd certificate: %v", err)
	}
	if err := p.EtcdServer.Cert.VerifyHostname("10.0.2.100"); err == nil {
		t.Error("etcd certificate is valid for 10.0.2.100: etcd must be reachable on the loopback only")
	}
}

func TestPKISubjects(t *testing.T) {
	p := newTestPKI(t)
	for _, c := range []struct {
		kp     KeyPair
		cn, og string
	}{
		{p.Admin, "kubernetes-admin", "system:masters"},
		{p.ControllerManager, "system:kube-controller-manager", ""},
		{p.KubeletClient, "kube-apiserver-kubelet-client", ""},
	} {
		s := c.kp.Cert.Subject
		if s.CommonName != c.cn || strings.Join(s.Organization, ",") != c.og {
			t.Errorf("subject CN=%q O=%q, want CN=%q O=%q", s.CommonName, s.Organization, c.cn, c.og)
		}
	}
}

func TestPKIExpiry(t *testing.T) {
	p := newTestPKI(t)
	if got, want := p.APIServer.Cert.NotAfter, testNow.Add(CertValidity); !got.Equal(want) {
		t.Errorf("API server certificate NotAfter = %v, want %v", got, want)
	}
	if got, want := p.CA.Cert.NotAfter, testNow.Add(CAValidity); !got.Equal(want) {
		t.Errorf("CA NotAfter = %v, want %v", got, want)
	}
	roots := pool(p.CA.Cert)
	// A guest whose clock is a minute behind still accepts the server …
	if err := verify(p.APIServer, roots, x509.ExtKeyUsageServerAuth, testNow.Add(-time.Minute)); err != nil {
		t.Errorf("a minute before issue: %v", err)
	}
	// … but not a year and a day later.
	err := verify(p.APIServer, roots, x509.ExtKeyUsageServerAuth, testNow.Add(366*24*time.Hour))
	if err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("a year and a day later: %v, want an expired certificate", err)
	}
}

func TestPKIWriteModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if err := newTestPKI(t).Write(dir); err != nil {
		t.Fatal(err)
	}
	want := map[string]os.FileMode{
		"ca.crt": 0o644, "ca.key": 0o600, "etcd-ca.crt": 0o644,
		"apiserver.crt": 0o644, "apiserver.key": 0o600, "admin.key": 0o600, "sa.key": 0o600, "sa.pub": 0o644,
	}
	for name, mode := range want {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Error(err)
			continue
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	// Nothing issues etcd certificates later: its CA key is not kept.
	if _, err := os.Stat(filepath.Join(dir, "etcd-ca.key")); !os.IsNotExist(err) {
		t.Errorf("etcd-ca.key: %v, want it not written", err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("pki directory: %v %v, want mode 0700", fi.Mode().Perm(), err)
	}
}

func TestToken(t *testing.T) {
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseToken(tok.String())
	if err != nil || back != tok {
		t.Fatalf("ParseToken(%q) = %v, %v", tok, back, err)
	}
	if tok.User() != "system:bootstrap:"+tok.ID {
		t.Errorf("User() = %q", tok.User())
	}
	if _, err := ParseToken("ABCDEF.0123456789abcdef"); err == nil {
		t.Error("ParseToken accepts upper case")
	}
	s := tok.secretObject(testNow)
	data := s["stringData"].(map[string]string)
	if s["metadata"].(map[string]any)["name"] != "bootstrap-token-"+tok.ID || s["type"] != "bootstrap.kubernetes.io/token" ||
		data["auth-extra-groups"] != BootstrapGroup || data["usage-bootstrap-authentication"] != "true" ||
		data["expiration"] != "2026-12-02T16:00:00Z" {
		t.Errorf("secret = %v", s)
	}
}

func TestJoinConfig(t *testing.T) {
	p := newTestPKI(t)
	tok := Token{ID: "abcdef", Secret: "0123456789abcdef"}
	raw, err := JoinConfig("https://10.0.2.2:41234", p.CA.CertPEM(), tok)
	if err != nil {
		t.Fatal(err)
	}
	c, err := nodeconfig.Parse("node.toml", raw)
	if err != nil {
		t.Fatal(err)
	}
	k := c.Kubernetes
	if k.APIServer != "https://10.0.2.2:41234" || string(k.BootstrapToken) != "abcdef.0123456789abcdef" || k.CA != string(p.CA.CertPEM()) {
		t.Errorf("joined with %q, token %q, ca %q", k.APIServer, string(k.BootstrapToken), k.CA)
	}
}
