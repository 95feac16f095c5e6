package vmtest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/cluster"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/internal/testimages"
	"ingot.dev/ingot/qemu"
)

// TestKubeletJoinsInVM: `ingot cluster up` on the host, and a node booted with the node config
// it writes (a bootstrap token, the CA, the API server as the guest sees it) joins: PID 1's
// probe says the API server, its certificate and the token are accepted, the kubelet is
// TLS-bootstrapped, the node registers and turns Ready, a pod bound to it by nodeName runs, and
// its log reaches the API server's pods/log (API server → egress proxy → the node's kubelet).
// Like TestUpDown it needs the control plane built, so it runs with INGOT_CLUSTER_TEST=1 or
// under CI=true.
func TestKubeletJoinsInVM(t *testing.T) {
	if os.Getenv("INGOT_CLUSTER_TEST") != "1" && !testgate.InCI() {
		t.Skip("set INGOT_CLUSTER_TEST=1 to build the control plane (slow the first time) and join a node to it")
	}
	testgate.Short(t, "VM boots")
	const archName, node = "amd64", "worker-1"
	RequireVM(t, archName)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	imgs, err := testimages.Build(ctx, testimages.Options{Arches: []string{archName}})
	if err != nil {
		testgate.Skip(t, "cannot build the test images: "+err.Error())
	}
	if _, err := cluster.Build(ctx, cachedir.Default()); err != nil {
		t.Fatal(err)
	}
	ingot := filepath.Join(t.TempDir(), "ingot")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", ingot, "../../cmd/ingot").CombinedOutput(); err != nil {
		t.Fatalf("build ingot: %v\n%s", err, out)
	}
	state := filepath.Join(t.TempDir(), "cluster")
	if out, err := exec.CommandContext(ctx, ingot, "cluster", "up", "--state", state).CombinedOutput(); err != nil {
		t.Fatalf("ingot cluster up: %v\n%s", err, out)
	}
	t.Cleanup(func() { cluster.Down(state, false) })
	st, err := cluster.ReadState(state)
	if err != nil {
		t.Fatal(err)
	}
	join, err := os.ReadFile(filepath.Join(state, cluster.FileNodeConfig))
	if err != nil {
		t.Fatal(err)
	}
	nodeToml := filepath.Join(t.TempDir(), "node.toml")
	if err := os.WriteFile(nodeToml, append([]byte(fmt.Sprintf("hostname = %q\n\n", node)), join...), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	kubeletPort := l.Addr().(*net.TCPAddr).Port
	l.Close()
	// QEMU's user network gives the guest 10.0.2.15: the node's InternalIP.
	if err := cluster.AddKubelet(state, node, cluster.Kubelet{Address: "10.0.2.15", Port: kubeletPort}); err != nil {
		t.Fatal(err)
	}

	profile := filepath.Join(t.TempDir(), "dev-kubelet.toml")
	if err := os.WriteFile(profile, devWithKubelet(t), 0o644); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	vm := BootWith(t, qemu.Config{Image: Image(t, profile, archName), Boot: qemu.BootDirect, Memory: 2048,
		FwCfg: map[string]string{"opt/ingot/node.toml": nodeToml},
		// A relay per connection (the kubelet opens several), like the registry's.
		GuestFwd: []string{registryFwd(t, imgs, guestRegistry),
			relayFwd(t, fmt.Sprintf("%s:%d", cluster.GuestHostIP, st.APIPort), fmt.Sprintf("127.0.0.1:%d", st.APIPort))},
		HostFwd: []string{cluster.KubeletHostFwd(kubeletPort)}})
	vm.WaitFor("kubelet started", bootTimeout)
	vm.WaitFor("kubelet join: API server "+st.GuestServer+" reachable; its certificate and the bootstrap token are accepted", bootTimeout)

	caPEM, err := os.ReadFile(filepath.Join(state, "pki", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := tls.LoadX509KeyPair(filepath.Join(state, "pki", "admin.crt"), filepath.Join(state, "pki", "admin.key"))
	if err != nil {
		t.Fatal(err)
	}
	api, err := cluster.NewClient(st.Server, caPEM, &admin)
	if err != nil {
		t.Fatal(err)
	}
	var n struct {
		Status struct {
			Conditions []struct{ Type, Status, Message string }
			NodeInfo   struct {
				OSImage, KernelVersion, ContainerRuntimeVersion string
			}
		}
	}
	ready := func() bool {
		if err := api.Do(ctx, "GET", "/api/v1/nodes/"+node, nil, &n); err != nil {
			return false
		}
		for _, c := range n.Status.Conditions {
			if c.Type == "Ready" {
				return c.Status == "True"
			}
		}
		return false
	}
	poll(t, ctx, "node "+node+" Ready", 8*time.Minute, ready, func() string {
		return fmt.Sprintf("node: %+v", n.Status.Conditions)
	})
	t.Logf("node Ready %s after QEMU started; os %q, kernel %q, runtime %q", time.Since(start).Round(time.Second),
		n.Status.NodeInfo.OSImage, n.Status.NodeInfo.KernelVersion, n.Status.NodeInfo.ContainerRuntimeVersion)
	if !strings.HasPrefix(n.Status.NodeInfo.ContainerRuntimeVersion, "ingot://") || !strings.HasPrefix(n.Status.NodeInfo.OSImage, "ingot") {
		t.Errorf("node info: os %q, runtime %q; want ingot's", n.Status.NodeInfo.OSImage, n.Status.NodeInfo.ContainerRuntimeVersion)
	}

	pod := map[string]any{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "hello", "namespace": "default"},
		"spec": map[string]any{
			"nodeName": node,
			"containers": []any{map[string]any{
				"name": "hello", "image": "registry.k8s.io/e2e-test-images/busybox:1.29-2",
				"command": []string{"sh", "-c", "echo hello-from-a-joined-node; exec sleep 3600"},
			}},
		},
	}
	created := time.Now()
	if err := api.Create(ctx, "/api/v1/namespaces/default/pods", pod); err != nil {
		t.Fatal(err)
	}
	var p struct {
		Status struct {
			Phase             string
			ContainerStatuses []struct{ State map[string]any }
		}
	}
	poll(t, ctx, "pod hello Running", 5*time.Minute, func() bool {
		return api.Do(ctx, "GET", "/api/v1/namespaces/default/pods/hello", nil, &p) == nil && p.Status.Phase == "Running"
	}, func() string { return fmt.Sprintf("pod: %+v", p.Status) })
	t.Logf("pod Running %s after it was created", time.Since(created).Round(time.Second))
	var logs string
	poll(t, ctx, "the pod's log through the API server", time.Minute, func() bool {
		raw, err := apiText(ctx, st.Server+"/api/v1/namespaces/default/pods/hello/log", caPEM, admin)
		logs = raw
		return err == nil && strings.Contains(logs, "hello-from-a-joined-node")
	}, func() string { return "log: " + logs })
}

// apiText GETs a text answer (pods/log) from the API server as the admin.
func apiText(ctx context.Context, url string, caPEM []byte, admin tls.Certificate) (string, error) {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil,
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{admin}}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return string(b), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(b), err
}

// poll calls cond every 2 s until it holds, failing the test with what diag says after timeout.
func poll(t *testing.T, ctx context.Context, what string, timeout time.Duration, cond func() bool, diag func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("timed out after %s waiting for %s; %s", timeout, what, diag())
		}
		time.Sleep(2 * time.Second)
	}
}
