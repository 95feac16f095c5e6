package cluster

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

// How the API server reaches kubelets. Each worker VM forwards one port on the host's loopback
// (a QEMU hostfwd, a different port per node) to its kubelet. The API server cannot be told
// that port through the node's addresses, and a kubelet refuses a loopback node IP. So the API
// server's "cluster" egress selector sends each connection to a kubelet — logs, exec, attach,
// port-forward, node proxy alike — through an HTTP CONNECT proxy on a unix socket in the state
// directory; with --kubelet-preferred-address-types=InternalIP it asks for "NODEIP:10250". The
// proxy looks the address up in kubelets.json and connects to 127.0.0.1 at that node's forwarded
// port. So every worker needs an InternalIP of its own (in QEMU's user network, a dhcpstart per
// VM, or a static address in its node config). An address the proxy does not know is refused,
// so it opens nothing else on the host.
//
// (Node names as Hostname addresses would need no distinct IPs, but the API server resolves a
// node's hostname before it proxies to the node (nodes/proxy), and the host cannot resolve
// worker names.)

// FileKubelets lists the kubelets the proxy reaches, a JSON object {"NODENAME": {"address":
// "10.0.2.16", "port": 40001}, …}. The proxy reads it for every connection, so nodes can be
// added while the cluster runs (AddKubelet).
const FileKubelets = "kubelets.json"

// FileKubeletProxySocket is the proxy's unix socket.
const FileKubeletProxySocket = "kubelet-proxy.sock"

// Kubelet is a worker's kubelet as the proxy knows it.
type Kubelet struct {
	// Address is the node's InternalIP, what the API server asks the proxy for.
	Address string `json:"address"`
	// Port is the kubelet's forwarded port on 127.0.0.1.
	Port int `json:"port"`
	// API is the node API's forwarded port on 127.0.0.1 (0: none). The proxy does not use it;
	// it is kept here so a worker booted again keeps its address.
	API int `json:"api,omitempty"`
}

// AddKubelet records that node name, whose InternalIP is k.Address, has its kubelet forwarded
// to 127.0.0.1:k.Port.
func AddKubelet(stateDir, name string, k Kubelet) error {
	ip := net.ParseIP(k.Address)
	if ip == nil || ip.IsLoopback() || ip.IsUnspecified() {
		return fmt.Errorf("add kubelet %s: address %q: want the node's InternalIP", name, k.Address)
	}
	if k.Port <= 0 || k.Port > 65535 {
		return fmt.Errorf("add kubelet %s: port %d out of range", name, k.Port)
	}
	m, err := readKubelets(stateDir)
	if err != nil {
		return err
	}
	for other, o := range m {
		if other != name && net.ParseIP(o.Address).Equal(ip) {
			return fmt.Errorf("add kubelet %s: address %s is node %s's already: each worker needs an InternalIP of its own", name, k.Address, other)
		}
	}
	m[name] = k
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeFile(filepath.Join(stateDir, FileKubelets), append(b, '\n'), 0o644)
}

func readKubelets(stateDir string) (map[string]Kubelet, error) {
	m := map[string]Kubelet{}
	b, err := os.ReadFile(filepath.Join(stateDir, FileKubelets))
	if errors.Is(err, os.ErrNotExist) {
		return m, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read kubelet ports: %w", err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("read kubelet ports %s: %w", filepath.Join(stateDir, FileKubelets), err)
	}
	return m, nil
}

// KubeletProxy is the CONNECT proxy described above.
type KubeletProxy struct {
	StateDir string
	Log      *slog.Logger
}

// Serve accepts connections on l until ctx ends.
func (p *KubeletProxy) Serve(ctx context.Context, l net.Listener) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("kubelet proxy: accept: %w", err)
		}
		wg.Go(func() { p.handle(ctx, c) })
	}
}

// target returns the loopback address that a CONNECT to hostport goes to.
func (p *KubeletProxy) target(hostport string) (string, error) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", fmt.Errorf("CONNECT %q: %w", hostport, err)
	}
	m, err := readKubelets(p.StateDir)
	if err != nil {
		return "", err
	}
	if ip := net.ParseIP(host); ip != nil {
		for _, k := range m {
			if net.ParseIP(k.Address).Equal(ip) {
				return net.JoinHostPort("127.0.0.1", strconv.Itoa(k.Port)), nil
			}
		}
	}
	return "", fmt.Errorf("CONNECT %s: no node with address %q in %s", hostport, host, FileKubelets)
}

func (p *KubeletProxy) handle(ctx context.Context, c net.Conn) {
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		p.Log.Warn("kubelet proxy: read request", "err", err)
		return
	}
	c.SetReadDeadline(time.Time{})
	if req.Method != http.MethodConnect {
		fmt.Fprintf(c, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	addr, err := p.target(req.RequestURI)
	if err != nil {
		p.Log.Warn("kubelet proxy: refused", "err", err)
		fmt.Fprintf(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
		return
	}
	var d net.Dialer
	up, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		p.Log.Warn("kubelet proxy: connect", "node", req.RequestURI, "addr", addr, "err", err)
		fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer up.Close()
	// Serve returns only when every tunnel has ended: end them when the proxy stops.
	stop := context.AfterFunc(ctx, func() { c.Close(); up.Close() })
	defer stop()
	if _, err := fmt.Fprintf(c, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	// The client speaks only after the 200, so nothing is buffered in br but what follows it.
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, br); closeWrite(up); done <- struct{}{} }()
	go func() { io.Copy(c, up); closeWrite(c); done <- struct{}{} }()
	<-done
	<-done
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// ServeKubeletProxy listens on the state directory's socket and serves until ctx ends.
func ServeKubeletProxy(ctx context.Context, stateDir string, log *slog.Logger) error {
	sock := filepath.Join(stateDir, FileKubeletProxySocket)
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		return fmt.Errorf("kubelet proxy: %w", err)
	}
	defer os.Remove(sock)
	// Only the API server (the same user) connects.
	if err := os.Chmod(sock, 0o600); err != nil {
		l.Close()
		return fmt.Errorf("kubelet proxy: %w", err)
	}
	return (&KubeletProxy{StateDir: stateDir, Log: log}).Serve(ctx, l)
}
