package shim

import (
	"bufio"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// syncBuffer is an io.Writer safe to read while a copy writes to it.
type syncBuffer struct {
	ch chan string
}

func (b *syncBuffer) Write(p []byte) (int, error) { b.ch <- string(p); return len(p), nil }

// TestAttachStream drives an attach through the shim's socket against a container with no
// process behind it: what the container writes (to its fanout, as the log copy does) reaches the
// client; what the client types reaches the container's stdin; stdin_once closes the container's
// stdin when the client's input ends; the container's exit ends the attach with its status.
func TestAttachStream(t *testing.T) {
	s, client, _ := startServer(t)
	exit := addRunning(s, "sh")
	c, _ := s.get("sh")
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdinR.Close()
	c.stdin, c.stdinOnce = stdinW, true

	inR, inW := io.Pipe()
	out := &syncBuffer{ch: make(chan string, 16)}
	type result struct {
		ex     Exit
		exited bool
		err    error
	}
	done := make(chan result, 1)
	go func() {
		ex, exited, err := client.Attach(context.Background(), "sh", Streams{In: inR, Out: out})
		done <- result{ex, exited, err}
	}()
	// The attach is in place once the fanout has a sink.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.out[0].mu.Lock()
		n := len(c.out[0].sinks)
		c.out[0].mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the attach never registered its output")
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.out[0].Write([]byte("hello from the container\n"))
	select {
	case got := <-out.ch:
		if got != "hello from the container\n" {
			t.Fatalf("client got %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the container's output did not reach the client")
	}
	io.WriteString(inW, "typed\n")
	line, err := bufio.NewReader(stdinR).ReadString('\n')
	if err != nil || line != "typed\n" {
		t.Fatalf("container stdin read %q, %v", line, err)
	}
	inW.Close() // the client's input ends: stdin_once closes the container's stdin
	if rest, err := io.ReadAll(stdinR); err != nil || len(rest) != 0 {
		t.Fatalf("container stdin after the client's EOF: %q, %v (want EOF)", rest, err)
	}
	exit(7)
	select {
	case r := <-done:
		if r.err != nil || !r.exited || r.ex.Code != 7 {
			t.Fatalf("Attach = %+v, want the exit with code 7", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the container's exit did not end the attach")
	}
}

// TestStreamErrors: a stream for a container the shim does not have, or one that has exited,
// fails with the reason; net/rpc on the same socket still works after stream connections.
func TestStreamErrors(t *testing.T) {
	s, client, _ := startServer(t)
	_, _, err := client.Attach(context.Background(), "nobody", Streams{Out: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "container nobody") {
		t.Fatalf("attach to a missing container: %v", err)
	}
	exit := addRunning(s, "done")
	exit(0)
	if _, err := client.ExecStream(context.Background(), "done", []byte(`{"args":["true"]}`), Streams{Out: io.Discard}); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("exec in an exited container: %v", err)
	}
	if st, err := client.State("done"); err != nil || !st.Exited {
		t.Fatalf("State after stream connections: %+v, %v", st, err)
	}
}
