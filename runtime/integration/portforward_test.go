package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/internal/testgate"
)

// upperServer is a container command: busybox httpd listening on addr only, with a CGI script
// that answers a POST with its body upper-cased, so data goes both ways through a forward.
func upperServer(addr string) []string {
	return []string{"/bin/sh", "-c", "mkdir -p /www/cgi-bin && " +
		`printf '#!/bin/sh\necho Content-Type: text/plain\necho\nexec tr a-z A-Z\n' > /www/cgi-bin/upper && ` +
		"chmod 755 /www/cgi-bin/upper && exec httpd -f -p " + addr + " -h /www"}
}

// portForward runs `crictl port-forward pod local:remote` until the test ends and waits until it
// forwards; it returns the local address.
func (r *Runtime) portForward(t *testing.T, pod string, remote int) string {
	t.Helper()
	local := freeAddr(t)
	_, lport, _ := net.SplitHostPort(local)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, r.crictl, "--config", filepath.Join(r.Dir, "crictl.yaml"), "port-forward", pod, fmt.Sprintf("%s:%d", lport, remote))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "Forwarding from 127.0.0.1:"+lport) {
				ready <- true
			}
		}
		close(ready)
	}()
	select {
	case ok := <-ready:
		if !ok {
			cmd.Wait()
			t.Fatalf("crictl port-forward %s %s:%d ended: %s\ndaemon log:\n%s", pod, lport, remote, stderr.String(), tail(r.Log(), 3000))
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("crictl port-forward did not start forwarding within 30s: %s", stderr.String())
	}
	return local
}

// postUpper sends body to the upper-casing server through addr and returns the answer.
func postUpper(addr, body string) (string, error) {
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Post("http://"+addr+"/cgi-bin/upper", "text/plain", strings.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", resp.Status, data)
	}
	return string(data), nil
}

// unusedOnHost picks a port nothing on the host's loopback listens on, so an answer through
// a forward to it can only come from inside the pod.
func unusedOnHost(t *testing.T) int {
	t.Helper()
	_, p, _ := net.SplitHostPort(freeAddr(t))
	var port int
	fmt.Sscan(p, &port)
	if c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", p)); err == nil {
		c.Close()
		t.Fatalf("something listens on the host's 127.0.0.1:%d", port)
	}
	return port
}

// TestPortForward forwards with crictl port-forward to a server that listens only on 127.0.0.1
// inside the pod's network namespace (nothing listens on that port on the host), so an answer
// proves the runtime connected from inside the pod. Several requests, each on a new forwarded
// connection, carry 256 KiB each way. Once the pod is stopped, and for a pod that never existed,
// port-forward fails with the CRI's error naming the pod.
func TestPortForward(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := Start(t)
	r.MustCrictl("pull", busybox)
	port := unusedOnHost(t)
	pod := r.MustCrictl("runp", podConfig(t, r, "pf"))
	ctr := r.MustCrictl("create", pod, ctrConfig(t, r, "upper", upperServer(fmt.Sprintf("127.0.0.1:%d", port))...), podConfig(t, r, "pf"))
	r.MustCrictl("start", ctr)
	waitFor(t, "httpd listening in the pod", 30*time.Second, func() bool {
		out, _ := r.Crictl("exec", "-s", ctr, "netstat", "-ltn")
		return strings.Contains(out, fmt.Sprintf("127.0.0.1:%d", port))
	})
	local := r.portForward(t, pod, port)
	body := strings.Repeat("through the pod's own loopback. ", 8192) // 256 KiB
	for i := range 3 {
		got, err := postUpper(local, body)
		if err != nil {
			t.Fatalf("request %d through the forward: %v\ndaemon log:\n%s", i, err, tail(r.Log(), 3000))
		}
		if got != strings.ToUpper(body) {
			t.Fatalf("request %d: answer of %d bytes, want the %d bytes sent, upper-cased (starts %q)", i, len(got), len(body), got[:min(len(got), 80)])
		}
	}

	// A client that half-closes after its request still gets the answer of a server that reads
	// until EOF before it writes (busybox nc running tr).
	hcPort := unusedOnHost(t)
	hc := r.MustCrictl("create", pod, ctrConfig(t, r, "halfclose", "nc", "-l", "-p", fmt.Sprint(hcPort), "-e", "tr", "a-z", "A-Z"), podConfig(t, r, "pf"))
	r.MustCrictl("start", hc)
	waitFor(t, "nc listening in the pod", 30*time.Second, func() bool {
		out, _ := r.Crictl("exec", "-s", hc, "netstat", "-ltn")
		return strings.Contains(out, fmt.Sprintf(":%d ", hcPort))
	})
	hcLocal := r.portForward(t, pod, hcPort)
	c, err := net.Dial("tcp", hcLocal)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, body); err != nil {
		t.Fatal(err)
	}
	c.(*net.TCPConn).CloseWrite()
	if got, err := io.ReadAll(c); err != nil || string(got) != strings.ToUpper(body) {
		t.Fatalf("answer after a half-close: %d bytes, %v; want the %d bytes sent, upper-cased", len(got), err, len(body))
	}

	r.MustCrictl("stopp", pod)
	_, err = r.Crictl("port-forward", pod, fmt.Sprint(port))
	if err == nil || !strings.Contains(err.Error(), "pod sandbox "+pod+" is not ready") {
		t.Fatalf("port-forward to a stopped pod: %v, want an error saying pod sandbox %s is not ready", err, pod)
	}
	const missing = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	_, err = r.Crictl("port-forward", missing, fmt.Sprint(port))
	if err == nil || !strings.Contains(err.Error(), missing) || !strings.Contains(err.Error(), "NotFound") {
		t.Fatalf("port-forward to a pod that does not exist: %v, want NotFound naming %s", err, missing)
	}
}

