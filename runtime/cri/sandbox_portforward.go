package cri

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/netsetup/netns"
	"ingot.dev/ingot/runtime/errdefs"
)

// PortForward hands out a URL on the streaming server for forwarding connections to ports of a
// ready pod; the connections themselves arrive there (portForward). The CRI proto leaves the
// ports optional: clients name them again per stream.
func (s *Server) PortForward(ctx context.Context, r *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	sb, err := s.sandbox(r.GetPodSandboxId())
	if err != nil {
		return nil, s.grpcErr("PortForward", err)
	}
	for _, p := range r.GetPort() {
		if p <= 0 || p > 65535 {
			return nil, s.grpcErr("PortForward", fmt.Errorf("port-forward to pod %s: port %d is outside 1-65535: %w", sb.ID, p, errdefs.ErrInvalid))
		}
	}
	s.mu.Lock()
	ready := sb.Ready
	s.mu.Unlock()
	if !ready {
		return nil, s.grpcErr("PortForward", fmt.Errorf("pod sandbox %s is not ready: %w", sb.ID, errdefs.ErrPrecondition))
	}
	ss := s.streamServer()
	if ss == nil {
		return nil, s.grpcErr("PortForward", fmt.Errorf("port-forward to pod %s: the streaming server is not running: %w", sb.ID, errdefs.ErrPrecondition))
	}
	// The full id: the URL outlives the request and a prefix may become ambiguous meanwhile.
	resp, err := ss.lib.GetPortForward(&runtimeapi.PortForwardRequest{PodSandboxId: sb.ID, Port: r.GetPort()})
	if err != nil {
		return nil, s.grpcErr("PortForward", err, "pod", sb.ID)
	}
	return resp, nil
}

// portForward connects to port on the pod's loopback, inside the pod's network namespace (a
// host-network pod: the runtime's own), and copies between that connection and the client's
// stream until one side ends. The streaming server calls it for every forwarded connection.
func (s *Server) portForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	if port <= 0 || port > 65535 {
		return fmt.Errorf("port-forward to pod %s: port %d is outside 1-65535: %w", podID, port, errdefs.ErrInvalid)
	}
	sb, err := s.sandbox(podID)
	if err != nil {
		return fmt.Errorf("port-forward: %w", err)
	}
	s.mu.Lock()
	ready, hostNet, nsPath, pause := sb.Ready, sb.HostNetwork, sb.NetNS, sb.PausePid
	s.mu.Unlock()
	if !ready {
		return fmt.Errorf("port-forward to pod %s: the pod sandbox is not ready: %w", sb.ID, errdefs.ErrPrecondition)
	}
	var conn *net.TCPConn
	dial := func() error {
		var err error
		conn, err = dialLoopback(ctx, port)
		return err
	}
	switch {
	case hostNet:
		err = dial()
	case nsPath != "":
		err = netns.Do(nsPath, dial)
	case pause > 0:
		// A pod without the pod network has the namespace its pause process made, loopback only.
		err = netns.Do(fmt.Sprintf("/proc/%d/ns/net", pause), dial)
	default:
		err = fmt.Errorf("the pod has no network namespace: %w", errdefs.ErrPrecondition)
	}
	if err != nil {
		return fmt.Errorf("port-forward to pod %s port %d: %w", sb.ID, port, err)
	}
	s.log.Debug("port-forward connected", "pod", sb.ID, "port", port, "to", conn.RemoteAddr().String())
	if err := forward(stream, conn); err != nil {
		return fmt.Errorf("port-forward to pod %s port %d: %w", sb.ID, port, err)
	}
	return nil
}

// dialLoopback connects to port on 127.0.0.1, else on ::1, as containerd does: one after the
// other, in the calling goroutine, because the caller runs on a thread inside the pod's network
// namespace and a parallel (happy-eyeballs) dial would run elsewhere. The socket is created here,
// so it stays in that namespace after the thread is gone.
func dialLoopback(ctx context.Context, port int32) (*net.TCPConn, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	p := strconv.Itoa(int(port))
	c4, err4 := d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", p))
	if err4 == nil {
		return c4.(*net.TCPConn), nil
	}
	c6, err6 := d.DialContext(ctx, "tcp6", net.JoinHostPort("::1", p))
	if err6 == nil {
		return c6.(*net.TCPConn), nil
	}
	return nil, errors.Join(err4, err6)
}

// forward copies between the client's stream and the connection into the pod. When the client
// is done sending (its stream reads EOF) the pod gets a half-close and its answer still flows
// back; when the pod's side ends, so does the forwarding: the stream is closed, which the client
// reads as the end of the connection. An error on the client's stream (a reset) ends both.
func forward(stream io.ReadWriteCloser, conn *net.TCPConn) error {
	defer conn.Close()
	defer stream.Close()
	up := make(chan error, 1)   // client → pod
	down := make(chan error, 1) // pod → client
	go func() {
		_, err := io.Copy(conn, stream)
		if err == nil {
			err = conn.CloseWrite()
		}
		up <- err
	}()
	go func() {
		_, err := io.Copy(stream, conn)
		down <- err
	}()
	for {
		select {
		case err := <-up:
			if err != nil {
				return fmt.Errorf("from the client: %w", err)
			}
			up = nil // half-closed: wait for the pod's answer
		case err := <-down:
			if err != nil {
				return fmt.Errorf("to the client: %w", err)
			}
			return nil
		}
	}
}
