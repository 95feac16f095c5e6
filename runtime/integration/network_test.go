package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/internal/testgate"
)

// TestBadConflistAtStart: a runtime restarted with an invalid CNI configuration refuses to start
// with the file and the field named, and the pod that was running keeps its network; once the
// configuration is fixed the runtime comes back and still reports the pod's address.
func TestBadConflistAtStart(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := Start(t)
	pod := r.MustCrictl("runp", podConfig(t, r, "netkeep"))
	ip := r.MustCrictl("inspectp", "-o", "go-template", "--template", "{{.status.network.ip}}", pod)
	if !strings.HasPrefix(ip, "10.88.") {
		t.Fatalf("pod IP %q", ip)
	}
	r.Kill()
	bad := filepath.Join(r.CNIConfDir, "10-bad.conflist")
	os.WriteFile(bad, []byte(`{"cniVersion": "1.0.0", "name": "bad", "plugins": [{"type": "bridge",
	  "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.9.0.0/16"}], [{"subnet": "10.9.1.0/24"}]]}}]}`), 0o644)
	out := r.RestartFails()
	if !strings.Contains(out, "10-bad.conflist") || !strings.Contains(out, "overlap") {
		t.Fatalf("the start error does not name the file and the overlap:\n%s", out)
	}
	os.Remove(bad)
	r.Restart()
	if got := r.MustCrictl("inspectp", "-o", "go-template", "--template", "{{.status.network.ip}}", pod); got != ip {
		t.Fatalf("pod IP after the restart = %q, want %q", got, ip)
	}
	if out := r.MustCrictl("inspectp", pod); !strings.Contains(out, "SANDBOX_READY") {
		t.Fatalf("pod not ready after the restart:\n%s", out)
	}
}

// TestPodCIDRFromKubelet: without a conflist file, the pod CIDR the kubelet sends through
// UpdateRuntimeConfig replaces the default 10.88.0.0/16 for new pods.
func TestPodCIDRFromKubelet(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := Start(t)
	conn, err := grpc.NewClient("unix://"+r.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	_, err = rt.UpdateRuntimeConfig(context.Background(), &runtimeapi.UpdateRuntimeConfigRequest{
		RuntimeConfig: &runtimeapi.RuntimeConfig{NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: "10.244.3.0/24"}}})
	if err != nil {
		t.Fatal(err)
	}
	pod := r.MustCrictl("runp", podConfig(t, r, "cidr"))
	if ip := r.MustCrictl("inspectp", "-o", "go-template", "--template", "{{.status.network.ip}}", pod); !strings.HasPrefix(ip, "10.244.3.") {
		t.Fatalf("pod IP %q, want one from the kubelet's 10.244.3.0/24", ip)
	}
	_, err = rt.UpdateRuntimeConfig(context.Background(), &runtimeapi.UpdateRuntimeConfigRequest{
		RuntimeConfig: &runtimeapi.RuntimeConfig{NetworkConfig: &runtimeapi.NetworkConfig{PodCidr: "not-a-cidr"}}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a bad pod CIDR gave %v, want InvalidArgument", err)
	}
}
