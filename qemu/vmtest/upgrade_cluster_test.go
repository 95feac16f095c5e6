package vmtest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/cluster"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/internal/testimages"
)

// TestUpgradeClusterNodeInVM swaps the image of a node that runs the kubelet in a cluster: a
// worker of `ingot cluster up --boot uefi --pki DIR` on image 1; `ingot ctl upgrade` to image 2,
// whose slot is committed only once the API server has the node Ready as reported from the new
// boot; then to image 3, whose kubelet never reports (a stand-in that only waits), so its runtime
// answers but the node never gets Ready from that boot: it is rolled back by itself, says why,
// and is Ready again on image 2. It runs where TestClusterE2E runs (INGOT_CLUSTER_TEST=1 or
// CI=true), on INGOT_E2E_ARCH (default amd64).
func TestUpgradeClusterNodeInVM(t *testing.T) {
	if os.Getenv("INGOT_CLUSTER_TEST") != "1" && !testgate.InCI() {
		t.Skip("set INGOT_CLUSTER_TEST=1 (make e2e-upgrade) to build the control plane and swap a cluster node's image")
	}
	testgate.Short(t, "VM boots")
	archName := os.Getenv("INGOT_E2E_ARCH")
	if archName == "" {
		archName = "amd64"
	}
	RequireVM(t, archName)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Minute)
	defer cancel()

	imgs, err := testimages.Build(ctx, testimages.Options{Arches: []string{archName}})
	if err != nil {
		testgate.Skip(t, "cannot build the test images: "+err.Error())
	}
	bins, err := cluster.Build(ctx, cachedir.Default())
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	stub := filepath.Join(tmp, "nokubelet-"+archName)
	build := exec.CommandContext(ctx, "go", "build", "-o", stub, "./testdata/nokubelet")
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOARCH="+archName)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the stand-in kubelet: %v\n%s", err, out)
	}
	worker := string(workerWithMirrors(t))
	const kubeletTable = "[kubelet]\nenabled = true\n"
	if !strings.Contains(worker, kubeletTable) {
		t.Fatalf("the worker profile no longer has %q", kubeletTable)
	}
	// The deadline counts from kernel start; node Ready takes 20-40 s after the kubelet starts
	// under TCG.
	good := worker + "\n[upgrade]\nhealth_timeout_s = 300\n"
	bad := strings.Replace(worker, kubeletTable, kubeletTable+fmt.Sprintf("binary = %q\n", stub), 1) + "\n[upgrade]\nhealth_timeout_s = 90\n"
	versions := map[string]string{"1": filepath.Join(tmp, "worker-good.toml"), "2": filepath.Join(tmp, "worker-good.toml"), "3": filepath.Join(tmp, "worker-nokubelet.toml")}
	os.WriteFile(versions["1"], []byte(good), 0o644)
	os.WriteFile(versions["3"], []byte(bad), 0o644)
	r := newSwapRig(t, archName, versions)

	e := &e2e{ctx: ctx, state: filepath.Join(tmp, "cluster"), ingot: r.ingot, kubectl: bins.Kubectl, node: cluster.WorkerName(1)}
	up := exec.CommandContext(ctx, r.ingot, "cluster", "up", "--state", e.state, "--workers", "1", "--arch", archName,
		"--image", r.images["1"], "--net", "restricted", "--guestfwd", registryFwd(t, imgs, guestRegistry),
		"--kube-proxy-image", "none", "--boot", "uefi", "--pki", r.pki, "--wait", "10m")
	out, err := up.CombinedOutput()
	t.Cleanup(func() { cluster.Down(e.state, false) })
	if err != nil {
		t.Fatalf("ingot cluster up: %v\n%s\n%s", err, out, e.diagnose())
	}
	m := regexp.MustCompile(`node API on (127\.0\.0\.1:[0-9]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("ingot cluster up --pki printed no node API address:\n%s", out)
	}
	addr := string(m[1])
	console := filepath.Join(e.state, "logs", e.node+".console")

	ctl := func(args ...string) (string, error) {
		c, cancel := context.WithTimeout(ctx, 12*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(c, r.ingot, append([]string{"ctl", "--node", addr, "--pki", r.pki}, args...)...).CombinedOutput()
		return string(out), err
	}
	bootID := func() string { return e.jsonpath("node/"+e.node, "{.status.nodeInfo.bootID}") }
	ready := func() bool {
		return e.jsonpath("node/"+e.node, `{.status.conditions[?(@.type=="Ready")].status}`) == "True"
	}
	// since is the console from offset on.
	since := func(offset int) string {
		b, _ := os.ReadFile(console)
		if offset > len(b) {
			return ""
		}
		return string(b[offset:])
	}
	mark := func() int {
		b, _ := os.ReadFile(console)
		return len(b)
	}

	// 1 → 2: committed once the node is Ready from the new boot.
	first := bootID()
	at := mark()
	start := time.Now()
	if out, err := ctl("upgrade", "--image", r.images["2"], "--wait", "10m"); err != nil || !strings.Contains(out, "committed: slot b") {
		t.Fatalf("upgrade to 2: %v\n%s\n%s", err, out, e.diagnose())
	}
	t.Logf("%s: cluster node swapped and committed %s after the upgrade call", archName, time.Since(start).Round(time.Second))
	log := since(at)
	readyAt := strings.Index(log, "health gate: node "+e.node+" is Ready in the API server")
	committedAt := strings.Index(log, "upgrade committed slot=b version=2")
	if readyAt < 0 || committedAt < readyAt {
		t.Fatalf("the console does not show the node Ready in the API server before the commit (at %d, commit at %d):\n%s", readyAt, committedAt, lastLines(log, 60))
	}
	if got := bootID(); got == first || got == "" || !ready() {
		t.Fatalf("after the swap the API server has boot %q (was %q), Ready %v", got, first, ready())
	}
	if osImage := e.jsonpath("node/"+e.node, "{.status.nodeInfo.osImage}"); !strings.Contains(osImage, " 2 (") {
		t.Errorf("the node's OS image after the swap: %q, want version 2", osImage)
	}

	// 2 → 3: the kubelet never reports, so the node is never Ready from that boot.
	second := bootID()
	at = mark()
	start = time.Now()
	out2, err := ctl("upgrade", "--image", r.images["3"], "--wait", "12m")
	if err == nil || !strings.Contains(out2, "upgrade rolled back: slot b runs 2 again") || !strings.Contains(out2, "has not reported from this boot") {
		t.Fatalf("upgrade to 3 (a kubelet that never reports): %v\n%s\n%s", err, out2, lastLines(since(at), 60))
	}
	t.Logf("%s: a failing image's round trip on a cluster node, upgrade call to rollback reported: %s", archName, time.Since(start).Round(time.Second))
	t.Logf("%s: ingot ctl upgrade said: %s", archName, strings.TrimSpace(out2))
	log = since(at)
	for _, want := range []string{"slot on trial: health checks before commit slot=a version=3",
		"upgrade failed its health checks; rebooting into the previous slot slot=a",
		"upgrade rolled back slot=b failed_slot=a failed_version=3"} {
		if !strings.Contains(log, want) {
			t.Errorf("the console does not show %q", want)
		}
	}
	e.waitFor(t, "node "+e.node+" Ready again on image 2", 5*time.Minute, func() bool {
		id := bootID()
		return id != second && id != "" && ready()
	})
	st, err := ctl("status")
	if err != nil || !strings.Contains(st, "slot b (ingot-b.conf)") || !strings.Contains(st, "version 2,") {
		t.Fatalf("status after the rollback: %v\n%s", err, st)
	}
	t.Logf("%s: status after the rollback:\n%s", archName, st)
}
