package kubelet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/internal/certs"
)

// apiServer is a TLS server that answers GET /api/v1/nodes/NAME with node (a JSON Node) for
// clients presenting a certificate of its CA with CommonName system:node:NAME, or the bearer
// token "tok": as the Node authorizer lets a kubelet read its own Node.
type apiServer struct {
	srv      *httptest.Server
	caPEM    []byte
	client   certs.KeyPair
	node     string // the JSON answered; "" answers 404
	lastPath string
}

func newAPIServer(t *testing.T) *apiServer {
	t.Helper()
	now := time.Now()
	ca, err := certs.NewCA(now, "kubernetes", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	server, err := certs.Issue(now, ca, x509.Certificate{Subject: pkix.Name{CommonName: "kube-apiserver"}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	client, err := certs.Issue(now, ca, x509.Certificate{Subject: pkix.Name{CommonName: "system:node:worker-1", Organization: []string{"system:nodes"}},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a := &apiServer{caPEM: ca.CertPEM(), client: client}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	keyPEM, _ := server.KeyPEM()
	pair, err := tls.X509KeyPair(server.CertPEM(), keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.lastPath = r.URL.Path
		user := ""
		if len(r.TLS.PeerCertificates) > 0 {
			user = r.TLS.PeerCertificates[0].Subject.CommonName
		} else if r.Header.Get("Authorization") == "Bearer tok" {
			user = "system:node:worker-1"
		}
		switch {
		case user == "":
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
		case r.URL.Path != "/api/v1/nodes/"+strings.TrimPrefix(user, "system:node:"):
			http.Error(w, "forbidden", http.StatusForbidden)
		case a.node == "":
			http.Error(w, "not found", http.StatusNotFound)
		default:
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, a.node)
		}
	}))
	a.srv.TLS = &tls.Config{Certificates: []tls.Certificate{pair}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	a.srv.StartTLS()
	t.Cleanup(a.srv.Close)
	return a
}

func (a *apiServer) url() string {
	return strings.Replace(a.srv.URL, "127.0.0.1", "localhost", 1)
}

func node(bootID, ready, reason string) string {
	return fmt.Sprintf(`{"kind":"Node","metadata":{"name":"worker-1"},"status":{"nodeInfo":{"bootID":%q},
	"conditions":[{"type":"MemoryPressure","status":"False"},{"type":"Ready","status":%q,"reason":%q,"message":"msg"}]}}`, bootID, ready, reason)
}

// TestNodeReady: the health gate's reading of the kubelet's kubeconfig, in the shapes kubelets
// use (the one TLS bootstrapping writes, with file names, and one with inline data or a
// token), and its reading of the Node: Ready only from this boot.
func TestNodeReady(t *testing.T) {
	a := newAPIServer(t)
	dir := t.TempDir()
	keyPEM, _ := a.client.KeyPEM()
	// What the kubelet's TLS bootstrapping writes: YAML, its rotated certificate by file name
	// (cert and key in one file).
	certFile := filepath.Join(dir, "pki", "kubelet-client-current.pem")
	os.MkdirAll(filepath.Dir(certFile), 0o700)
	os.WriteFile(certFile, append(a.client.CertPEM(), keyPEM...), 0o600)
	boot := fmt.Sprintf(`apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: %s
    server: %s
  name: default-cluster
contexts:
- context:
    cluster: default-cluster
    namespace: default
    user: default-auth
  name: default-context
current-context: default-context
kind: Config
preferences: {}
users:
- name: default-auth
  user:
    client-certificate: pki/kubelet-client-current.pem
    client-key: %s
`, base64.StdEncoding.EncodeToString(a.caPEM), a.url(), certFile)
	b64 := base64.StdEncoding.EncodeToString
	inline := fmt.Sprintf(`{"apiVersion":"v1","kind":"Config","current-context":"c",
	"clusters":[{"name":"k","cluster":{"server":%q,"certificate-authority-data":%q}}],
	"contexts":[{"name":"c","context":{"cluster":"k","user":"u"}}],
	"users":[{"name":"u","user":{"client-certificate-data":%q,"client-key-data":%q}}]}`, a.url()+"/", b64(a.caPEM), b64(a.client.CertPEM()), b64(keyPEM))
	os.WriteFile(filepath.Join(dir, "ca.crt"), a.caPEM, 0o644)
	os.WriteFile(filepath.Join(dir, "token"), []byte("tok\n"), 0o600)
	token := fmt.Sprintf(`apiVersion: v1
kind: Config
current-context: c
clusters: [{name: k, cluster: {server: %q, certificate-authority: ca.crt}}]
contexts: [{name: c, context: {cluster: k, user: u}}]
users: [{name: u, user: {tokenFile: %s}}]
`, a.url(), filepath.Join(dir, "token"))
	write := func(name, s string) string {
		p := filepath.Join(dir, "kubeconfig-"+name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ctx := context.Background()
	for _, kc := range []struct{ name, text string }{{"bootstrapped", boot}, {"inline", inline}, {"token", token}} {
		path := write(kc.name, kc.text)
		for _, tc := range []struct {
			node, want string
			ok         bool
		}{
			{"", "not registered", false},
			{node("old-boot", "True", "KubeletReady"), `from boot "old-boot", this is "this-boot"`, false},
			{node("this-boot", "False", "KubeletNotReady"), "not Ready (False): KubeletNotReady: msg", false},
			{`{"status":{"nodeInfo":{"bootID":"this-boot"}}}`, "no Ready condition", false},
			{"<html>", "not a Node", false},
			{node("this-boot", "True", "KubeletReady"), "worker-1 is Ready", true},
		} {
			a.node = tc.node
			c := NodeReady(ctx, path, "worker-1", "this-boot", 5*time.Second)
			if c.OK != tc.ok || !strings.Contains(c.Msg, tc.want) {
				t.Errorf("%s kubeconfig, node %.40q: got %+v, want ok=%v and %q", kc.name, tc.node, c, tc.ok, tc.want)
			}
		}
		if a.lastPath != "/api/v1/nodes/worker-1" {
			t.Errorf("%s: asked for %s", kc.name, a.lastPath)
		}
	}

	a.node = node("this-boot", "True", "KubeletReady")
	for _, tc := range []struct{ name, text, want string }{
		// Another node's object: the Node authorizer refuses it.
		{"other", boot, "refused the kubelet's credentials (403 Forbidden) reading node worker-2"},
		{"nocert", strings.ReplaceAll(strings.ReplaceAll(inline, `"client-certificate-data"`, `"x"`), `"client-key-data"`, `"y"`), "refused the kubelet's credentials (401 Unauthorized)"},
		{"wrongca", strings.Replace(token, "ca.crt", "token", 1), "certificate authority holds no PEM"},
		{"noca", strings.Replace(token, "certificate-authority: ca.crt", "tls-server-name: localhost", 1), "not signed by the node config's CA"},
		{"http", strings.Replace(token, "https://", "http://", 1), "is not an https URL"},
		{"nocontext", strings.Replace(token, "{name: c,", "{name: d,", 1), `no context "c"`},
		{"nouser", strings.Replace(token, "[{name: u,", "[{name: v,", 1), `no user "u"`},
		{"notyaml", "clusters: [", "kubeconfig"},
		{"missingfile", strings.Replace(token, "ca.crt", "nothere.crt", 1), "nothere.crt"},
	} {
		name := "worker-1"
		if tc.name == "other" {
			name = "worker-2"
		}
		c := NodeReady(ctx, write(tc.name, tc.text), name, "this-boot", 5*time.Second)
		if c.OK || !strings.Contains(c.Msg, tc.want) {
			t.Errorf("%s: got %+v, want a failure saying %q", tc.name, c, tc.want)
		}
	}
	if c := NodeReady(ctx, filepath.Join(dir, "absent"), "worker-1", "this-boot", time.Second); c.OK || !strings.Contains(c.Msg, "no such file") {
		t.Errorf("no kubeconfig: %+v", c)
	}
	// A user authenticated by a plugin PID 1 does not run: the kubelet's own health endpoint is
	// checked instead, and the message says so.
	plugin := strings.Replace(token, "{tokenFile: "+filepath.Join(dir, "token")+"}", "{exec: {command: /bin/get-token, apiVersion: client.authentication.k8s.io/v1}}", 1)
	c := NodeReady(ctx, write("plugin", plugin), "worker-1", "this-boot", time.Second)
	if !strings.Contains(c.Msg, "authenticates through a plugin") || !strings.Contains(c.Msg, "checked instead") {
		t.Errorf("exec user: %+v", c)
	}
}
