package kubelet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// The kubelet retries a failed join forever and says why in a stream of log lines an operator
// has to dig for. Before and while it joins, PID 1 checks the three things a join depends on and
// says, in one line, which of them is wrong: the API server answers, its certificate chains to
// the node config's CA, and it accepts the bootstrap token.

// Check is the outcome of one probe: OK, or one line saying what is wrong.
type Check struct {
	OK  bool
	Msg string
}

// csrPath is what a bootstrap token is for: a token the API server accepts may list the
// certificate signing requests (system:node-bootstrapper).
const csrPath = "/apis/certificates.k8s.io/v1/certificatesigningrequests?limit=1"

// Probe checks the API server of a bootstrap-token join: reachable, serving a certificate of the
// cluster CA, and accepting the token. timeout bounds each request.
func Probe(ctx context.Context, s *Setup, timeout time.Duration) Check {
	if s.Mode != Bootstrap {
		return Check{OK: true, Msg: "nothing to check for a " + string(s.Mode) + " join"}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(s.CA)) {
		return Check{Msg: "[kubernetes] ca holds no PEM certificate"}
	}
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			Proxy:             nil,
			DisableKeepAlives: true,
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(s.APIServer, "/")+csrPath, nil)
	if err != nil {
		return Check{Msg: fmt.Sprintf("[kubernetes] api_server %q: %v", s.APIServer, err)}
	}
	req.Header.Set("Authorization", "Bearer "+string(s.Token))
	resp, err := client.Do(req)
	if err != nil {
		return Check{Msg: describe(s.APIServer, err)}
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return Check{OK: true, Msg: fmt.Sprintf("API server %s reachable; its certificate and the bootstrap token are accepted", s.APIServer)}
	case http.StatusUnauthorized:
		return Check{Msg: fmt.Sprintf("API server %s refused the bootstrap token (expired, deleted or mistyped: check [kubernetes] bootstrap_token)", s.APIServer)}
	case http.StatusForbidden:
		return Check{Msg: fmt.Sprintf("API server %s accepted the bootstrap token but does not let it request certificates (no system:node-bootstrapper binding for its group)", s.APIServer)}
	default:
		return Check{Msg: fmt.Sprintf("API server %s answered %s to a bootstrap request", s.APIServer, resp.Status)}
	}
}

// describe turns a failed request into what the operator must fix.
func describe(server string, err error) string {
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var opErr *net.OpError
	var dnsErr *net.DNSError
	var notTLS tls.RecordHeaderError
	switch {
	case errors.As(err, &unknown):
		return fmt.Sprintf("API server %s presents a certificate not signed by the node config's CA (check [kubernetes] ca)", server)
	case errors.As(err, &hostname):
		return fmt.Sprintf("API server %s presents a certificate for another name: %v", server, hostname.Error())
	case errors.As(err, &invalid):
		return fmt.Sprintf("API server %s presents an invalid certificate: %v", server, invalid.Error())
	case errors.As(err, &notTLS):
		return fmt.Sprintf("API server %s does not answer with TLS: something else serves that address (check [kubernetes] api_server's port)", server)
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("cannot resolve the API server %s: %v", server, dnsErr.Error())
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET):
		// A forward or proxy in front of the API server (QEMU's guestfwd, a load balancer)
		// accepts the connection and ends it, closed or reset, when it reaches nothing behind
		// it: no TLS at all.
		return fmt.Sprintf("cannot reach the API server %s: the connection was closed before TLS was set up (is a forward or proxy in front of it reaching nothing?)", server)
	case errors.As(err, &opErr):
		return fmt.Sprintf("cannot reach the API server %s: %v", server, opErr.Err)
	case errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "Client.Timeout"):
		return fmt.Sprintf("the API server %s does not answer (timed out)", server)
	default:
		return fmt.Sprintf("API server %s: %v", server, err)
	}
}
