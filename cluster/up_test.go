package cluster

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
)

// TestUpDown runs `ingot cluster up` and `down` as a user would and checks what a joining node
// and kubectl rely on. It needs etcd, kube-apiserver and kube-controller-manager (built into the
// cache on first use: many minutes on two cores), so it runs only with INGOT_CLUSTER_TEST=1 or
// under CI=true; it needs no root.
func TestUpDown(t *testing.T) {
	if os.Getenv("INGOT_CLUSTER_TEST") != "1" && !testgate.InCI() {
		t.Skip("set INGOT_CLUSTER_TEST=1 to build the control plane (slow the first time) and run ingot cluster up/down")
	}
	testgate.Short(t, "the control plane")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	if _, err := Build(ctx, cachedir.Default()); err != nil {
		t.Fatal(err)
	}
	ingot := filepath.Join(t.TempDir(), "ingot")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", ingot, "../cmd/ingot").CombinedOutput(); err != nil {
		t.Fatalf("build ingot: %v\n%s", err, out)
	}
	dir := filepath.Join(t.TempDir(), "cluster")
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.CommandContext(ctx, ingot, append(args, "--state", dir)...).CombinedOutput()
		if err != nil {
			t.Fatalf("ingot %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	start := time.Now()
	out := run("cluster", "up")
	t.Logf("ingot cluster up took %s:\n%s", time.Since(start).Round(time.Millisecond), out)
	downDone := false
	defer func() {
		if !downDone {
			Down(dir, false)
		}
	}()
	st, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	pids := map[string]int{}
	for _, p := range procs {
		pid, ok := running(dir, p)
		if !ok {
			t.Fatalf("%s is not running after up", p)
		}
		pids[p] = pid
	}

	t.Run("listens on the loopback only", func(t *testing.T) {
		for name, pid := range pids {
			for _, a := range listeners(t, pid) {
				if !a.IP.IsLoopback() {
					t.Errorf("%s (pid %d) listens on %s", name, pid, a)
				}
			}
		}
		if got := listeners(t, pids[procAPIServer]); !slices.ContainsFunc(got, func(a *net.TCPAddr) bool { return a.Port == st.APIPort }) {
			t.Errorf("kube-apiserver listens on %v, not on port %d", got, st.APIPort)
		}
	})

	caPEM, err := os.ReadFile(filepath.Join(dir, dirPKI, FileCA))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := tls.LoadX509KeyPair(filepath.Join(dir, dirPKI, "admin.crt"), filepath.Join(dir, dirPKI, "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	ac, err := NewClient(st.Server, caPEM, &admin)
	if err != nil {
		t.Fatal(err)
	}
	if err := ac.Ready(ctx); err != nil {
		t.Fatalf("readyz: %v", err)
	}
	tokRaw, err := os.ReadFile(filepath.Join(dir, FileToken))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ParseToken(strings.TrimSpace(string(tokRaw)))
	if err != nil {
		t.Fatal(err)
	}
	bc, err := NewClient(st.Server, caPEM, nil)
	if err != nil {
		t.Fatal(err)
	}
	bc.Bearer = tok.String()

	t.Run("bootstrap token authenticates", func(t *testing.T) {
		var review struct {
			Status struct {
				UserInfo struct {
					Username string   `json:"username"`
					Groups   []string `json:"groups"`
				} `json:"userInfo"`
			} `json:"status"`
		}
		err := bc.Do(ctx, http.MethodPost, "/apis/authentication.k8s.io/v1/selfsubjectreviews",
			map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}, &review)
		if err != nil {
			t.Fatal(err)
		}
		u := review.Status.UserInfo
		if u.Username != "system:bootstrap:"+tok.ID || !slices.Contains(u.Groups, BootstrapGroup) {
			t.Errorf("the token is user %q in %v, want system:bootstrap:%s in %s", u.Username, u.Groups, tok.ID, BootstrapGroup)
		}
		// A wrong secret is no one.
		wrong := *bc
		wrong.Bearer = tok.ID + ".0000000000000000"
		err = wrong.Do(ctx, http.MethodPost, "/apis/authentication.k8s.io/v1/selfsubjectreviews",
			map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}, nil)
		var se *StatusError
		if !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
			t.Errorf("a wrong secret: %v, want 401", err)
		}
	})

	t.Run("node CSR is approved and signed", func(t *testing.T) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject: pkix.Name{CommonName: "system:node:test", Organization: []string{"system:nodes"}}}, key)
		if err != nil {
			t.Fatal(err)
		}
		name := "node-csr-test-" + hex.EncodeToString(der[len(der)-4:])
		csr := map[string]any{
			"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
			"metadata": map[string]any{"name": name},
			"spec": map[string]any{
				"request":    base64.StdEncoding.EncodeToString(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
				"signerName": "kubernetes.io/kube-apiserver-client-kubelet",
				"usages":     []string{"digital signature", "client auth"},
			},
		}
		path := "/apis/certificates.k8s.io/v1/certificatesigningrequests"
		if err := bc.Do(ctx, http.MethodPost, path, csr, nil); err != nil {
			t.Fatal(err)
		}
		var got struct {
			Status struct {
				Certificate string `json:"certificate"`
				Conditions  []struct{ Type, Reason string }
			} `json:"status"`
		}
		deadline := time.Now().Add(2 * time.Minute)
		for got.Status.Certificate == "" {
			if time.Now().After(deadline) {
				t.Fatalf("CSR %s not signed after 2 minutes: conditions %v", name, got.Status.Conditions)
			}
			time.Sleep(200 * time.Millisecond)
			if err := bc.Do(ctx, http.MethodGet, path+"/"+name, nil, &got); err != nil {
				t.Fatal(err)
			}
		}
		if len(got.Status.Conditions) == 0 || got.Status.Conditions[0].Type != "Approved" || got.Status.Conditions[0].Reason != "AutoApproved" {
			t.Errorf("CSR conditions %v, want Approved/AutoApproved", got.Status.Conditions)
		}
		certPEM, err := base64.StdEncoding.DecodeString(got.Status.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(certPEM)
		if b == nil {
			t.Fatalf("CSR certificate %q is no PEM", certPEM)
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(caPEM)
		if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("node certificate: %v", err)
		}
		if cert.Subject.CommonName != "system:node:test" {
			t.Errorf("node certificate for %q", cert.Subject.CommonName)
		}
	})

	t.Run("API server reaches a kubelet by its InternalIP through the proxy", func(t *testing.T) {
		// A stand-in kubelet on the host's loopback, as a worker's hostfwd would be.
		seen := make(chan string, 10)
		kubelet := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case seen <- r.URL.Path:
			default:
			}
			fmt.Fprintf(w, "kubelet of w1: %s", r.URL.Path)
		}))
		defer kubelet.Close()
		if err := AddKubelet(dir, "w1", Kubelet{Address: "10.0.2.16", Port: kubelet.Listener.Addr().(*net.TCPAddr).Port}); err != nil {
			t.Fatal(err)
		}
		node := map[string]any{"apiVersion": "v1", "kind": "Node", "metadata": map[string]any{"name": "w1"}}
		if err := ac.Do(ctx, http.MethodPost, "/api/v1/nodes", node, nil); err != nil {
			t.Fatal(err)
		}
		// What the kubelet reports: its addresses, the port it serves on in the guest.
		node["status"] = map[string]any{
			"addresses":       []map[string]string{{"type": "InternalIP", "address": "10.0.2.16"}, {"type": "Hostname", "address": "w1"}},
			"daemonEndpoints": map[string]any{"kubeletEndpoint": map[string]any{"Port": 10250}},
		}
		if err := ac.Do(ctx, http.MethodPut, "/api/v1/nodes/w1/status", node, nil); err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, st.Server+"/api/v1/nodes/w1/proxy/healthz", nil)
		resp, err := ac.http.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(body) != "kubelet of w1: /healthz" {
			t.Errorf("nodes/w1/proxy/healthz: %d %q", resp.StatusCode, body)
		}
		select {
		case <-seen:
		default:
		}

		// kubectl exec's upgrade requests (a websocket, which the API server turns into
		// SPDY towards the kubelet, and SPDY itself) are dialled through the same proxy.
		pod := map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "p"},
			"spec": map[string]any{"nodeName": "w1", "automountServiceAccountToken": false,
				"containers": []map[string]any{{"name": "c", "image": "example.invalid/none"}}}}
		// The default service account appears when the controller manager has made it.
		for deadline := time.Now().Add(time.Minute); ; {
			err := ac.Do(ctx, http.MethodPost, "/api/v1/namespaces/default/pods", pod, nil)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		for _, upgrade := range []map[string]string{
			{"Upgrade": "websocket", "Sec-Websocket-Version": "13", "Sec-Websocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-Websocket-Protocol": "v5.channel.k8s.io"},
			{"Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "v4.channel.k8s.io"},
		} {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, st.Server+"/api/v1/namespaces/default/pods/p/exec?command=true&container=c&stdout=true", nil)
			req.Header.Set("Connection", "Upgrade")
			for k, v := range upgrade {
				req.Header.Set(k, v)
			}
			resp, err := ac.http.Do(req)
			if err != nil {
				t.Fatalf("exec (%s): %v", upgrade["Upgrade"], err)
			}
			// Hold the client's side open: closing it ends the request before the API
			// server has dialled the kubelet.
			select {
			case path := <-seen:
				if path != "/exec/default/p/c" {
					t.Errorf("exec (%s): the kubelet was asked for %s", upgrade["Upgrade"], path)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("exec (%s): the kubelet was not asked (the client got %s)", upgrade["Upgrade"], resp.Status)
			}
			resp.Body.Close()
		}
	})

	t.Run("join config", func(t *testing.T) {
		raw, err := os.ReadFile(filepath.Join(dir, FileNodeConfig))
		if err != nil {
			t.Fatal(err)
		}
		want, err := JoinConfig(st.GuestServer, caPEM, tok)
		if err != nil {
			t.Fatal(err)
		}
		if string(raw) != string(want) {
			t.Errorf("node.toml:\n%s\nwant:\n%s", raw, want)
		}
		if st.GuestServer != "https://10.0.2.100:"+strconv.Itoa(st.APIPort) {
			t.Errorf("guests reach the API server at %s", st.GuestServer)
		}
	})

	// down --keep stops everything and keeps the state; up starts it again with the same
	// port, CA and token, so a worker's node.toml stays valid.
	run("cluster", "down", "--keep")
	for name := range pids {
		if pid, ok := running(dir, name); ok {
			t.Errorf("%s (pid %d) runs after down --keep", name, pid)
		}
	}
	run("cluster", "up")
	again, err := ReadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.APIPort != st.APIPort || again.TokenID != st.TokenID {
		t.Errorf("after down --keep and up: port %d token %s, want port %d token %s", again.APIPort, again.TokenID, st.APIPort, st.TokenID)
	}
	var review struct {
		Status struct {
			UserInfo struct{ Username string } `json:"userInfo"`
		} `json:"status"`
	}
	if err := bc.Do(ctx, http.MethodPost, "/apis/authentication.k8s.io/v1/selfsubjectreviews",
		map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}, &review); err != nil {
		t.Errorf("the token after down --keep and up: %v", err)
	} else if review.Status.UserInfo.Username != tok.User() {
		t.Errorf("the token after down --keep and up is %q", review.Status.UserInfo.Username)
	}
	for _, p := range procs {
		pid, ok := running(dir, p)
		if !ok {
			t.Fatalf("%s is not running after the second up", p)
		}
		pids[p+" (second up)"] = pid
	}

	start = time.Now()
	run("cluster", "down")
	downDone = true
	t.Logf("ingot cluster down took %s", time.Since(start).Round(time.Millisecond))
	// Up has exited, so its children belong to init now; one that has not reaped them yet
	// shows them as zombies (Z), which run nothing and hold no socket.
	for name, pid := range pids {
		if st := procState(pid); st != "" && st != "Z" {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			t.Errorf("%s (pid %d) still there after down: state %s, cmdline %q", name, pid, st, cmdline)
		}
	}
	for _, port := range []int{st.APIPort, st.EtcdPort, st.EtcdPeerPort, st.ControllerManagerPort} {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			c.Close()
			t.Errorf("127.0.0.1:%d accepts connections after down", port)
		} else if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("127.0.0.1:%d after down: %v, want connection refused", port, err)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state directory after down: %v, want it removed", err)
	}
}

// listeners returns the TCP addresses process pid listens on: its socket inodes matched
// against /proc/net/tcp and tcp6 rows in state LISTEN (0A).
func listeners(t *testing.T, pid int) []*net.TCPAddr {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var addrs []*net.TCPAddr
	for _, table := range []string{"tcp", "tcp6"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, table))
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) < 10 || fields[3] != "0A" || !inodes[fields[9]] {
				continue
			}
			addrs = append(addrs, parseProcAddr(t, fields[1]))
		}
		f.Close()
	}
	return addrs
}

// parseProcAddr parses /proc/net/tcp's "HEXIP:HEXPORT", the address as 32-bit words in host
// (little-endian) order.
func parseProcAddr(t *testing.T, s string) *net.TCPAddr {
	ipHex, portHex, _ := strings.Cut(s, ":")
	raw, err := hex.DecodeString(ipHex)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	ip := make(net.IP, len(raw))
	for i := 0; i < len(raw); i += 4 {
		ip[i], ip[i+1], ip[i+2], ip[i+3] = raw[i+3], raw[i+2], raw[i+1], raw[i]
	}
	port, err := strconv.ParseUint(portHex, 16, 16)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return &net.TCPAddr{IP: ip, Port: int(port)}
}
