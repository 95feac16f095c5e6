package cri

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/store"
)

// newTestServer is a Server over temp directories and a real store, with no pods: tests add
// pods whose shims are fakes (addPod, addContainer).
func newTestServer(t *testing.T) *Server {
	t.Helper()
	dir := t.TempDir()
	exe := filepath.Join(dir, "ingot-node")
	if err := os.WriteFile(exe, []byte("not a binary: the tests start no pause"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := New(context.Background(), Options{Root: filepath.Join(dir, "root"), State: filepath.Join(dir, "run"),
		Exe: exe, Images: noImages{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func addPod(t *testing.T, s *Server, id string, sh *fakeShim) {
	t.Helper()
	rec := store.Sandbox{ID: id, Name: "pod-" + id[:4], Namespace: "default", Ready: true, ShimDir: s.shimDir(id)}
	if err := s.store.PutSandbox(&rec); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	s.sandboxes[id] = &sandbox{Sandbox: rec, shim: sh}
	s.mu.Unlock()
}

// addContainer records a running container of pod podID, known to the pod's fake shim, with a
// directory of its own, as CreateContainer and StartContainer would have left it.
func addContainer(t *testing.T, s *Server, id, podID string, sh *fakeShim) *store.Container {
	t.Helper()
	dir := s.ctrDir(id)
	if err := os.MkdirAll(filepath.Join(dir, "upper"), 0o700); err != nil {
		t.Fatal(err)
	}
	c := &store.Container{ID: id, SandboxID: podID, Name: "ctr-" + id[:4], State: store.Running, Dir: dir}
	if err := s.store.PutContainer(c); err != nil {
		t.Fatal(err)
	}
	sh.add(id, true)
	s.mu.Lock()
	s.containers[id] = c
	s.mu.Unlock()
	return c
}

const (
	podA  = "aaaa0000000000000000000000000000000000000000000000000000000000a1"
	ctrX  = "cccc1111000000000000000000000000000000000000000000000000000000c1"
	ctrY  = "cccc2222000000000000000000000000000000000000000000000000000000c2"
	noCtr = "dddd0000000000000000000000000000000000000000000000000000000000d1"
)

// wantCode checks a handler's error: its gRPC code, and that its message names the object.
func wantCode(t *testing.T, op string, err error, code codes.Code, names string) {
	t.Helper()
	st, _ := status.FromError(err)
	if err == nil || st.Code() != code || !strings.Contains(st.Message(), names) {
		t.Fatalf("%s: err = %v, want %s naming %q", op, err, code, names)
	}
}

func storedContainers(t *testing.T, s *Server) []string {
	t.Helper()
	recs, err := s.store.Containers()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range recs {
		ids = append(ids, c.ID)
	}
	return ids
}

// TestRemoveContainerIsIdempotent: RemoveContainer kills the container, has the shim forget it,
// deletes its directory and record; a second RemoveContainer, and one of an id never seen,
// succeed (CRI proto: "If the container is not present, returns success").
func TestRemoveContainerIsIdempotent(t *testing.T) {
	s := newTestServer(t)
	sh := newFakeShim()
	addPod(t, s, podA, sh)
	c := addContainer(t, s, ctrX, podA, sh)
	ctx := context.Background()

	if _, err := s.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ctrX}); err != nil {
		t.Fatalf("RemoveContainer: %v", err)
	}
	if got, want := sh.callLog(), []string{"Signal " + ctrX + " 9", "Remove " + ctrX}; !slices.Equal(got, want) {
		t.Fatalf("shim calls = %q, want %q", got, want)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("container directory after RemoveContainer: %v, want it gone", err)
	}
	if ids := storedContainers(t, s); len(ids) != 0 {
		t.Fatalf("stored containers after RemoveContainer: %q, want none", ids)
	}
	_, err := s.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctrX})
	wantCode(t, "ContainerStatus after RemoveContainer", err, codes.NotFound, ctrX)

	for _, id := range []string{ctrX, noCtr} {
		if _, err := s.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: id}); err != nil {
			t.Fatalf("RemoveContainer of %s, not present: %v, want success", id, err)
		}
	}
}

// TestUnknownContainer: ContainerStatus and StartContainer of an id the runtime does not have
// are NotFound, naming the id; StopContainer of it succeeds (ingot treats stopping what is gone
// as stopped; the kubelet accepts either).
func TestUnknownContainer(t *testing.T) {
	s := newTestServer(t)
	ctx := context.Background()
	_, err := s.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: noCtr})
	wantCode(t, "ContainerStatus", err, codes.NotFound, noCtr)
	_, err = s.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: noCtr})
	wantCode(t, "StartContainer", err, codes.NotFound, noCtr)
	if _, err := s.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: noCtr}); err != nil {
		t.Fatalf("StopContainer of an unknown container: %v, want success", err)
	}
	_, err = s.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: podA})
	wantCode(t, "PodSandboxStatus", err, codes.NotFound, podA)
}

