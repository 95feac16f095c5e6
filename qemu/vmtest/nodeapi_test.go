package vmtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/init/api/apiv1"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/internal/testimages"
	"ingot.dev/ingot/pki"
	"ingot.dev/ingot/qemu"
)

// nodeAPIListening is a shell test of whether anything listens on the node API's port (50000 is
// C350 in /proc/net/tcp*): it prints the number of listening sockets on it.
const nodeAPIListening = "cat /proc/net/tcp /proc/net/tcp6 | awk '$2 ~ /:C350$/ && $4 == \"0A\"' | wc -l"

// TestNodeAPIInVM boots the dev image from its disk (UEFI, systemd-boot) with an [api] table in
// its node config and drives it from
// the host with the real `ingot ctl` over a forwarded port: status and version, the seed's ctr
// workflows (pull, images, inspect, containers, container logs, remove), service logs and the
// kernel log; a reader refused a reboot, a client without a certificate refused outright; then an
// admin's reboot, after which the node is back with its API, and an admin's power off.
func TestNodeAPIInVM(t *testing.T) {
	testgate.Short(t, "VM boots")
	for _, archName := range []string{"amd64", "arm64"} {
		t.Run(archName, func(t *testing.T) { testNodeAPIInVM(t, archName) })
	}
}

func testNodeAPIInVM(t *testing.T, archName string) {
	RequireVM(t, archName)
	ctx := context.Background()
	imgs, err := testimages.Build(ctx, testimages.Options{Arches: []string{archName}})
	if err != nil {
		testgate.Skip(t, "cannot build the test images: "+err.Error())
	}
	tmp := t.TempDir()
	ingot := filepath.Join(tmp, "ingot")
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", ingot, "../../cmd/ingot").CombinedOutput(); err != nil {
		t.Fatalf("build ingot: %v\n%s", err, out)
	}

	dir := filepath.Join(tmp, "pki")
	now := time.Now()
	for _, err := range []error{
		pki.Init(dir, now),
		pki.Node(dir, "api-node", []net.IP{net.IPv4(127, 0, 0, 1)}, nil, now),
		pki.Client(dir, "alice", pki.RoleAdmin, now),
		pki.Client(dir, "bob", pki.RoleReader, now),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	table, err := pki.APITable(dir, "api-node", 0)
	if err != nil {
		t.Fatal(err)
	}
	nodeToml := filepath.Join(tmp, "node.toml")
	if err := os.WriteFile(nodeToml, append([]byte("hostname = \"api-node\"\n\n"), table...), 0o600); err != nil {
		t.Fatal(err)
	}
	profile := filepath.Join(tmp, "nodeapi-dev.toml")
	if err := os.WriteFile(profile, devWithMirrors(t), 0o644); err != nil {
		t.Fatal(err)
	}
	img := Image(t, profile, archName)

	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	// A UEFI disk boot: systemd-boot's variables tell the node which slot it booted.
	vm := BootWith(t, qemu.Config{Image: img, Boot: qemu.BootUEFI, Memory: 2048,
		HostFwd:  []string{fmt.Sprintf("tcp:%s-:%d", addr, apiv1.DefaultPort)},
		GuestFwd: []string{registryFwd(t, imgs, guestRegistry)},
		FwCfg:    map[string]string{"opt/ingot/node.toml": nodeToml}})
	vm.WaitReady(bootTimeout)
	if !strings.Contains(vm.Console.Output(), "node API serving port=50000") {
		t.Fatalf("no 'node API serving' line:\n%s", tail(vm.Console.Output(), 3000))
	}
	vm.Prompt(shellTimeout)
	if n := vm.MustShell(nodeAPIListening, shellTimeout); n != "1" {
		t.Fatalf("%s listening sockets on port 50000, want 1", n)
	}

	const long = 4 * time.Minute
	ctl := func(client string, args ...string) (string, error) {
		c, cancel := context.WithTimeout(ctx, long)
		defer cancel()
		out, err := exec.CommandContext(c, ingot, append([]string{"ctl", "--node", addr, "--pki", dir, "--client", client}, args...)...).CombinedOutput()
		return string(out), err
	}
	must := func(client string, args ...string) string {
		t.Helper()
		out, err := ctl(client, args...)
		if err != nil {
			t.Fatalf("ingot ctl %s as %s: %v\n%s", strings.Join(args, " "), client, err, out)
		}
		return out
	}

	// Status and version, as a reader.
	st := must("bob", "status")
	for _, want := range []string{"hostname  api-node", "image     dev " + archName, "boot      systemd-boot, slot a (ingot-a.conf)", "runtime", "running"} {
		if !strings.Contains(st, want) {
			t.Fatalf("ingot ctl status lacks %q:\n%s", want, st)
		}
	}
	var v apiv1.VersionReply
	if err := json.Unmarshal([]byte(must("bob", "-o", "json", "version")), &v); err != nil || v.Profile != "dev" || v.Arch != archName || len(v.BuildID) != 64 {
		t.Fatalf("version: %+v, %v", v, err)
	}
	if want := vm.MustShell("sed -n 's/^BUILD_ID=//p' /etc/os-release", shellTimeout); v.BuildID != want {
		t.Fatalf("version says build %s, the node's os-release %s", v.BuildID, want)
	}

	// Who may not: a reader rebooting, a client without a certificate.
	if out, err := ctl("bob", "reboot"); err == nil || !strings.Contains(out, `PermissionDenied: client "bob" has role reader; Reboot needs admin`) {
		t.Fatalf("a reader's reboot: %v\n%s", err, out)
	}
	tc, _, err := pki.ClientTLS(dir, "alice")
	if err != nil {
		t.Fatal(err)
	}
	tc.Certificates = nil
	anon, err := apiv1.Dial(addr, tc)
	if err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = anon.Status(c)
	cancel()
	anon.Close()
	if err == nil {
		t.Fatal("a client without a certificate got the node's status")
	}
	if !strings.Contains(vm.Console.Output(), `node API call refused client=bob role=reader method=Reboot`) {
		t.Fatalf("the refused reboot left no console line:\n%s", tail(vm.Console.Output(), 2000))
	}

	// The seed's ctr workflows: pull, images, inspect.
	const ref = "registry.k8s.io/e2e-test-images/busybox:1.29-2"
	if out, err := ctl("bob", "pull", ref); err == nil || !strings.Contains(out, "Pull needs admin") {
		t.Fatalf("a reader's pull: %v\n%s", err, out)
	}
	pulled := must("alice", "pull", ref)
	if !strings.Contains(pulled, "sha256:") {
		t.Fatalf("pull printed %q", pulled)
	}
	if out := must("bob", "images"); !strings.Contains(out, ref) {
		t.Fatalf("images lacks %s:\n%s", ref, out)
	}
	var insp apiv1.ImageInspectReply
	if err := json.Unmarshal([]byte(must("bob", "inspect", ref)), &insp); err != nil || insp.Image.Size == 0 || !strings.Contains(insp.Info["info"], "Cmd") && len(insp.Info) == 0 {
		t.Fatalf("inspect: %+v, %v", insp, err)
	}

	// A container started on the node (as the kubelet would, through CRI), seen through the API.
	vm.MustShell(`echo '{"metadata":{"name":"apipod","namespace":"default","uid":"api-uid"},"log_directory":"/var/log/pods/api","linux":{}}' > /tmp/pod.json`, shellTimeout)
	vm.MustShell(`echo '{"metadata":{"name":"talker"},"image":{"image":"`+ref+`"},"command":["/bin/sh","-c","echo line-one; echo line-two; sleep 600"],"log_path":"talker.log","linux":{}}' > /tmp/ctr.json`, shellTimeout)
	id := vm.MustShell("POD=$(crictl runp /tmp/pod.json 2>/dev/null) && CTR=$(crictl create $POD /tmp/ctr.json /tmp/pod.json 2>/dev/null) && crictl start $CTR >/dev/null 2>&1 && echo $CTR", long)
	var cs apiv1.ContainersReply
	if err := json.Unmarshal([]byte(must("bob", "-o", "json", "containers")), &cs); err != nil {
		t.Fatal(err)
	}
	if len(cs.Containers) != 1 || cs.Containers[0].ID != id || cs.Containers[0].Pod != "apipod" || cs.Containers[0].State != "running" || cs.Containers[0].Image != ref {
		t.Fatalf("containers: %+v; want talker (%s) running in apipod", cs.Containers, id)
	}
	deadline := time.Now().Add(long)
	for {
		out := must("bob", "container-logs", id[:8])
		if out == "line-one\nline-two\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container-logs %s: %q", id[:8], out)
		}
		time.Sleep(time.Second)
	}
	if out := must("bob", "container-logs", id, "--tail", "1"); out != "line-two\n" {
		t.Fatalf("container-logs --tail 1: %q", out)
	}
	if out, err := ctl("alice", "rmi", ref); err == nil {
		t.Fatalf("an image in use was removed:\n%s", out)
	}
	vm.MustShell("crictl rmp -f $POD", long)
	must("alice", "rmi", ref)
	if out := must("bob", "images"); strings.Contains(out, ref) {
		t.Fatalf("images still lists %s after rmi:\n%s", ref, out)
	}

	// Service logs and the kernel log.
	if out := must("bob", "logs", "runtime", "--tail", "200"); !strings.Contains(out, "CRI runtime serving") {
		t.Fatalf("logs runtime lacks the serving line:\n%s", tail(out, 2000))
	}
	if out := must("bob", "dmesg"); !strings.Contains(out, "Linux version") {
		t.Fatalf("dmesg lacks the kernel's banner:\n%s", tail(out, 2000))
	}
	if out, err := ctl("bob", "logs", "no-such-service"); err == nil || !strings.Contains(out, `NotFound: service "no-such-service" has no log`) {
		t.Fatalf("logs of an unknown service: %v\n%s", err, out)
	}

	// An admin's reboot: the node stops cleanly, comes back, and serves its API again (the node
	// config was kept on /var).
	must("alice", "reboot", "--reason", "test")
	vm.WaitFor("shutting down action=reboot reason=\"node API: alice (admin): test\"", powerTimeout)
	vm.WaitReady(bootTimeout)
	if out := must("bob", "status"); !strings.Contains(out, "api-node") {
		t.Fatalf("status after the reboot:\n%s", out)
	}
	must("alice", "poweroff")
	vm.WaitExit(powerTimeout)
	vm.AssertCleanConsole()
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
