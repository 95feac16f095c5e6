package cri

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"

	"ingot.dev/ingot/runtime/store"
)

// serveStreams starts s's streaming server for the test and stops it at the end.
func serveStreams(t *testing.T, s *Server, o StreamOptions) *StreamServer {
	t.Helper()
	ss, err := s.ServeStreams(o)
	if err != nil {
		t.Fatalf("ServeStreams(%+v): %v", o, err)
	}
	t.Cleanup(func() { ss.Close() })
	return ss
}

// TestStreamURLs: with config.toml's defaults (127.0.0.1, port "0") the server listens on a
// free loopback port, and Exec, Attach and PortForward answer with URLs on that real port (not
// port 0) naming their endpoint; a configured port is used as given.
func TestStreamURLs(t *testing.T) {
	s := newTestServer(t)
	sh := newFakeShim()
	addPod(t, s, podA, sh)
	addContainer(t, s, ctrX, podA, sh)
	ss := serveStreams(t, s, StreamOptions{Address: "127.0.0.1", Port: "0"})
	u, err := url.Parse(ss.URL())
	if err != nil {
		t.Fatal(err)
	}
	if u.Scheme != "http" || u.Hostname() != "127.0.0.1" || u.Port() == "" || u.Port() == "0" {
		t.Fatalf("streaming server URL %q, want http://127.0.0.1:<the port it listens on>", ss.URL())
	}
	// Something answers there: the listener is up when ServeStreams returns.
	if c, err := net.Dial("tcp", u.Host); err != nil {
		t.Fatalf("dial the streaming server at %s: %v", u.Host, err)
	} else {
		c.Close()
	}
	ctx := context.Background()
	ex, err := s.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: ctrX[:8], Cmd: []string{"sh"}, Stdin: true, Stdout: true})
	if err != nil || !strings.HasPrefix(ex.GetUrl(), ss.URL()+"/exec/") {
		t.Fatalf("Exec = %q, %v; want a URL under %s/exec/", ex.GetUrl(), err, ss.URL())
	}
	at, err := s.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: ctrX, Stdout: true})
	if err != nil || !strings.HasPrefix(at.GetUrl(), ss.URL()+"/attach/") {
		t.Fatalf("Attach = %q, %v; want a URL under %s/attach/", at.GetUrl(), err, ss.URL())
	}
	pf, err := s.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: podA, Port: []int32{8080}})
	if err != nil || !strings.HasPrefix(pf.GetUrl(), ss.URL()+"/portforward/") {
		t.Fatalf("PortForward = %q, %v; want a URL under %s/portforward/", pf.GetUrl(), err, ss.URL())
	}

	// A configured port.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	s2 := newTestServer(t)
	ss2 := serveStreams(t, s2, StreamOptions{Address: "127.0.0.1", Port: port})
	if want := "http://127.0.0.1:" + port; ss2.URL() != want {
		t.Fatalf("streaming server URL %q, want %q", ss2.URL(), want)
	}
	// Closed: the calls say so rather than handing out a dead URL.
	ss2.Close()
	addPod(t, s2, podA, sh)
	_, err = s2.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: podA})
	wantCode(t, "PortForward after Close", err, codes.FailedPrecondition, "streaming server is not running")
}

