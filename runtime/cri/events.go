package cri

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/store"
)

// eventBuffer is how many events a GetContainerEvents stream may fall behind before it is cut
// off. The kubelet reads its stream at once; one that stops reading must not make the handlers
// that publish wait, nor hold events without bound (containerd drops such a subscriber too).
const eventBuffer = 1024

// eventBroadcaster fans container and pod sandbox events out to the GetContainerEvents streams.
// publish never blocks: a subscriber whose buffer is full is dropped and its stream ends.
type eventBroadcaster struct {
	log  *slog.Logger
	mu   sync.Mutex
	subs map[*eventSub]struct{}
}

type eventSub struct {
	ch      chan *runtimeapi.ContainerEventResponse
	dropped chan struct{} // closed when the subscriber fell behind and was dropped
}

func newEventBroadcaster(log *slog.Logger) *eventBroadcaster {
	return &eventBroadcaster{log: log, subs: map[*eventSub]struct{}{}}
}

func (b *eventBroadcaster) subscribe() *eventSub {
	sub := &eventSub{ch: make(chan *runtimeapi.ContainerEventResponse, eventBuffer), dropped: make(chan struct{})}
	b.mu.Lock()
	b.subs[sub] = struct{}{}
	b.mu.Unlock()
	return sub
}

func (b *eventBroadcaster) unsubscribe(sub *eventSub) {
	b.mu.Lock()
	delete(b.subs, sub)
	b.mu.Unlock()
}

// listening says whether anyone subscribed, so publishers skip building events nobody reads.
func (b *eventBroadcaster) listening() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs) > 0
}

// publish hands ev to every subscriber without waiting for any.
func (b *eventBroadcaster) publish(ev *runtimeapi.ContainerEventResponse) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for sub := range b.subs {
		select {
		case sub.ch <- ev:
		default:
			delete(b.subs, sub)
			close(sub.dropped)
			b.log.Warn("container event subscriber dropped: it fell behind", "buffer", eventBuffer)
		}
	}
}

// GetContainerEvents streams container and pod sandbox events (created, started, stopped,
// deleted) until the client goes away, for the kubelet's evented PLEG. Each event carries the
// pod's status and its containers' statuses as they are after the change; a pod's own events
// carry the pod's id as container_id. A client that falls behind by more than eventBuffer
// events is cut off with ResourceExhausted and must resubscribe (and relist). The stream's
// headers are sent as soon as it is subscribed.
func (s *Server) GetContainerEvents(r *runtimeapi.GetEventsRequest, srv runtimeapi.RuntimeService_GetContainerEventsServer) error {
	sub := s.events.subscribe()
	defer s.events.unsubscribe(sub)
	// The headers go out once subscribed: a client that waits for them misses no later event.
	if err := srv.SendHeader(metadata.MD{}); err != nil {
		return err
	}
	for {
		select {
		case <-srv.Context().Done():
			return nil
		case <-sub.dropped:
			return status.Errorf(codes.ResourceExhausted, "container events: the stream fell more than %d events behind and was dropped; subscribe again", eventBuffer)
		case ev := <-sub.ch:
			if err := srv.Send(ev); err != nil {
				return err
			}
		}
	}
}

// publishEvent tells subscribers that the container id of pod sb — or the pod itself, when id
// is the pod's — was created, started, stopped or deleted. sb is the pod's record, which may
// already be gone from the server (a pod's deleted event).
func (s *Server) publishEvent(typ runtimeapi.ContainerEventType, sb *sandbox, id string) {
	if sb == nil || !s.events.listening() {
		return
	}
	s.mu.Lock()
	podStatus := sandboxStatus(sb)
	var ctrs []*store.Container
	for _, c := range s.containers {
		if c.SandboxID == sb.ID {
			ctrs = append(ctrs, c)
		}
	}
	s.mu.Unlock()
	ev := &runtimeapi.ContainerEventResponse{ContainerId: id, ContainerEventType: typ,
		CreatedAt: time.Now().UnixNano(), PodSandboxStatus: podStatus}
	for _, c := range ctrs {
		ev.ContainersStatuses = append(ev.ContainersStatuses, s.containerStatus(c))
	}
	s.events.publish(ev)
}

// exitWatchSlice bounds one Wait on the shim; the watch asks again until the container exits.
const exitWatchSlice = time.Hour

// watchExit waits in the background for a running container to exit by itself and records the
// exit at once, so that GetContainerEvents reports it (the kubelet's evented PLEG relists only
// every few minutes) rather than the next status call noticing it. A handler working on the
// container meanwhile (a stop) records the exit itself; refresh then leaves it alone. The watch
// ends with the container's exit, its removal, or its shim going away.
func (s *Server) watchExit(sb *sandbox, c *store.Container) {
	if sb == nil || sb.shim == nil {
		return
	}
	for {
		st, err := sb.shim.Wait(context.Background(), c.ID, exitWatchSlice)
		if err != nil || st.Exited || st.NotFound {
			break
		}
		s.mu.Lock()
		gone := s.containers[c.ID] != c
		s.mu.Unlock()
		if gone {
			return
		}
	}
	s.refresh(c)
}
