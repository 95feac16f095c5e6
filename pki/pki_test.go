package pki

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/init/api/apiv1"
	"ingot.dev/ingot/profiles/nodeconfig"
)

func mustPair(t *testing.T, dir, sub, name string) tls.Certificate {
	t.Helper()
	c, err := tls.LoadX509KeyPair(filepath.Join(dir, sub, name+".crt"), filepath.Join(dir, sub, name+".key"))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pool(t *testing.T, dir string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, FileCA))
	if err != nil {
		t.Fatal(err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		t.Fatal("ca.crt holds no certificate")
	}
	return p
}

// handshake runs a TLS handshake between a server as the node API would configure it (its node
// certificate, client certificates required and verified against dir's CA) and a client.
func handshake(t *testing.T, dir string, server tls.Certificate, client *tls.Certificate, clientRoots *x509.CertPool) (*x509.Certificate, error) {
	t.Helper()
	// Loopback TCP, not net.Pipe: a side's last flight (an alert, a session ticket) must not
	// block on a peer that has stopped reading.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	b, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	srv := tls.Server(a, &tls.Config{Certificates: []tls.Certificate{server}, ClientCAs: pool(t, dir),
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13})
	cfg := &tls.Config{RootCAs: clientRoots, ServerName: "10.0.2.15", MinVersion: tls.VersionTLS13}
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	cl := tls.Client(b, cfg)
	// A side that fails closes both ends, so the other does not wait for a flight that never comes.
	errc := make(chan error, 2)
	for _, h := range []func() error{cl.Handshake, srv.Handshake} {
		go func() {
			err := h()
			if err != nil {
				a.Close()
				b.Close()
			}
			errc <- err
		}()
	}
	var first error
	for range 2 {
		if err := <-errc; err != nil && first == nil {
			first = err
		}
	}
	if first != nil {
		return nil, first
	}
	peers := srv.ConnectionState().PeerCertificates
	if len(peers) == 0 {
		return nil, nil
	}
	return peers[0], nil
}

func TestPKI(t *testing.T) {
	now := time.Now()
	dir := filepath.Join(t.TempDir(), "pki")
	if err := Node(dir, "node-a", []net.IP{net.IPv4(10, 0, 2, 15)}, nil, now); err == nil || !strings.Contains(err.Error(), "holds no CA: run ingot pki init") {
		t.Fatalf("node before init: %v", err)
	}
	if err := Init(dir, now); err != nil {
		t.Fatal(err)
	}
	if err := Init(dir, now); err == nil || !strings.Contains(err.Error(), "already holds a CA") {
		t.Fatalf("second init: %v; the CA must not be replaced", err)
	}
	if err := Node(dir, "node-a", []net.IP{net.IPv4(10, 0, 2, 15)}, []string{"node-a.example"}, now); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, role string }{{"alice", RoleAdmin}, {"bob", RoleReader}} {
		if err := Client(dir, c.name, c.role, now); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{FileCAKey, "nodes/node-a.key", "clients/alice.key"} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, st.Mode().Perm())
		}
	}

	// Another CA's client, as an attacker or a mix-up would present it.
	other := filepath.Join(t.TempDir(), "other")
	if err := Init(other, now); err != nil {
		t.Fatal(err)
	}
	if err := Client(other, "mallory", RoleAdmin, now); err != nil {
		t.Fatal(err)
	}

	server := mustPair(t, dir, DirNodes, "node-a")
	for _, c := range []struct {
		client   string
		from     string
		wantRole string
	}{{"alice", dir, RoleAdmin}, {"bob", dir, RoleReader}, {"mallory", other, ""}} {
		cert := mustPair(t, c.from, DirClients, c.client)
		peer, err := handshake(t, dir, server, &cert, pool(t, dir))
		if c.wantRole == "" {
			if err == nil {
				t.Errorf("%s, from another CA, was accepted", c.client)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", c.client, err)
		}
		if role, err := apiv1.RoleOf(peer); err != nil || role != c.wantRole {
			t.Errorf("%s: role %q, %v; want %s", c.client, role, err, c.wantRole)
		}
	}
	if _, err := handshake(t, dir, server, nil, pool(t, dir)); err == nil {
		t.Error("a client without a certificate was accepted")
	}
	// A client trusting another CA does not accept the node.
	alice := mustPair(t, dir, DirClients, "alice")
	if _, err := handshake(t, dir, server, &alice, pool(t, other)); err == nil {
		t.Error("the node's certificate verified against another CA")
	}
}

func TestRefuses(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	if err := Init(dir, now); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{Node(dir, "../etc", []net.IP{net.IPv4(10, 0, 0, 1)}, nil, now), "node name"},
		{Node(dir, "Node", []net.IP{net.IPv4(10, 0, 0, 1)}, nil, now), "node name"},
		{Node(dir, "n1", nil, nil, now), "at least one --ip or --dns"},
		{Client(dir, "a/b", RoleAdmin, now), "client name"},
		{Client(dir, "carol", "root", now), `role "root": want admin or reader`},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("error %v; want one saying %q", c.err, c.want)
		}
	}
	if entries, _ := os.ReadDir(filepath.Join(dir, DirClients)); len(entries) != 0 {
		t.Errorf("refused requests left files: %v", entries)
	}
	for _, orgs := range [][]string{nil, {"admin", "reader"}, {"root"}} {
		c := &x509.Certificate{}
		c.Subject.Organization = orgs
		if _, err := apiv1.RoleOf(c); err == nil {
			t.Errorf("Role of a certificate with Organization %q: no error", orgs)
		}
	}
}

func TestAPITable(t *testing.T) {
	now := time.Now()
	dir := t.TempDir()
	if err := Init(dir, now); err != nil {
		t.Fatal(err)
	}
	if _, err := APITable(dir, "n1", 0); err == nil || !strings.Contains(err.Error(), "ingot pki node n1 makes") {
		t.Fatalf("table of a node without a certificate: %v", err)
	}
	if err := Node(dir, "n1", []net.IP{net.IPv4(10, 0, 2, 15)}, nil, now); err != nil {
		t.Fatal(err)
	}
	b, err := APITable(dir, "n1", 50001)
	if err != nil {
		t.Fatal(err)
	}
	c, err := nodeconfig.Parse("node.toml", b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	ca, _ := os.ReadFile(filepath.Join(dir, FileCA))
	if !c.API.Enabled() || c.API.Port != 50001 || c.API.ClientCA != string(ca) {
		t.Errorf("parsed [api]: port %d, client CA %q", c.API.Port, c.API.ClientCA)
	}
}