// TestStreamCallsCheckTheirObject: Exec, Attach and PortForward give the errors the other calls
// give for what they name — NotFound for an unknown container or pod, FailedPrecondition for a
// stopped container or a pod that is not ready — and InvalidArgument for a bad request.
func TestStreamCallsCheckTheirObject(t *testing.T) {
	s := newTestServer(t)
	sh := newFakeShim()
	addPod(t, s, podA, sh)
	addContainer(t, s, ctrX, podA, sh)
	stopped := addContainer(t, s, ctrY, podA, sh)
	s.mu.Lock()
	stopped.State = store.Exited
	s.mu.Unlock()
	serveStreams(t, s, StreamOptions{Address: "127.0.0.1", Port: "0"})
	ctx := context.Background()

	_, err := s.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: noCtr, Cmd: []string{"sh"}, Stdout: true})
	wantCode(t, "Exec of an unknown container", err, codes.NotFound, noCtr)
	_, err = s.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: ctrY, Cmd: []string{"sh"}, Stdout: true})
	wantCode(t, "Exec in a stopped container", err, codes.FailedPrecondition, "container "+ctrY+" is not running")
	_, err = s.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: ctrX, Stdout: true})
	wantCode(t, "Exec without a command", err, codes.InvalidArgument, "empty command")
	_, err = s.Exec(ctx, &runtimeapi.ExecRequest{ContainerId: ctrX, Cmd: []string{"sh"}, Tty: true, Stdout: true, Stderr: true})
	wantCode(t, "Exec with tty and stderr", err, codes.InvalidArgument, "tty and stderr")
	_, err = s.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: noCtr, Stdout: true})
	wantCode(t, "Attach to an unknown container", err, codes.NotFound, noCtr)
	_, err = s.Attach(ctx, &runtimeapi.AttachRequest{ContainerId: ctrY, Stdout: true})
	wantCode(t, "Attach to a stopped container", err, codes.FailedPrecondition, "container "+ctrY+" is not running")

	const noPod = "eeee0000000000000000000000000000000000000000000000000000000000e1"
	_, err = s.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: noPod})
	wantCode(t, "PortForward to an unknown pod", err, codes.NotFound, noPod)
	_, err = s.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: podA, Port: []int32{70000}})
	wantCode(t, "PortForward to port 70000", err, codes.InvalidArgument, "port 70000")
	s.mu.Lock()
	s.sandboxes[podA].Ready = false
	s.mu.Unlock()
	_, err = s.PortForward(ctx, &runtimeapi.PortForwardRequest{PodSandboxId: podA})
	wantCode(t, "PortForward to a stopped pod", err, codes.FailedPrecondition, "pod sandbox "+podA+" is not ready")
}

