package cri

import (
	"bytes"
	"context"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/netsetup/netns"
)

// clientStream is the client's side of a forwarded connection as the streaming server hands it
// over: reads are what the client sends, writes go back to it, and Close ends only the way back
// (an SPDY or websocket data stream's Close is a half-close).
type clientStream struct {
	io.Reader                // what the client sends
	w         *io.PipeWriter // what the client receives
}

func (c clientStream) Write(p []byte) (int, error) { return c.w.Write(p) }
func (c clientStream) Close() error                { return c.w.Close() }

// podServer listens on the test's loopback and runs serve on the first connection.
func podServer(t *testing.T, serve func(c *net.TCPConn)) *net.TCPConn {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		serve(c.(*net.TCPConn))
	}()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn)
}

// runForward runs forward and returns what the client received and forward's result.
func runForward(t *testing.T, stream clientStream, received *io.PipeReader, conn *net.TCPConn) (string, error) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- forward(stream, conn) }()
	got := make(chan string, 1)
	go func() { b, _ := io.ReadAll(received); got <- string(b) }()
	select {
	case out := <-got:
		select {
		case err := <-errc:
			return out, err
		case <-time.After(10 * time.Second):
			t.Fatal("forward did not return after the client's stream ended")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client's stream did not end within 10s")
	}
	return "", nil
}

// TestForwardHalfClose: a client that sends a request and then half-closes still gets the pod's
// answer, which a server reading until EOF only writes once it saw the half-close; then the
// client's stream ends.
func TestForwardHalfClose(t *testing.T) {
	conn := podServer(t, func(c *net.TCPConn) {
		req, _ := io.ReadAll(c) // until the client's half-close arrives
		c.Write(bytes.ToUpper(req))
	})
	received, w := io.Pipe()
	stream := clientStream{Reader: strings.NewReader("hello through the pod's loopback"), w: w}
	out, err := runForward(t, stream, received, conn)
	if err != nil {
		t.Fatalf("forward: %v", err)
	}
	if out != "HELLO THROUGH THE POD'S LOOPBACK" {
		t.Fatalf("client received %q, want the pod's upper-cased echo", out)
	}
}

// TestForwardPodEndsFirst: when the pod's server closes the connection, the client's stream ends
// with what the server wrote, although the client never stops sending.
func TestForwardPodEndsFirst(t *testing.T) {
	conn := podServer(t, func(c *net.TCPConn) { c.Write([]byte("bye")) })
	received, w := io.Pipe()
	idle, _ := io.Pipe() // the client sends nothing and never closes
	out, err := runForward(t, clientStream{Reader: idle, w: w}, received, conn)
	if err != nil {
		t.Fatalf("forward: %v", err)
	}
	if out != "bye" {
		t.Fatalf("client received %q, want %q", out, "bye")
	}
}

// upperOnce accepts one connection on l, reads it until EOF and answers it upper-cased.
func upperOnce(l net.Listener) {
	c, err := l.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	req, _ := io.ReadAll(c)
	c.Write(bytes.ToUpper(req))
}

// forwardVia runs s.portForward to port of pod with a client that sends msg and half-closes,
// and returns what the client received.
func forwardVia(t *testing.T, s *Server, pod string, port int, msg string) (string, error) {
	t.Helper()
	received, w := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		err := s.portForward(context.Background(), pod, int32(port), clientStream{Reader: strings.NewReader(msg), w: w})
		w.CloseWithError(err)
		errc <- err
	}()
	got, _ := io.ReadAll(received)
	return string(got), <-errc
}

// TestPortForwardEntersPodNetns (root): the forward reaches a server that listens only on ::1
// inside the pod's own network namespace (127.0.0.1 is refused there first), while the same
// port in the runtime's namespace has nothing; a host-network pod is reached in the runtime's
// namespace; a pod that is not ready is refused with its id.
func TestPortForwardEntersPodNetns(t *testing.T) {
	testgate.RequireRoot(t)
	s := newTestServer(t)
	nsPath := filepath.Join(t.TempDir(), "pod.netns")
	if err := netns.New(nsPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Remove(nsPath) })
	var l net.Listener
	err := netns.Do(nsPath, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		l, err = net.Listen("tcp6", "[::1]:0")
		return err
	})
	if err != nil {
		t.Fatalf("listen inside the pod's namespace: %v", err)
	}
	defer l.Close()
	go upperOnce(l)
	port := l.Addr().(*net.TCPAddr).Port
	for _, a := range []string{"127.0.0.1", "::1"} {
		if c, err := net.Dial("tcp", net.JoinHostPort(a, strconv.Itoa(port))); err == nil {
			c.Close()
			t.Skipf("port %d is in use in the test's own namespace too; the test proves nothing", port)
		}
	}
	sh := newFakeShim()
	addPod(t, s, podA, sh)
	s.mu.Lock()
	s.sandboxes[podA].NetNS = nsPath
	s.mu.Unlock()
	got, err := forwardVia(t, s, podA, port, "inside the pod")
	if err != nil || got != "INSIDE THE POD" {
		t.Fatalf("forward into the pod's namespace: %q, %v; want %q", got, err, "INSIDE THE POD")
	}

	// A host-network pod: the runtime's own namespace.
	hl, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hl.Close()
	go upperOnce(hl)
	const hostPod = "bbbb0000000000000000000000000000000000000000000000000000000000b1"
	addPod(t, s, hostPod, sh)
	s.mu.Lock()
	s.sandboxes[hostPod].HostNetwork = true
	s.mu.Unlock()
	got, err = forwardVia(t, s, hostPod, hl.Addr().(*net.TCPAddr).Port, "on the node")
	if err != nil || got != "ON THE NODE" {
		t.Fatalf("forward for a host-network pod: %q, %v; want %q", got, err, "ON THE NODE")
	}

	s.mu.Lock()
	s.sandboxes[podA].Ready = false
	s.mu.Unlock()
	if _, err := forwardVia(t, s, podA, port, "x"); err == nil || !strings.Contains(err.Error(), podA) || !strings.Contains(err.Error(), "not ready") {
		t.Fatalf("forward to a stopped pod: %v, want an error naming %s as not ready", err, podA)
	}
}