// TestPortForwardHostNetwork forwards to a host-network pod's server on the node's loopback: the
// runtime connects from the node's namespace as it is.
func TestPortForwardHostNetwork(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := Start(t)
	r.MustCrictl("pull", busybox)
	port := unusedOnHost(t)
	podCfg := writeJSON(t, r.Dir, "pf-host-pod.json", map[string]any{
		"metadata":      map[string]any{"name": "pf-host", "namespace": "default", "uid": "pf-host-uid"},
		"log_directory": filepath.Join(r.Dir, "logs", "pf-host"),
		"linux":         map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2}}}, // NODE
	})
	pod := r.MustCrictl("runp", podCfg)
	ctr := r.MustCrictl("create", pod, ctrConfig(t, r, "upper", upperServer(fmt.Sprintf("127.0.0.1:%d", port))...), podCfg)
	r.MustCrictl("start", ctr)
	waitFor(t, "httpd listening on the node's loopback", 30*time.Second, func() bool {
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	local := r.portForward(t, pod, port)
	got, err := postUpper(local, "host network")
	if err != nil || got != "HOST NETWORK" {
		t.Fatalf("through the forward to the host-network pod: %q, %v; want %q\ndaemon log:\n%s", got, err, "HOST NETWORK", tail(r.Log(), 3000))
	}
}

// TestPortForwardTLS: with enable_tls_streaming the daemon logs an https streaming URL with the
// port it listens on, and crictl port-forward works through it (crictl, like the kubelet, takes
// the self-signed certificate). A key pair that cannot be read stops the daemon at start with
// an error naming the file.
func TestPortForwardTLS(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	const tlsOn = "[plugins.\"io.containerd.grpc.v1.cri\"]\n  enable_tls_streaming = true\n"
	r := StartWith(t, func(r *Runtime) { appendConfig(t, r, tlsOn) })
	if log := r.Log(); !regexp.MustCompile(`streaming=https://127\.0\.0\.1:[1-9][0-9]*`).MatchString(log) {
		t.Fatalf("daemon log names no https streaming URL with its port:\n%s", log)
	}
	r.MustCrictl("pull", busybox)
	port := unusedOnHost(t)
	pod := r.MustCrictl("runp", podConfig(t, r, "pf-tls"))
	ctr := r.MustCrictl("create", pod, ctrConfig(t, r, "upper", upperServer(fmt.Sprintf("127.0.0.1:%d", port))...), podConfig(t, r, "pf-tls"))
	r.MustCrictl("start", ctr)
	waitFor(t, "httpd listening in the pod", 30*time.Second, func() bool {
		out, _ := r.Crictl("exec", "-s", ctr, "netstat", "-ltn")
		return strings.Contains(out, fmt.Sprintf("127.0.0.1:%d", port))
	})
	local := r.portForward(t, pod, port)
	if got, err := postUpper(local, "over tls"); err != nil || got != "OVER TLS" {
		t.Fatalf("through the TLS forward: %q, %v; want %q\ndaemon log:\n%s", got, err, "OVER TLS", tail(r.Log(), 3000))
	}

	good, err := os.ReadFile(r.Config)
	if err != nil {
		t.Fatal(err)
	}
	r.Kill()
	missing := filepath.Join(r.Dir, "no-such-stream.key")
	appendConfig(t, r, fmt.Sprintf("[plugins.\"io.containerd.grpc.v1.cri\".x509_key_pair_streaming]\n  tls_cert_file = %q\n  tls_key_file = %q\n",
		filepath.Join(r.Dir, "no-such-stream.crt"), missing))
	if out := r.RestartFails(); !strings.Contains(out, "no-such-stream.crt") || !strings.Contains(out, "no such file") {
		t.Fatalf("start with a missing streaming certificate printed:\n%s\nwant an error naming the file", out)
	}
	// The daemon comes back for the cleanup with the good file.
	if err := os.WriteFile(r.Config, good, 0o644); err != nil {
		t.Fatal(err)
	}
	r.Restart()
}
