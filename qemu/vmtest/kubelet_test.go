package vmtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/internal/testimages"
	"ingot.dev/ingot/qemu"
)

// devWithKubelet is the dev profile (its shell and crictl, the test registry's mirrors) with the
// kubelet bundle and [kubelet] enabled: the worker's kubelet, with a console to look at it from.
func devWithKubelet(t testing.TB) []byte {
	t.Helper()
	s := string(devWithMirrors(t))
	const bundles = `bundles = ["busybox", "crictl"]`
	if !strings.Contains(s, bundles) {
		t.Fatalf("the dev profile no longer has %q", bundles)
	}
	s = strings.Replace(s, bundles, `bundles = ["busybox", "crictl", "kubelet"]`, 1)
	return []byte(s + "\n[kubelet]\nenabled = true\n")
}

// TestKubeletStandaloneInVM boots an image whose PID 1 runs the kubelet after the runtime, with no
// cluster to join: the kubelet runs standalone, against ingot's runtime, and starts a static pod
// dropped into /etc/kubernetes/manifests; removing the manifest removes the pod. Its log is in
// /var/log/kubelet.log and `ingot-node logs kubelet`.
func TestKubeletStandaloneInVM(t *testing.T) {
	testgate.Short(t, "VM boots")
	const archName = "amd64"
	RequireVM(t, archName)
	imgs, err := testimages.Build(context.Background(), testimages.Options{Arches: []string{archName}})
	if err != nil {
		testgate.Skip(t, "cannot build the test images: "+err.Error())
	}
	profile := filepath.Join(t.TempDir(), "dev-kubelet.toml")
	if err := os.WriteFile(profile, devWithKubelet(t), 0o644); err != nil {
		t.Fatal(err)
	}
	vm := BootWith(t, qemu.Config{Image: Image(t, profile, archName), Boot: qemu.BootDirect, Memory: 2048,
		GuestFwd: []string{registryFwd(t, imgs, guestRegistry)}})
	vm.WaitFor("kubelet started", bootTimeout) // PID 1 starts it just before it says the node is ready
	took := vm.WaitReady(bootTimeout)
	vm.Prompt(shellTimeout)
	t.Logf("node ready after %s", took)

	const long = 4 * time.Minute
	manifest := `apiVersion: v1
kind: Pod
metadata:
  name: static-web
  namespace: default
spec:
  containers:
  - name: web
    image: registry.k8s.io/e2e-test-images/busybox:1.29-2
    command: ["sh", "-c", "echo static-pod-up; exec sleep 3600"]
`
	vm.MustShell("printf '%s' '"+manifest+"' >/etc/kubernetes/manifests/web.yaml", shellTimeout)
	// The kubelet names a static pod <name>-<node>; it polls the manifest directory every 20 s.
	out, code := vm.Shell(`i=0; until crictl ps --name web --state running -q | grep -q .; do i=$((i+1)); [ $i -gt 40 ] && break; sleep 3; done; `+
		`crictl pods --name static-web-ingot-dev --state ready -q | grep -c .`, 2*long)
	if code != 0 {
		diag, _ := vm.Shell("crictl pods; crictl ps -a; ingot-node logs kubelet | grep -v '^I' | tail -40", shellTimeout)
		t.Fatalf("the static pod did not start:\n%s\n%s", out, diag)
	}
	if strings.TrimSpace(lastLine(out)) != "1" {
		t.Fatalf("the static pod's sandbox is not ready:\n%s", out)
	}
	if out := vm.MustShell(`crictl logs $(crictl ps --name web -q)`, shellTimeout); !strings.Contains(out, "static-pod-up") {
		t.Fatalf("the static pod's container log:\n%s", out)
	}
	// The kubelet's cgroups are the cgroupfs driver's: the pod's under kubepods.
	if out := vm.MustShell(`ls -d /sys/fs/cgroup/kubepods*/*/pod* /sys/fs/cgroup/kubepods*/pod* 2>/dev/null | head -1`, shellTimeout); !strings.Contains(out, "pod") {
		t.Fatalf("no pod cgroup under kubepods:\n%s", out)
	}
	for _, cmd := range []string{"grep -c . /var/log/kubelet.log", "ingot-node logs kubelet | grep -c ."} {
		if out := vm.MustShell(cmd, shellTimeout); strings.TrimSpace(lastLine(out)) == "0" {
			t.Fatalf("%s: the kubelet's log is empty", cmd)
		}
	}
	t.Logf("memory after the static pod started: %s", strings.TrimSpace(vm.MustShell(`free -m | sed -n 2p`, shellTimeout)))

	vm.MustShell("rm /etc/kubernetes/manifests/web.yaml", shellTimeout)
	vm.MustShell(`i=0; while crictl pods --name static-web -q | grep -q .; do i=$((i+1)); [ $i -gt 90 ] && exit 1; sleep 2; done`, long)
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\r\n ")
	if i := strings.LastIndexAny(s, "\r\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}
