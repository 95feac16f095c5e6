package cluster

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"testing"
)

// connectVia sends the CONNECT the API server's egress dialer sends and returns the answer's
// status code and, on 200, the tunnel.
func connectVia(t *testing.T, sock, addr string) (int, net.Conn) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", addr)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatalf("CONNECT %s: %v", addr, err)
	}
	if resp.StatusCode != http.StatusOK {
		c.Close()
	}
	return resp.StatusCode, c
}

func TestKubeletProxy(t *testing.T) {
	dir := t.TempDir()
	// A "kubelet" forwarded to the host's loopback: it greets and echoes one line.
	kubelet, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer kubelet.Close()
	go func() {
		for {
			c, err := kubelet.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "kubelet of w1 got %s", line)
			}()
		}
	}()
	port := kubelet.Addr().(*net.TCPAddr).Port
	if err := AddKubelet(dir, "w1", Kubelet{Address: "10.0.2.16", Port: port}); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, FileKubeletProxySocket)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() {
		done <- (&KubeletProxy{StateDir: dir, Log: slog.New(slog.DiscardHandler)}).Serve(ctx, l)
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	// The API server asks for the node's InternalIP at the kubelet's port in the guest.
	code, c := connectVia(t, sock, "10.0.2.16:10250")
	if code != http.StatusOK {
		t.Fatalf("CONNECT 10.0.2.16:10250: %d, want 200", code)
	}
	fmt.Fprintf(c, "GET /pods\n")
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(got) != "kubelet of w1 got GET /pods\n" {
		t.Errorf("through the tunnel: %q, %v", got, err)
	}

	// An address it does not know, a node name, and the forward itself are refused: the
	// proxy must not open the host's other ports.
	for _, addr := range []string{"10.0.2.17:10250", "w1:10250", "127.0.0.1:" + strconv.Itoa(port)} {
		if code, _ := connectVia(t, sock, addr); code != http.StatusForbidden {
			t.Errorf("CONNECT %s: %d, want 403", addr, code)
		}
	}

	// A node added while the proxy runs is reached without a restart; one whose forward is
	// not listening answers 502.
	free, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	if err := AddKubelet(dir, "w3", Kubelet{Address: "10.0.2.18", Port: free}); err != nil {
		t.Fatal(err)
	}
	if code, _ := connectVia(t, sock, "10.0.2.18:10250"); code != http.StatusBadGateway {
		t.Errorf("CONNECT 10.0.2.18:10250 with nothing listening: %d, want 502", code)
	}

	// Two workers with one address could not be told apart.
	err = AddKubelet(dir, "w4", Kubelet{Address: "10.0.2.16", Port: free})
	if err == nil || err.Error() != "add kubelet w4: address 10.0.2.16 is node w1's already: each worker needs an InternalIP of its own" {
		t.Errorf("AddKubelet with w1's address: %v", err)
	}
	err = AddKubelet(dir, "w5", Kubelet{Address: "127.0.0.1", Port: free})
	if err == nil || err.Error() != `add kubelet w5: address "127.0.0.1": want the node's InternalIP` {
		t.Errorf("AddKubelet with a loopback address: %v", err)
	}
}

func TestForwardRules(t *testing.T) {
	if got, want := KubeletHostFwd(40001), "tcp:127.0.0.1:40001-:10250"; got != want {
		t.Errorf("KubeletHostFwd(40001) = %q, want %q", got, want)
	}
}
