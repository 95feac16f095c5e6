package images

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Capability is what an endpoint may be asked for, as in containerd's hosts.toml.
type Capability uint8

const (
	// CapPull allows fetching content by digest (blobs, manifests by digest).
	CapPull Capability = 1 << iota
	// CapResolve allows resolving a tag to a manifest.
	CapResolve
)

// Endpoint is one place a registry host's content can be fetched from: the registry itself or a
// mirror.
type Endpoint struct {
	// URL is the endpoint's scheme and host; "http" endpoints are plain HTTP (insecure
	// registries). A non-empty path replaces the API root "/v2" (containerd's override_path);
	// a mirror without override_path but with a path must therefore end in "/v2".
	URL *url.URL
	// TLS, when set, is used for https connections to URL's host (CAs, client certificates,
	// InsecureSkipVerify).
	TLS *tls.Config
	// Auth authenticates to this endpoint; nil is anonymous.
	Auth authn.Authenticator
	// Capabilities; zero means CapPull|CapResolve.
	Capabilities Capability
}

// Hosts says where to fetch a registry host's content from. host is the registry as written in
// the image reference, with Docker Hub named "docker.io". Endpoints are tried in order, each failure
// falling back to the next. An empty list means the default endpoint.
type Hosts interface {
	Endpoints(host string) ([]Endpoint, error)
}

// DefaultEndpoint is the endpoint used when no Hosts is configured: https://host, or plain http for
// loopback hosts (the in-process test registry), anonymous; Docker Hub is registry-1.docker.io.
func DefaultEndpoint(host string) Endpoint {
	scheme := "https"
	if isLoopback(host) {
		scheme = "http"
	}
	if host == "docker.io" {
		host = "registry-1.docker.io"
	}
	return Endpoint{URL: &url.URL{Scheme: scheme, Host: host}}
}

func isLoopback(host string) bool {
	h := host
	if sh, _, err := net.SplitHostPort(host); err == nil {
		h = sh
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// dockerHubHosts are the names under which the reference's own registry is Docker Hub.
var dockerHubHosts = map[string]bool{"docker.io": true, "index.docker.io": true, "registry-1.docker.io": true}

func sameRegistry(refHost, endpointHost string) bool {
	if refHost == endpointHost {
		return true
	}
	return dockerHubHosts[refHost] && dockerHubHosts[endpointHost]
}

// client talks to one endpoint for one repository during one pull.
type client struct {
	ep   Endpoint
	caps Capability
	repo name.Repository
	auth authn.Authenticator
	rt   *rewriteTransport
	once sync.Once
	http *http.Client
	err  error // the handshake's error: an endpoint that failed it is not asked again this pull
}

func newClient(ep Endpoint, ref reference, reqAuth authn.Authenticator) (*client, error) {
	if ep.URL == nil || ep.URL.Host == "" || (ep.URL.Scheme != "http" && ep.URL.Scheme != "https") {
		return nil, fmt.Errorf("%w: registry endpoint %v: want http(s)://host[/path]", ErrInvalid, ep.URL)
	}
	var opts []name.Option
	if ep.URL.Scheme == "http" {
		opts = append(opts, name.Insecure)
	}
	reg, err := name.NewRegistry(ep.URL.Host, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: registry endpoint %s: %v", ErrInvalid, ep.URL.Redacted(), err)
	}
	c := &client{ep: ep, caps: ep.Capabilities, repo: reg.Repo(ref.repo), auth: ep.Auth}
	if c.caps == 0 {
		c.caps = CapPull | CapResolve
	}
	if reqAuth != nil && sameRegistry(ref.host, ep.URL.Host) {
		c.auth = reqAuth
	}
	if c.auth == nil {
		c.auth = authn.Anonymous
	}
	base := remote.DefaultTransport.(*http.Transport)
	own := base.Clone()
	if ep.TLS != nil {
		own.TLSClientConfig = ep.TLS.Clone()
	}
	c.rt = &rewriteTransport{host: ep.URL.Host, scheme: ep.URL.Scheme, root: strings.TrimSuffix(ep.URL.Path, "/"), own: own, other: base.Clone()}
	return c, nil
}

// client returns an authenticated HTTP client, doing the registry handshake (ping, token) once.
func (c *client) client(ctx context.Context) (*http.Client, error) {
	c.once.Do(func() {
		t, err := transport.NewWithContext(ctx, c.repo.Registry, c.auth, c.rt, []string{c.repo.Scope(transport.PullScope)})
		if err != nil {
			c.err = fmt.Errorf("handshake: %w", err)
			return
		}
		c.http = &http.Client{Transport: t}
	})
	return c.http, c.err
}

// get fetches /v2/<repo>/<kind>/<ref> and returns the open body of a 200 response.
func (c *client) get(ctx context.Context, kind, ref string, accept string) (*http.Response, error) {
	hc, err := c.client(ctx)
	if err != nil {
		return nil, err
	}
	u := fmt.Sprintf("%s://%s/v2/%s/%s/%s", c.ep.URL.Scheme, c.ep.URL.Host, c.repo.RepositoryStr(), kind, ref)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}

func (c *client) close() {
	c.rt.own.CloseIdleConnections()
	c.rt.other.CloseIdleConnections()
}

// rewriteTransport sends requests for the endpoint's host with the endpoint's scheme, TLS and API
// root (go-containerregistry always builds https://host/v2/... URLs), and everything else (token
// servers, blob storage a registry redirects to) through an ordinary transport.
type rewriteTransport struct {
	host, scheme, root string
	own, other         *http.Transport
}

func (t *rewriteTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.host {
		return t.other.RoundTrip(req)
	}
	r := req.Clone(req.Context())
	r.URL.Scheme = t.scheme
	if t.root != "" && (r.URL.Path == "/v2" || strings.HasPrefix(r.URL.Path, "/v2/")) {
		r.URL.Path = t.root + strings.TrimPrefix(r.URL.Path, "/v2")
		r.URL.RawPath = ""
	}
	return t.own.RoundTrip(r)
}

// isNotFound reports whether err is a registry's 404.
func isNotFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}

// limitedBody reads at most limit bytes of a response body.
func limitedBody(resp *http.Response, limit int64) ([]byte, error) {
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: manifest larger than %d bytes", ErrInvalid, limit)
	}
	return b, nil
}
