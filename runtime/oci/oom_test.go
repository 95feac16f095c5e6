package oci

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/internal/testgate"
)

// TestOOMScoreAdj: with CAP_SYS_RESOURCE (a node) the kubelet's value is applied as given, the
// Guaranteed -997 included; without it (a test's user namespace) values below the runtime's own
// are raised to it. The capability check is injected.
func TestOOMScoreAdj(t *testing.T) {
	for _, tc := range []struct {
		name        string
		capable     bool
		own, want   int
		got         int
		wantClamped bool
	}{
		{name: "node, Guaranteed pod", capable: true, own: 0, want: -997, got: -997},
		{name: "node, runtime at -999, Guaranteed pod", capable: true, own: -999, want: -997, got: -997},
		{name: "node, BestEffort pod", capable: true, own: -999, want: 1000, got: 1000},
		{name: "node, 0 overrides the runtime's own", capable: true, own: -500, want: 0, got: 0},
		{name: "user namespace, Guaranteed pod", capable: false, own: 0, want: -997, got: 0, wantClamped: true},
		{name: "user namespace, runtime at -500", capable: false, own: -500, want: -997, got: -500, wantClamped: true},
		{name: "user namespace, Burstable pod", capable: false, own: 0, want: 937, got: 937},
		{name: "user namespace, exactly the runtime's own", capable: false, own: -500, want: -500, got: -500},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := detectOOMLimit(func() bool { return tc.capable }, func() int { return tc.own })
			got, clamped := l.Apply(tc.want)
			if got != tc.got || clamped != tc.wantClamped {
				t.Errorf("Apply(%d) = %d, clamped %v; want %d, clamped %v", tc.want, got, clamped, tc.got, tc.wantClamped)
			}
			// ContainerSpec applies the same decision to what the kubelet sends.
			s, err := ContainerSpec(&runtimeapi.PodSandboxConfig{}, &runtimeapi.ContainerConfig{
				Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Command: []string{"sh"},
				Linux: &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{OomScoreAdj: int64(tc.want)}},
			}, ContainerInput{Rootfs: t.TempDir(), PodNamespaces: "/run/ingot/podns/p", Host: Host{OOM: l}})
			if err != nil {
				t.Fatal(err)
			}
			if s.Process.OOMScoreAdj == nil {
				t.Fatalf("spec has no oom_score_adj, want %d", tc.got)
			}
			if *s.Process.OOMScoreAdj != tc.got {
				t.Errorf("spec oom_score_adj %d, want %d", *s.Process.OOMScoreAdj, tc.got)
			}
		})
	}
}

// TestHasSysResource: the capability check agrees with the kernel's CapEff line in the node's
// user namespace, and is false in a user namespace of its own, where the process is root with
// every capability its bounding set allows but only there: the test runs itself again under
// unshare --user --map-root-user and asks there.
func TestHasSysResource(t *testing.T) {
	if os.Getenv("INGOT_OOM_CHILD") == "1" {
		fmt.Printf("capable=%v\n", hasSysResource())
		return
	}
	testgate.RequireRoot(t)
	testgate.RequireCommand(t, "unshare")
	if got, want := hasSysResource(), capEffHas(t, 24); got != want { // CAP_SYS_RESOURCE is 24
		t.Fatalf("in the initial user namespace: hasSysResource %v, CapEff says %v", got, want)
	}
	cmd := exec.Command("unshare", "--user", "--map-root-user", os.Args[0], "-test.run=^TestHasSysResource$", "-test.v")
	cmd.Env = append(os.Environ(), "INGOT_OOM_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in a user namespace: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "capable=false") {
		t.Fatalf("in a user namespace of its own, want capable=false:\n%s", out)
	}
}

func capEffHas(t *testing.T, bit uint) bool {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return mask&(1<<bit) != 0
		}
	}
	t.Fatal("no CapEff line in /proc/self/status")
	return false
}
