package cri

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/store"
)

// fakeEventStream is the server side of a GetContainerEvents stream. GetContainerEvents sends
// the headers once it has subscribed: from then on events reach the stream.
type fakeEventStream struct {
	grpc.ServerStream
	ctx        context.Context
	subscribed chan struct{}
	once       sync.Once
	events     chan *runtimeapi.ContainerEventResponse
	release    chan struct{} // nil: Send does not block
}

func newFakeEventStream(ctx context.Context) *fakeEventStream {
	return &fakeEventStream{ctx: ctx, subscribed: make(chan struct{}), events: make(chan *runtimeapi.ContainerEventResponse, 100)}
}

func (f *fakeEventStream) Context() context.Context { return f.ctx }

func (f *fakeEventStream) SendHeader(metadata.MD) error {
	f.once.Do(func() { close(f.subscribed) })
	return nil
}

func (f *fakeEventStream) Send(ev *runtimeapi.ContainerEventResponse) error {
	if f.release != nil {
		<-f.release
	}
	f.events <- ev
	return nil
}

// subscribeEvents starts GetContainerEvents and returns once it has subscribed; done yields
// the stream's end.
func subscribeEvents(t *testing.T, s *Server, stream *fakeEventStream) (done chan error) {
	t.Helper()
	done = make(chan error, 1)
	go func() { done <- s.GetContainerEvents(&runtimeapi.GetEventsRequest{}, stream) }()
	select {
	case <-stream.subscribed:
	case err := <-done:
		t.Fatalf("GetContainerEvents ended before subscribing: %v", err)
	}
	return done
}

