package integration

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// A pod's shim runs with one P (GOMAXPROCS=1), which is what keeps its memory down (see
// shim.Spawn), and the container it starts does not inherit that setting.
func TestShimRunsOnOneP(t *testing.T) {
	r := Start(t)
	r.MustCrictl("pull", busybox)
	conn, err := grpc.NewClient("unix://"+r.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	if _, _, err := startPod(context.Background(), rt, r.Dir, "one-p"); err != nil {
		t.Fatal(err)
	}
	shims := ingotShims(r.cmd.Process.Pid)
	if len(shims) != 1 {
		t.Fatalf("found %d shims, want 1", len(shims))
	}
	if env := environ(shims[0]); !slices.Contains(env, "GOMAXPROCS=1") {
		t.Errorf("the shim's environment has no GOMAXPROCS=1: %q", env)
	}
	for pid, ppid := range processTable() {
		if ppid == shims[0] && strings.HasPrefix(cmdline(pid), "/bin/sleep\x00") {
			if env := environ(pid); slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "GOMAXPROCS=") }) {
				t.Errorf("the container inherited the shim's setting: %q", env)
			}
			return
		}
	}
	t.Error("the pod's container is not a child of its shim")
}

func environ(pid int) []string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
}