// servedCertificate is the certificate a TLS server at addr presents.
func servedCertificate(t *testing.T, addr string) *x509.Certificate {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

// TestStreamTLSSelfSigned: with enable_tls_streaming and no key pair the URLs are https, the
// certificate names the listen address, and a client that trusts that certificate (and checks
// it) gets an HTTP answer from the server.
func TestStreamTLSSelfSigned(t *testing.T) {
	s := newTestServer(t)
	addPod(t, s, podA, newFakeShim())
	ss := serveStreams(t, s, StreamOptions{Address: "127.0.0.1", Port: "0", TLS: true})
	u, _ := url.Parse(ss.URL())
	if u.Scheme != "https" {
		t.Fatalf("streaming server URL %q, want https", ss.URL())
	}
	pf, err := s.PortForward(context.Background(), &runtimeapi.PortForwardRequest{PodSandboxId: podA})
	if err != nil || !strings.HasPrefix(pf.GetUrl(), "https://"+u.Host+"/portforward/") {
		t.Fatalf("PortForward = %q, %v; want an https URL on %s", pf.GetUrl(), err, u.Host)
	}
	cert := servedCertificate(t, u.Host)
	hasIP := false
	for _, ip := range cert.IPAddresses {
		hasIP = hasIP || ip.Equal(net.ParseIP("127.0.0.1"))
	}
	if !hasIP {
		t.Fatalf("self-signed certificate's IP addresses %v, want 127.0.0.1 (the listen address) among them", cert.IPAddresses)
	}
	if host, _ := os.Hostname(); cert.Subject.CommonName != host {
		t.Fatalf("self-signed certificate's subject %q, want the hostname %q", cert.Subject.CommonName, host)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := client.Get(ss.URL() + "/portforward/no-such-token")
	if err != nil {
		t.Fatalf("GET over verified TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET of an unknown token: %s, want 404 Not Found", resp.Status)
	}
}

// writeKeyPair writes a self-signed certificate for commonName and its key as PEM files.
func writeKeyPair(t *testing.T, dir, commonName string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: commonName},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, commonName+".crt"), filepath.Join(dir, commonName+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// TestStreamTLSKeyPair: x509_key_pair_streaming's certificate is the one served; a pair that
// cannot be used stops the start with an error naming the file.
func TestStreamTLSKeyPair(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeKeyPair(t, dir, "configured-stream-cert")
	s := newTestServer(t)
	ss := serveStreams(t, s, StreamOptions{Address: "127.0.0.1", Port: "0", TLS: true, TLSCertFile: certFile, TLSKeyFile: keyFile})
	u, _ := url.Parse(ss.URL())
	if cn := servedCertificate(t, u.Host).Subject.CommonName; cn != "configured-stream-cert" {
		t.Fatalf("served certificate %q, want the configured one (configured-stream-cert)", cn)
	}

	otherCert, _ := writeKeyPair(t, dir, "other")
	garbage := filepath.Join(dir, "garbage.crt")
	os.WriteFile(garbage, []byte("not PEM\n"), 0o644)
	missing := filepath.Join(dir, "missing.key")
	for _, tc := range []struct {
		name       string
		cert, key  string
		wantInText []string
	}{
		{"missing key", certFile, missing, []string{missing, "no such file"}},
		{"garbage certificate", garbage, keyFile, []string{garbage, "certificate"}},
		{"key of another certificate", otherCert, keyFile, []string{otherCert, keyFile, "does not match"}},
	} {
		_, err := newTestServer(t).ServeStreams(StreamOptions{Address: "127.0.0.1", Port: "0", TLS: true, TLSCertFile: tc.cert, TLSKeyFile: tc.key})
		if err == nil {
			t.Fatalf("%s: ServeStreams started", tc.name)
		}
		for _, w := range tc.wantInText {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("%s: error %q does not say %q", tc.name, err, w)
			}
		}
	}
}

// TestExecStartsOnTheClientsTerminalSize: an exec with a terminal waits for the client's first
// size and starts its process with it (runc sizes the terminal before the command runs); a
// command that looked before the size arrived saw 0x0 (busybox's `stty size` failed on a loaded
// machine). Sizes after the first still reach the resize channel.
func TestExecStartsOnTheClientsTerminalSize(t *testing.T) {
	dir := t.TempDir()
	spec := `{"ociVersion":"1.2.0","process":{"args":["/pause"],"cwd":"/","env":["PATH=/bin"],"user":{"uid":0,"gid":0},"consoleSize":{"height":1,"width":1}}}`
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &store.Container{ID: "c1", Dir: dir}

	resize := make(chan remotecommand.TerminalSize, 2)
	resize <- remotecommand.TerminalSize{Width: 101, Height: 33}
	resize <- remotecommand.TerminalSize{Width: 120, Height: 40}
	size, rest := firstSize(context.Background(), resize)
	if size == nil || size.Width != 101 || size.Height != 33 {
		t.Fatalf("first size %+v, want 101x33", size)
	}
	if next := <-rest; next.Width != 120 {
		t.Fatalf("the size after the first was lost: %+v", next)
	}
	data, err := execProcess(c, []string{"stty", "size"}, true, size)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"consoleSize":{"height":33,"width":101}`) || !strings.Contains(string(data), "TERM=xterm") {
		t.Fatalf("exec process %s, want the client's size and TERM", data)
	}
	// Without a terminal, no size: the container's own must not leak into an exec.
	data, err = execProcess(c, []string{"true"}, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "consoleSize") {
		t.Fatalf("exec process without a terminal has a size: %s", data)
	}
	// A client that never sends one: the wait ends, and a closed channel ends it at once.
	closed := make(chan remotecommand.TerminalSize)
	close(closed)
	if size, _ := firstSize(context.Background(), closed); size != nil {
		t.Fatalf("size from a closed channel: %+v", size)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if size, rest := firstSize(ctx, make(chan remotecommand.TerminalSize)); size != nil || rest == nil {
		t.Fatalf("cancelled wait: %+v %v", size, rest)
	}
}