// TestContainerEventsFollowLifecycle: a subscriber sees a container started, stopped and
// deleted, then its pod stopped and deleted, in order, each with the pod's and containers'
// statuses as they are after the change.
func TestContainerEventsFollowLifecycle(t *testing.T) {
	s := newTestServer(t)
	sh := newFakeShim()
	addPod(t, s, podA, sh)
	c := addContainer(t, s, ctrX, podA, sh)
	c.State = store.Created
	sh.add(ctrX, false)

	ctx, cancel := context.WithCancel(context.Background())
	stream := newFakeEventStream(ctx)
	done := subscribeEvents(t, s, stream)

	bg := context.Background()
	if _, err := s.StartContainer(bg, &runtimeapi.StartContainerRequest{ContainerId: ctrX}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StopContainer(bg, &runtimeapi.StopContainerRequest{ContainerId: ctrX}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemoveContainer(bg, &runtimeapi.RemoveContainerRequest{ContainerId: ctrX}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StopPodSandbox(bg, &runtimeapi.StopPodSandboxRequest{PodSandboxId: podA}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RemovePodSandbox(bg, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: podA}); err != nil {
		t.Fatal(err)
	}

	type want struct {
		typ      runtimeapi.ContainerEventType
		id       string
		podState runtimeapi.PodSandboxState
		ctrs     string // the containers' statuses: "id:state …"
	}
	ready, notReady := runtimeapi.PodSandboxState_SANDBOX_READY, runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	wants := []want{
		{runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, ctrX, ready, ctrX[:4] + ":CONTAINER_RUNNING"},
		{runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, ctrX, ready, ctrX[:4] + ":CONTAINER_EXITED"},
		{runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, ctrX, ready, ""},
		{runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT, podA, notReady, ""},
		{runtimeapi.ContainerEventType_CONTAINER_DELETED_EVENT, podA, notReady, ""},
	}
	for i, w := range wants {
		var ev *runtimeapi.ContainerEventResponse
		select {
		case ev = <-stream.events:
		case err := <-done:
			t.Fatalf("event %d: the stream ended: %v", i, err)
		case <-time.After(10 * time.Second):
			t.Fatalf("event %d: none came; want %s of %.4s", i, w.typ, w.id)
		}
		var ctrs string
		for _, st := range ev.GetContainersStatuses() {
			ctrs += fmt.Sprintf("%.4s:%s", st.GetId(), st.GetState())
		}
		if ev.GetContainerEventType() != w.typ || ev.GetContainerId() != w.id || ev.GetPodSandboxStatus().GetId() != podA ||
			ev.GetPodSandboxStatus().GetState() != w.podState || ctrs != w.ctrs || ev.GetCreatedAt() == 0 {
			t.Errorf("event %d: %s of %.4s, pod %.4s %s, containers %q; want %s of %.4s, pod %s, containers %q",
				i, ev.GetContainerEventType(), ev.GetContainerId(), ev.GetPodSandboxStatus().GetId(),
				ev.GetPodSandboxStatus().GetState(), ctrs, w.typ, w.id, w.podState, w.ctrs)
		}
	}
	select {
	case ev := <-stream.events:
		t.Errorf("an extra event: %s of %.4s", ev.GetContainerEventType(), ev.GetContainerId())
	default:
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("GetContainerEvents after the client went away: %v", err)
	}
}

// TestContainerEventsDropSlowSubscriber: a subscriber that stops reading never holds up a
// handler; once it is eventBuffer events behind it is dropped and its stream ends with
// ResourceExhausted.
func TestContainerEventsDropSlowSubscriber(t *testing.T) {
	s := newTestServer(t)
	sh := newFakeShim()
	addPod(t, s, podA, sh)
	s.mu.Lock()
	sb := s.sandboxes[podA]
	s.mu.Unlock()

	slow := newFakeEventStream(context.Background())
	slow.release = make(chan struct{}) // its Send blocks: a client that does not read
	slowDone := subscribeEvents(t, s, slow)
	published := make(chan struct{})
	go func() {
		for range eventBuffer + 2 { // one in the blocked Send, eventBuffer queued, one too many
			s.publishEvent(runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT, sb, podA)
		}
		close(published)
	}()
	select {
	case <-published:
	case <-time.After(30 * time.Second):
		t.Fatal("publishing blocked on a subscriber that does not read")
	}
	close(slow.release)
	var err error
	for err == nil {
		select {
		case <-slow.events: // what the slow client gets before its stream ends
		case err = <-slowDone:
			if err == nil {
				t.Fatal("the dropped stream ended without an error")
			}
		}
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("dropped stream: err = %v, want ResourceExhausted", err)
	}
	if s.events.listening() {
		t.Error("the dropped subscriber is still subscribed")
	}
}

// TestContainerEventsOnOwnExit: a started container that exits by itself is reported stopped
// at once, with its exit code, without a status call noticing it first (the evented PLEG
// relists only every few minutes).
func TestContainerEventsOnOwnExit(t *testing.T) {
	s := newTestServer(t)
	sh := newFakeShim()
	addPod(t, s, podA, sh)
	c := addContainer(t, s, ctrX, podA, sh)
	c.State = store.Created
	sh.add(ctrX, false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream := newFakeEventStream(ctx)
	subscribeEvents(t, s, stream)
	if _, err := s.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctrX}); err != nil {
		t.Fatal(err)
	}
	if ev := <-stream.events; ev.GetContainerEventType() != runtimeapi.ContainerEventType_CONTAINER_STARTED_EVENT {
		t.Fatalf("first event %s, want started", ev.GetContainerEventType())
	}
	sh.mu.Lock()
	sh.exitLocked(sh.ctrs[ctrX], 3) // the process ends by itself
	sh.mu.Unlock()
	select {
	case ev := <-stream.events:
		sts := ev.GetContainersStatuses()
		if ev.GetContainerEventType() != runtimeapi.ContainerEventType_CONTAINER_STOPPED_EVENT || ev.GetContainerId() != ctrX ||
			len(sts) != 1 || sts[0].GetState() != runtimeapi.ContainerState_CONTAINER_EXITED || sts[0].GetExitCode() != 3 {
			t.Errorf("after the exit: %s of %.4s, statuses %v; want stopped, exited with 3", ev.GetContainerEventType(), ev.GetContainerId(), sts)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s of the container's own exit")
	}
}
