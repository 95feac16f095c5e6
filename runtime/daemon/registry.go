package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"

	"github.com/google/go-containerregistry/pkg/authn"

	"ingot.dev/ingot/runtime/config"
	"ingot.dev/ingot/runtime/images"
)

// registryHosts turns containerd's registry settings (mirrors, hosts.toml, TLS, auth) into the
// image puller's endpoints.
type registryHosts struct{ reg *config.Registry }

func (h registryHosts) Endpoints(host string) ([]images.Endpoint, error) {
	hc, err := h.reg.Hosts(host)
	if err != nil {
		return nil, err
	}
	var out []images.Endpoint
	for _, e := range hc.Endpoints {
		u, err := url.Parse(e.URL())
		if err != nil {
			return nil, fmt.Errorf("registry endpoint %s: %w", e.URL(), err)
		}
		ep := images.Endpoint{URL: u}
		if e.Capabilities&config.CapPull != 0 {
			ep.Capabilities |= images.CapPull
		}
		if e.Capabilities&config.CapResolve != 0 {
			ep.Capabilities |= images.CapResolve
		}
		if e.Scheme == "https" && (len(e.CAFiles) > 0 || len(e.Clients) > 0 || e.SkipVerify) {
			tc, err := tlsConfig(e)
			if err != nil {
				return nil, err
			}
			ep.TLS = tc
		}
		if a := e.Auth; a != nil {
			ep.Auth = authn.FromConfig(authn.AuthConfig{Username: a.Username, Password: a.Password, Auth: a.Auth, IdentityToken: a.IdentityToken})
		}
		out = append(out, ep)
	}
	return out, nil
}

func tlsConfig(e config.Endpoint) (*tls.Config, error) {
	tc := &tls.Config{InsecureSkipVerify: e.SkipVerify, MinVersion: tls.VersionTLS12}
	if len(e.CAFiles) > 0 {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		for _, f := range e.CAFiles {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("registry %s: ca file: %w", e.Host, err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("registry %s: ca file %s holds no PEM certificate", e.Host, f)
			}
		}
		tc.RootCAs = pool
	}
	for _, c := range e.Clients {
		key := c.Key
		if key == "" {
			key = c.Cert
		}
		cert, err := tls.LoadX509KeyPair(c.Cert, key)
		if err != nil {
			return nil, fmt.Errorf("registry %s: client certificate %s: %w", e.Host, c.Cert, err)
		}
		tc.Certificates = append(tc.Certificates, cert)
	}
	return tc, nil
}
