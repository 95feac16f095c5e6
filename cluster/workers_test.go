package cluster

import (
	"bytes"
	"context"
	"encoding/pem"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ingot.dev/ingot/pki"
	"ingot.dev/ingot/profiles/nodeconfig"
)

// TestWorkerNodeConfig: a worker's node config names it, carries the join settings, and holds
// the static pods verbatim, manifests with quotes, backslashes and newlines included.
func TestWorkerNodeConfig(t *testing.T) {
	ca, err := NewPKI(testNow, net.IPv4(10, 96, 0, 1))
	if err != nil {
		t.Fatal(err)
	}
	token, err := ParseToken("abcdef.0123456789abcdef")
	if err != nil {
		t.Fatal(err)
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.CA.Cert.Raw})
	join, err := JoinConfig("https://10.0.2.100:6443", caPEM, token)
	if err != nil {
		t.Fatal(err)
	}
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: \"kp\"}\nspec:\n  containers:\n  - command: [\"sh\", \"-c\", \"echo a\\\\b\"]\n"
	b, err := workerNodeConfig("worker-2", join, map[string]string{"kube-proxy.yaml": pod}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := nodeconfig.Parse("node.toml", b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if c.Hostname != "worker-2" || c.Kubernetes.APIServer != "https://10.0.2.100:6443" || string(c.Kubernetes.BootstrapToken) != token.String() {
		t.Errorf("node config: %+v", c)
	}
	if got := c.Kubernetes.StaticPods["kube-proxy.yaml"]; got != pod {
		t.Errorf("static pod\n got %q\nwant %q", got, pod)
	}
	if _, err := workerNodeConfig("Worker_2", join, nil, nil); err == nil || !strings.Contains(err.Error(), "hostname") {
		t.Errorf("a bad name: %v", err)
	}

	// With a PKI: the node API certificate is issued once and kept, the [api] table names it.
	dir := t.TempDir()
	if err := pki.Init(dir, testNow); err != nil {
		t.Fatal(err)
	}
	api, err := nodeAPI(dir, "worker-2")
	if err != nil {
		t.Fatal(err)
	}
	crt := filepath.Join(dir, pki.DirNodes, "worker-2.crt")
	first, _ := os.ReadFile(crt)
	if api, err = nodeAPI(dir, "worker-2"); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(crt); len(first) == 0 || string(again) != string(first) {
		t.Error("the worker's node API certificate was issued again")
	}
	if b, err = workerNodeConfig("worker-2", join, nil, api); err != nil {
		t.Fatal(err)
	}
	if c, err = nodeconfig.Parse("node.toml", b); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if !c.API.Enabled() || !strings.Contains(c.API.Cert, "BEGIN CERTIFICATE") {
		t.Errorf("node config's [api]: %+v", c.API)
	}
	if _, err := nodeAPI(t.TempDir(), "worker-2"); err == nil || !strings.Contains(err.Error(), "node API certificate") {
		t.Errorf("a directory without a CA: %v", err)
	}
}

// TestRelay: what the guest sends reaches the server, the end of it half-closes the connection,
// and the server's whole answer comes back.
func TestRelay(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		got, _ := io.ReadAll(c) // until the relay half-closes
		c.Write(append([]byte("got "), bytes.ToUpper(got)...))
	}()
	var out bytes.Buffer
	if err := Relay(context.Background(), l.Addr().String(), strings.NewReader("ping"), &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "got PING" {
		t.Errorf("relay answered %q, want %q", out.String(), "got PING")
	}
	l.Close()
	err = Relay(context.Background(), l.Addr().String(), strings.NewReader(""), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "relay to "+l.Addr().String()) {
		t.Errorf("relay to a closed port: %v", err)
	}
}

// TestStartWorkersRefuses: what cannot work is refused before any VM starts.
func TestStartWorkersRefuses(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, FileState), []byte(`{"apiPort":6443}`), 0o644)
	img := t.TempDir()
	os.WriteFile(filepath.Join(img, "manifest.json"), []byte(`{"profile":"dev","arch":"amd64","inputs":[{"name":"ingot-node"}]}`), 0o644)
	relay := []string{"/bin/ingot", "cluster", "relay"}
	for _, tc := range []struct {
		name string
		opts WorkerOptions
		want string
	}{
		{"none", WorkerOptions{Count: 0, Image: img, RelayCommand: relay}, "workers: 0: want 1 to 64"},
		{"space", WorkerOptions{Count: 1, Image: img, RelayCommand: []string{"/my tools/ingot", "cluster", "relay"}},
			`workers: relay command argument "/my tools/ingot": QEMU splits its command at spaces`},
		{"boot", WorkerOptions{Count: 1, Image: img, RelayCommand: relay, Boot: "pxe"},
			`workers: boot "pxe": want direct or uefi`},
		{"no kubelet", WorkerOptions{Count: 1, Image: img, RelayCommand: relay},
			"does not run the kubelet: build the worker profile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := StartWorkers(context.Background(), dir, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("StartWorkers: %v; want %q", err, tc.want)
			}
		})
	}
	if names := workerNames(dir); len(names) != 0 {
		t.Errorf("workers recorded: %v", names)
	}
}
