package cri

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"time"

	"k8s.io/cri-streaming/pkg/streaming"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

// StreamOptions configure the streaming server that serves Exec, Attach and PortForward: the
// CRI calls only hand out a URL on it, and the kubelet (or crictl) connects there for the
// streams. They are config.toml's stream_* keys.
type StreamOptions struct {
	Address     string        // IP to listen on; "" listens on every address
	Port        string        // "0": a free port chosen at start
	IdleTimeout time.Duration // a stream with no traffic for this long is closed; 0: the library's 4h
	// TLS serves https: with TLSCertFile and TLSKeyFile when both are set, else with a
	// self-signed certificate made at start, as containerd does.
	TLS                     bool
	TLSCertFile, TLSKeyFile string
}

// StreamServer is the running streaming server.
type StreamServer struct {
	lib  streaming.Server
	http *http.Server
	l    net.Listener
	base *url.URL
	done chan struct{}
}

// ServeStreams starts the streaming server and makes Exec, Attach and PortForward answer with
// URLs on it. It listens before returning, so the URLs always carry the real port (the library's
// own Start sets the port only once it listens, and a request racing it would get port 0).
func (s *Server) ServeStreams(o StreamOptions) (*StreamServer, error) {
	var tlsCfg *tls.Config
	if o.TLS {
		cert, err := streamCertificate(o)
		if err != nil {
			return nil, err
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	port := o.Port
	if port == "" {
		port = "0"
	}
	l, err := net.Listen("tcp", net.JoinHostPort(o.Address, port))
	if err != nil {
		return nil, fmt.Errorf("streaming server: listen on %s: %w", net.JoinHostPort(o.Address, port), err)
	}
	base := &url.URL{Scheme: "http", Host: l.Addr().String()}
	if tlsCfg != nil {
		base.Scheme = "https"
		l = tls.NewListener(l, tlsCfg)
	}
	cfg := streaming.DefaultConfig
	cfg.Addr = base.Host
	cfg.BaseURL = base
	cfg.TLSConfig = tlsCfg
	if o.IdleTimeout > 0 {
		cfg.StreamIdleTimeout = o.IdleTimeout
	}
	lib, err := streaming.NewServer(cfg, streamRuntime{s})
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("streaming server: %w", err)
	}
	ss := &StreamServer{lib: lib, l: l, base: base, done: make(chan struct{}),
		// Headers only: the streams themselves live as long as the idle timeout allows.
		http: &http.Server{Handler: lib, ReadHeaderTimeout: 30 * time.Second}}
	go func() {
		defer close(ss.done)
		if err := ss.http.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("streaming server stopped", "addr", base.Host, "err", err)
		}
	}()
	s.streams.Store(ss)
	return ss, nil
}

// URL is where the server serves: http(s)://host:port.
func (ss *StreamServer) URL() string { return ss.base.String() }

// Close stops accepting streams and closes the listener; streams already open end with their
// connections or the idle timeout. Exec, Attach and PortForward are refused from now on.
func (ss *StreamServer) Close() error {
	err := ss.http.Close()
	<-ss.done
	return err
}

// streamServer is the running streaming server, nil before ServeStreams or after its Close.
func (s *Server) streamServer() *StreamServer {
	ss := s.streams.Load()
	if ss == nil {
		return nil
	}
	select {
	case <-ss.done:
		return nil
	default:
		return ss
	}
}

// streamCertificate is the configured key pair, or a self-signed certificate for this node.
func streamCertificate(o StreamOptions) (tls.Certificate, error) {
	if o.TLSCertFile != "" || o.TLSKeyFile != "" {
		certPEM, err := os.ReadFile(o.TLSCertFile)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("streaming server: TLS certificate: %w", err)
		}
		keyPEM, err := os.ReadFile(o.TLSKeyFile)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("streaming server: TLS key: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("streaming server: TLS key pair %s and %s: %w", o.TLSCertFile, o.TLSKeyFile, err)
		}
		return cert, nil
	}
	return selfSignedCertificate(o.Address)
}

// selfSignedCertificate makes a certificate valid for a year for the node's hostname and every
// address of its interfaces (what containerd puts in its own), plus the listen address. It lives
// in memory only: a new one each start. The kubelet does not check it; a client that wants to
// can trust the certificate the server presents.
func selfSignedCertificate(listenIP string) (tls.Certificate, error) {
	host, err := os.Hostname()
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("streaming server: self-signed certificate: hostname: %w", err)
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("streaming server: self-signed certificate: interface addresses: %w", err)
	}
	var ips []net.IP
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			ips = append(ips, n.IP)
		}
	}
	if ip := net.ParseIP(listenIP); ip != nil && !ip.IsUnspecified() && !slices.ContainsFunc(ips, ip.Equal) {
		ips = append(ips, ip)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("streaming server: self-signed certificate: key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("streaming server: self-signed certificate: serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host},
		NotBefore:             now.Add(-time.Hour), // a node clock slightly behind its client's
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true, // its own issuer
		DNSNames:              []string{host},
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("streaming server: self-signed certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// streamRuntime is what the streaming server calls once a client connected to a URL.
type streamRuntime struct{ s *Server }

func (r streamRuntime) Exec(ctx context.Context, id string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return r.s.execStream(ctx, id, cmd, in, out, errw, tty, resize)
}

func (r streamRuntime) Attach(ctx context.Context, id string, in io.Reader, out, errw io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize) error {
	return r.s.attachStream(ctx, id, in, out, errw, tty, resize)
}

func (r streamRuntime) PortForward(ctx context.Context, podID string, port int32, stream io.ReadWriteCloser) error {
	return r.s.portForward(ctx, podID, port, stream)
}
