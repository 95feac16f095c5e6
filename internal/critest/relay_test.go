package critest

import (
	"bufio"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/netsetup/netns"
)

// TestRelay: a client inside a private network namespace reaches a server on the host's
// loopback through the relay, which is not listening on the host's loopback itself.
func TestRelay(t *testing.T) {
	testgate.RequireRoot(t)
	srv, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			go func() { // echo one line, then the client's EOF ends it
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()

	ns := filepath.Join(t.TempDir(), "node.netns")
	if err := nodeNetNS(ns); err != nil {
		t.Fatal(err)
	}
	defer netns.Remove(ns)
	r, err := startRelay(ns, srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			r.Close()
		}
	}()

	var held net.Conn // a connection left open, which Close must end
	err = netns.Do(ns, func() error {
		for _, msg := range []string{"first\n", "second\n"} {
			c, err := net.DialTimeout("tcp", r.Addr(), 5*time.Second)
			if err != nil {
				return err
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, msg)
			got, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || got != msg {
				t.Errorf("through the relay: %q, %v; want %q", got, err, msg)
			}
			if msg == "second\n" {
				held = c
				continue
			}
			c.(*net.TCPConn).CloseWrite()
			if rest, err := io.ReadAll(c); err != nil || len(rest) != 0 {
				t.Errorf("after EOF: %q, %v", rest, err)
			}
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	if c, err := net.DialTimeout("tcp", r.Addr(), time.Second); err == nil {
		c.Close()
		t.Errorf("relay %s reachable from the host's network namespace", r.Addr())
	}

	closed = true
	done := make(chan error, 1)
	go func() { done <- r.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the connection in flight")
	}
	held.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := held.Read(make([]byte, 1)); err == nil {
		t.Error("the connection in flight survived Close")
	}
}
