package cri

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"
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
