package cri

// Census is what the runtime holds at one moment, for the metrics endpoint.
type Census struct {
	PodsReady, PodsNotReady int
	Containers              map[string]int // by state: created, running, exited, unknown
	Shims                   int            // pods whose shim the runtime is connected to
}

// Census counts pods, containers and shims from the runtime's own records, under s.mu only: a
// scrape must not wait on a shim or on a container's operation lock.
func (s *Server) Census() Census {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := Census{Containers: map[string]int{}}
	for _, sb := range s.sandboxes {
		if sb.Ready {
			c.PodsReady++
		} else {
			c.PodsNotReady++
		}
		if sb.shim != nil {
			c.Shims++
		}
	}
	for _, ctr := range s.containers {
		c.Containers[ctr.State]++
	}
	return c
}