// TestResolveByPrefix: a unique prefix names a container or pod (crictl's short ids); an
// ambiguous one is InvalidArgument for every handler, Stop and Remove included, and changes
// nothing.
func TestResolveByPrefix(t *testing.T) {
	s := newTestServer(t)
	sh := newFakeShim()
	addPod(t, s, podA, sh)
	addContainer(t, s, ctrX, podA, sh)
	addContainer(t, s, ctrY, podA, sh)
	ctx := context.Background()

	st, err := s.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctrY[:6]})
	if err != nil || st.GetStatus().GetId() != ctrY {
		t.Fatalf("ContainerStatus(%s) = %q, %v; want %s", ctrY[:6], st.GetStatus().GetId(), err, ctrY)
	}
	ps, err := s.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: "aaaa"})
	if err != nil || ps.GetStatus().GetId() != podA {
		t.Fatalf("PodSandboxStatus(aaaa) = %q, %v; want %s", ps.GetStatus().GetId(), err, podA)
	}

	_, err = s.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: "cccc"})
	wantCode(t, "ContainerStatus of an ambiguous prefix", err, codes.InvalidArgument, `"cccc" is ambiguous`)
	_, err = s.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: "cccc"})
	wantCode(t, "StopContainer of an ambiguous prefix", err, codes.InvalidArgument, `"cccc" is ambiguous`)
	_, err = s.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: "cccc"})
	wantCode(t, "RemoveContainer of an ambiguous prefix", err, codes.InvalidArgument, `"cccc" is ambiguous`)
	if calls := sh.callLog(); len(calls) != 0 {
		t.Fatalf("shim calls after ambiguous requests: %q, want none", calls)
	}
	_, err = s.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{})
	wantCode(t, "ContainerStatus of no id", err, codes.InvalidArgument, "container id is empty")
}

// TestStopContainerGracePeriod: StopContainer signals SIGTERM and returns when the shim reports
// the exit; a container that ignores SIGTERM is killed when the grace period ends. Either way
// ContainerStatus then reports it exited with the signal's code.
func TestStopContainerGracePeriod(t *testing.T) {
	for _, tc := range []struct {
		name       string
		ignoreTerm bool
		calls      []string
		exitCode   int32
	}{
		{"exits on SIGTERM", false, []string{"Signal " + ctrX + " 15"}, 143},
		{"ignores SIGTERM", true, []string{"Signal " + ctrX + " 15", "Signal " + ctrX + " 9"}, 137},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t)
			sh := newFakeShim()
			sh.ignoreTerm = tc.ignoreTerm
			addPod(t, s, podA, sh)
			addContainer(t, s, ctrX, podA, sh)
			ctx := context.Background()
			if _, err := s.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ctrX, Timeout: 1}); err != nil {
				t.Fatalf("StopContainer: %v", err)
			}
			if got := sh.callLog(); !slices.Equal(got, tc.calls) {
				t.Fatalf("shim calls = %q, want %q", got, tc.calls)
			}
			st, err := s.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctrX})
			if err != nil {
				t.Fatal(err)
			}
			if got := st.GetStatus(); got.GetState() != runtimeapi.ContainerState_CONTAINER_EXITED || got.GetExitCode() != tc.exitCode || got.GetReason() != "Error" {
				t.Fatalf("status after StopContainer: %s exit %d reason %q; want EXITED exit %d reason Error",
					got.GetState(), got.GetExitCode(), got.GetReason(), tc.exitCode)
			}
			recs, _ := s.store.Containers()
			if len(recs) != 1 || recs[0].State != store.Exited || recs[0].ExitCode != tc.exitCode {
				t.Fatalf("stored record after StopContainer: %+v; want exited with %d", recs, tc.exitCode)
			}
		})
	}
}

// TestConcurrentStopAndRemove: the kubelet may stop a container while another worker removes
// it. Every call succeeds, and the removal sticks: no stop writes the record back after it was
// deleted (a restarted runtime would otherwise recover a container without a directory).
func TestConcurrentStopAndRemove(t *testing.T) {
	s := newTestServer(t)
	sh := newFakeShim()
	addPod(t, s, podA, sh)
	ctx := context.Background()
	for round := range 300 {
		addContainer(t, s, ctrX, podA, sh)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := range 8 {
			wg.Go(func() {
				var err error
				switch i % 4 {
				case 0:
					_, err = s.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: ctrX})
				case 1:
					_, err = s.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: ctrX, Timeout: 5})
				case 2:
					_, err = s.ListContainers(ctx, &runtimeapi.ListContainersRequest{})
				case 3:
					_, err = s.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: ctrX})
					if status.Code(err) == codes.NotFound {
						err = nil // removed already
					}
				}
				if err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("round %d: concurrent Stop/Remove/List/Status: %v", round, err)
		}
		if ids := storedContainers(t, s); len(ids) != 0 {
			t.Fatalf("round %d: stored containers after a removal raced a stop: %q, want none", round, ids)
		}
		s.mu.Lock()
		_, known := s.containers[ctrX]
		s.mu.Unlock()
		if known {
			t.Fatalf("round %d: the server still lists %s after RemoveContainer", round, ctrX)
		}
	}
}
