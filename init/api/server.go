// Package api is the node API that PID 1 serves: gRPC (service ingot.node.v1.Node, package
// apiv1) over mutual TLS, on TCP port 50000 unless the node config's [api] table names another.
// A node whose node config has no [api] certificate does not listen at all.
//
// Every client presents a certificate that chains to [api].client_ca and carries exactly one
// role in its Organization: admin or reader (`ingot pki client NAME --role …` makes them).
// Readers look — version, status, logs, kernel log, images, containers — and only admins act:
// reboot, power off, pull, remove an image, upgrade, roll back. Every admin call is one console
// line naming the client.
//
// Image and container calls are the seed's `ctr` workflows answered through the node's own CRI
// runtime on its socket, so they see exactly what the kubelet sees.
package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"ingot.dev/ingot/init/api/apiv1"
)

// TLS is the node API's identity: its certificate and key (PEM) and the CA (PEM) its clients'
// certificates must chain to.
type TLS struct {
	Cert, Key, ClientCA []byte
}

// Config returns the server's TLS configuration: TLS 1.3 only, a client certificate required
// and verified against ClientCA for client authentication.
func (t TLS) Config() (*tls.Config, error) {
	kp, err := tls.X509KeyPair(t.Cert, t.Key)
	if err != nil {
		return nil, fmt.Errorf("node API certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(t.ClientCA) {
		return nil, errors.New("node API client CA: no PEM certificate")
	}
	return &tls.Config{
		Certificates: []tls.Certificate{kp},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// Server is the node API. Node supplies what only PID 1 knows; the rest it finds on the node.
type Server struct {
	log  *slog.Logger
	node Node
	grpc *grpc.Server
	cri  cri
}

// New returns a server for node over tc (TLS.Config's result).
func New(log *slog.Logger, tc *tls.Config, node Node) *Server {
	node.defaults()
	s := &Server{log: log, node: node}
	s.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tc)),
		grpc.ForceServerCodecV2(apiv1.Codec{}),
		grpc.ChainUnaryInterceptor(s.authorizeUnary),
		grpc.ChainStreamInterceptor(s.authorizeStream),
	)
	s.grpc.RegisterService(&apiv1.ServiceDesc, &handler{s: s})
	return s
}

// Listen opens the API's port on every address of the node.
func Listen(port int) (net.Listener, error) {
	if port == 0 {
		port = apiv1.DefaultPort
	}
	ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return nil, fmt.Errorf("node API: listen on port %d: %w", port, err)
	}
	return ln, nil
}

// Serve answers on ln until Stop.
func (s *Server) Serve(ln net.Listener) error { return s.grpc.Serve(ln) }

// Stop closes the listener and every connection.
func (s *Server) Stop() { s.grpc.Stop() }

// client is who is calling: the verified certificate's common name and role.
type client struct {
	name, role string
}

func (c client) String() string { return fmt.Sprintf("%s (%s)", c.name, c.role) }

type clientKey struct{}

// authorize checks that the caller's verified certificate carries a role that may call method.
// The TLS handshake already refused clients without a certificate or with one from another CA.
func (s *Server) authorize(ctx context.Context, fullMethod string) (context.Context, error) {
	method := strings.TrimPrefix(fullMethod, "/"+apiv1.Service+"/")
	need, ok := apiv1.Methods[method]
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "node API has no method %s", fullMethod)
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "no peer")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil, status.Error(codes.Unauthenticated, "no verified client certificate")
	}
	cert := info.State.VerifiedChains[0][0]
	role, err := apiv1.RoleOf(cert)
	if err != nil {
		return nil, status.Error(codes.PermissionDenied, err.Error())
	}
	c := client{name: cert.Subject.CommonName, role: role}
	if need == apiv1.RoleAdmin && role != apiv1.RoleAdmin {
		s.log.Warn("node API call refused", "client", c.name, "role", role, "method", method, "from", p.Addr.String())
		return nil, status.Errorf(codes.PermissionDenied, "client %q has role %s; %s needs %s", c.name, role, method, need)
	}
	if need == apiv1.RoleAdmin {
		s.log.Info("node API call", "client", c.name, "method", method, "from", p.Addr.String())
	}
	return context.WithValue(ctx, clientKey{}, c), nil
}

func (s *Server) authorizeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := s.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

type authorizedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a authorizedStream) Context() context.Context { return a.ctx }

func (s *Server) authorizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := s.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, authorizedStream{ss, ctx})
}

func callerOf(ctx context.Context) client {
	c, _ := ctx.Value(clientKey{}).(client)
	return c
}
