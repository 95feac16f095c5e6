package cri

import (
	"reflect"
	"testing"

	"ingot.dev/ingot/runtime/store"
)

func TestCensus(t *testing.T) {
	s := newTestServer(t)
	if got, want := s.Census(), (Census{Containers: map[string]int{}}); !reflect.DeepEqual(got, want) {
		t.Errorf("empty runtime: Census = %+v, want %+v", got, want)
	}
	sh := newFakeShim()
	addPod(t, s, podA, sh)
	addContainer(t, s, ctrX, podA, sh)
	y := addContainer(t, s, ctrY, podA, sh)
	s.mu.Lock()
	y.State = store.Exited
	// A pod whose shim is gone (as restoreState leaves it) is not ready and has no shim.
	const podB = "bbbb0000000000000000000000000000000000000000000000000000000000b1"
	s.sandboxes[podB] = &sandbox{Sandbox: store.Sandbox{ID: podB}}
	s.mu.Unlock()

	want := Census{PodsReady: 1, PodsNotReady: 1, Containers: map[string]int{store.Running: 1, store.Exited: 1}, Shims: 1}
	if got := s.Census(); !reflect.DeepEqual(got, want) {
		t.Errorf("Census = %+v, want %+v", got, want)
	}
}
