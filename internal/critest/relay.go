package critest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"ingot.dev/ingot/netsetup/link"
	"ingot.dev/ingot/netsetup/netns"
)

// nodeNetNS makes the run's node network namespace, pinned at path, with lo up: the runtime and
// critest run in it, so pod addresses, hostPorts on 127.0.0.1 and hostNetwork pods behave as on
// a node, and nothing touches the host's network.
func nodeNetNS(path string) error {
	if err := netns.New(path); err != nil {
		return fmt.Errorf("node network namespace: %w", err)
	}
	if err := netns.Do(path, link.Loopback); err != nil {
		return errors.Join(fmt.Errorf("node network namespace %s: %w", path, err), netns.Remove(path))
	}
	return nil
}

// relay forwards the TCP connections made to its listener, which lives in another network
// namespace, to target in this process's own one: the runtime inside the node's namespace pulls
// through it from the test registry on the host's loopback. Only the listening socket is in the
// node's namespace; the accept loop and the dials run on ordinary threads, in the host's.
type relay struct {
	l      net.Listener
	target string
	wg     sync.WaitGroup

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// startRelay listens on 127.0.0.1 (a free port) inside the network namespace at nsPath and
// forwards every connection to target until Close.
func startRelay(nsPath, target string) (*relay, error) {
	r := &relay{target: target, conns: map[net.Conn]struct{}{}}
	err := netns.Do(nsPath, func() error {
		var err error
		r.l, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("registry relay in %s: %w", nsPath, err)
	}
	r.wg.Add(1)
	go r.serve()
	return r, nil
}

// Addr is the relay's address as seen from inside its namespace.
func (r *relay) Addr() string { return r.l.Addr().String() }

func (r *relay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.l.Accept()
		if err != nil {
			return // closed
		}
		r.wg.Add(1)
		go r.forward(c)
	}
}

func (r *relay) forward(c net.Conn) {
	defer r.wg.Done()
	u, err := net.Dial("tcp", r.target)
	if err != nil {
		// The client sees a reset; the runtime's pull error names the registry.
		c.Close()
		return
	}
	if !r.track(c, u) {
		return
	}
	defer r.untrack(c, u)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		// Pass the EOF on, so the other side ends its request; the other direction goes on.
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(u, c)
	go pipe(c, u)
	<-done
	<-done
}

// track registers a connection pair for Close; false (both closed) when the relay is closing.
func (r *relay) track(cs ...net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		r.conns[c] = struct{}{}
	}
	return true
}

func (r *relay) untrack(cs ...net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(r.conns, c)
	}
}

// Close stops the relay, ends the connections in flight and waits for its goroutines. The
// listening socket was the last thing of this process's in the node's namespace.
func (r *relay) Close() error {
	err := r.l.Close()
	r.mu.Lock()
	r.closed = true
	for c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
