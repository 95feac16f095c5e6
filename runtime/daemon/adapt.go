package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"os"

	"github.com/google/go-containerregistry/pkg/authn"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/config"
	"ingot.dev/ingot/runtime/cri"
	"ingot.dev/ingot/runtime/images"
	"ingot.dev/ingot/runtime/oci"
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

// imageAdapter presents the image store to the CRI server.
type imageAdapter struct{ s *images.Store }

func toCRI(img images.Image) cri.Image {
	c := img.Config
	return cri.Image{ID: img.ID, RepoTags: img.RepoTags, RepoDigests: img.RepoDigests, Size: uint64(img.Size),
		Config: oci.ImageConfig{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, User: c.User,
			WorkingDir: c.WorkingDir, StopSignal: c.StopSignal}}
}

func (a imageAdapter) Pull(ctx context.Context, ref string, auth *runtimeapi.AuthConfig) (cri.Image, error) {
	var opts images.PullOptions
	if auth != nil && (auth.GetUsername() != "" || auth.GetAuth() != "" || auth.GetIdentityToken() != "" || auth.GetRegistryToken() != "") {
		opts.Auth = authn.FromConfig(authn.AuthConfig{Username: auth.GetUsername(), Password: auth.GetPassword(),
			Auth: auth.GetAuth(), IdentityToken: auth.GetIdentityToken(), RegistryToken: auth.GetRegistryToken()})
	}
	img, err := a.s.Pull(ctx, ref, opts)
	if err != nil {
		return cri.Image{}, err
	}
	return toCRI(img), nil
}

func (a imageAdapter) Get(ref string) (cri.Image, error) {
	img, err := a.s.Get(ref)
	if err != nil {
		return cri.Image{}, err
	}
	return toCRI(img), nil
}

func (a imageAdapter) List() ([]cri.Image, error) {
	imgs, err := a.s.List()
	if err != nil {
		return nil, err
	}
	out := make([]cri.Image, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, toCRI(img))
	}
	return out, nil
}

func (a imageAdapter) Remove(ref string) error            { return a.s.Remove(ref) }
func (a imageAdapter) Layers(id string) ([]string, error) { return a.s.Layers(id) }
func (a imageAdapter) FsInfo() (string, uint64, uint64, error) {
	used, inodes, mp, err := a.s.FsInfo()
	return mp, used, inodes, err
}
