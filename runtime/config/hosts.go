package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// HostConfig is how to reach one registry host namespace (the host[:port] of
// an image reference), read from containerd's <config_path>/<host>/hosts.toml.
type HostConfig struct {
	Host string // as asked: "docker.io", "localhost:5000"
	File string // the hosts.toml read; "" if none was
	// Endpoints are tried in order: the file's [host."..."] entries in file
	// order, then its server. An endpoint whose Host differs from Host is a
	// mirror: requests to it carry ?ns=<Host>, as containerd does.
	Endpoints []Endpoint
	Warnings  []Warning // unknown keys in File
}

// Endpoint is one registry API server to try.
type Endpoint struct {
	Scheme       string     // "https" or "http"
	Host         string     // host[:port]
	Path         string     // API root: "/v2" unless override_path said otherwise
	Capabilities Capability // what this endpoint is trusted to do
	CAFiles      []string   // extra roots, absolute paths
	Clients      []ClientCert
	SkipVerify   bool
	Header       map[string][]string
	DialTimeout  time.Duration // 0 = the transport's default
	Proxy        string        // proxy URL; "" = from the environment
	Auth         *Auth         // from config.toml's registry.configs; set by Registry.Hosts
}

// URL returns the endpoint's API root, e.g. https://registry-1.docker.io/v2.
func (e Endpoint) URL() string { return e.Scheme + "://" + e.Host + e.Path }

// ClientCert is a TLS client certificate; Key is "" when Cert holds both.
type ClientCert struct{ Cert, Key string }

// Capability is a set of registry operations a host may be trusted with.
type Capability uint8

const (
	CapPull    Capability = 1 << iota // fetch content by digest
	CapResolve                        // turn a tag into a digest
	CapPush
	capAll = CapPull | CapResolve | CapPush
)

func (c Capability) String() string {
	var s []string
	for _, n := range []struct {
		c    Capability
		name string
	}{{CapPull, "pull"}, {CapResolve, "resolve"}, {CapPush, "push"}} {
		if c&n.c != 0 {
			s = append(s, n.name)
		}
	}
	return strings.Join(s, ",")
}

// LoadHosts returns the endpoints for host under configPath (a directory, or
// several joined with ':' as containerd allows). Like containerd it looks in
// <dir>/<host>/ (for host:port first <dir>/<host>_<port>_/), then
// <dir>/_default/; the first directory found is used: its hosts.toml, or
// failing that Docker-style certificates (*.crt CAs, *.cert/*.key pairs). With
// no directory the host's own server is the one endpoint: https://<host>
// (docker.io → registry-1.docker.io; localhost is http).
func LoadHosts(configPath, host string) (*HostConfig, error) {
	hc := &HostConfig{Host: host}
	for _, root := range filepath.SplitList(configPath) {
		if root == "" {
			continue
		}
		for _, name := range hostDirs(host) {
			dir := filepath.Join(root, name)
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				continue
			}
			file := filepath.Join(dir, "hosts.toml")
			data, err := os.ReadFile(file)
			switch {
			case err == nil:
				if err := parseHosts(hc, file, data); err != nil {
					return nil, err
				}
				return hc, nil
			case errors.Is(err, fs.ErrNotExist):
				ep := defaultEndpoint(host)
				if err := dockerCerts(dir, &ep); err != nil {
					return nil, err
				}
				hc.Endpoints = []Endpoint{ep}
				return hc, nil
			default:
				return nil, fmt.Errorf("read registry hosts for %s: %w", host, err)
			}
		}
	}
	hc.Endpoints = []Endpoint{defaultEndpoint(host)}
	return hc, nil
}

func hostDirs(host string) []string {
	if h, port, ok := strings.Cut(host, ":"); ok && !strings.Contains(port, ":") {
		return []string{h + "_" + port + "_", host, "_default"}
	}
	return []string{host, "_default"}
}

func defaultEndpoint(host string) Endpoint {
	ep := Endpoint{Scheme: "https", Host: host, Path: "/v2", Capabilities: capAll}
	switch {
	case host == "docker.io":
		ep.Host = "registry-1.docker.io"
	case isLocalhost(host):
		ep.Scheme = "http"
	}
	return ep
}

func isLocalhost(host string) bool {
	h := host
	if i := strings.LastIndex(host, ":"); i >= 0 && !strings.HasSuffix(host, "]") {
		h = host[:i]
	}
	h = strings.Trim(h, "[]")
	return h == "localhost" || h == "127.0.0.1" || h == "::1"
}

// dockerCerts reads dir the way Docker's certs.d is laid out.
func dockerCerts(dir string, ep *Endpoint) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("read registry certificates: %w", err)
	}
	for _, e := range ents {
		name := e.Name()
		switch filepath.Ext(name) {
		case ".crt":
			ep.CAFiles = append(ep.CAFiles, filepath.Join(dir, name))
		case ".cert":
			key := strings.TrimSuffix(name, ".cert") + ".key"
			if _, err := os.Stat(filepath.Join(dir, key)); err != nil {
				return fmt.Errorf("registry client certificate %s: missing key %s", filepath.Join(dir, name), key)
			}
			ep.Clients = append(ep.Clients, ClientCert{Cert: filepath.Join(dir, name), Key: filepath.Join(dir, key)})
		}
	}
	return nil
}

func parseHosts(hc *HostConfig, file string, data []byte) error {
	d, err := readDoc(file, data)
	if err != nil {
		return err
	}
	dir := filepath.Dir(file)
	top := d.top()
	server := defaultEndpoint(hc.Host)
	var s string
	if top.str("server", &s) {
		if ep, ok := endpointFrom(top, "server", s); ok {
			server = ep
			if server.Host == "docker.io" {
				server.Host = "registry-1.docker.io"
			}
		}
	}
	hostSettings(top, dir, &server)
	hosts := top.sub("host")
	for _, u := range hosts.keys() {
		h := hosts.sub(u)
		if h.m == nil {
			continue // not a table: reported by sub
		}
		ep, ok := endpointFrom(hosts, u, u)
		if ok {
			hostSettings(h, dir, &ep)
			hc.Endpoints = append(hc.Endpoints, ep)
		}
		h.done()
	}
	top.done()
	hc.File = file
	hc.Endpoints = append(hc.Endpoints, server)
	hc.Warnings = d.warnings()
	return d.err()
}

// endpointFrom parses the URL of a server or [host."..."] entry; a missing
// scheme means https.
func endpointFrom(t *table, key, s string) (Endpoint, bool) {
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") || u.RawQuery != "" || u.Fragment != "" {
		t.errorf(key, "invalid registry URL %q (want http(s)://host[:port][/path])", s)
		return Endpoint{}, false
	}
	return Endpoint{Scheme: u.Scheme, Host: u.Host, Path: u.Path, Capabilities: capAll}, true
}

// hostSettings reads the keys shared by the top level (for the server) and
// each [host."..."] table.
func hostSettings(t *table, dir string, ep *Endpoint) {
	if v, p, ok := t.get("capabilities"); ok {
		if caps, ok := stringList(t, p, v); ok {
			ep.Capabilities = 0
			for i, c := range caps {
				switch c {
				case "pull":
					ep.Capabilities |= CapPull
				case "resolve":
					ep.Capabilities |= CapResolve
				case "push":
					ep.Capabilities |= CapPush
				default:
					t.d.errorf(index(p, i), "unknown capability %q (want pull, resolve or push)", c)
				}
			}
		}
	}
	abs := func(f string) string {
		if f == "" || filepath.IsAbs(f) {
			return f
		}
		return filepath.Join(dir, f)
	}
	if v, p, ok := t.get("ca"); ok {
		switch v := v.(type) {
		case string:
			ep.CAFiles = []string{abs(v)}
		default:
			if l, ok := stringList(t, p, v); ok {
				ep.CAFiles = nil
				for _, f := range l {
					ep.CAFiles = append(ep.CAFiles, abs(f))
				}
			}
		}
	}
	if v, p, ok := t.get("client"); ok {
		ep.Clients = clients(t, p, v, abs)
	}
	t.boolean("skip_verify", &ep.SkipVerify)
	var override bool
	t.boolean("override_path", &override)
	ep.Path = apiRoot(ep.Path, override)
	t.duration("dial_timeout", &ep.DialTimeout)
	if t.str("proxy", &ep.Proxy) && ep.Proxy != "" {
		u, err := url.Parse(ep.Proxy)
		if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" ||
			(u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "socks5" && u.Scheme != "socks5h") {
			t.errorf("proxy", "invalid proxy %q (want http, https, socks5 or socks5h://host:port)", ep.Proxy)
		}
	}
	hd := t.sub("header")
	for _, k := range hd.keys() {
		v, p, _ := hd.get(k)
		if ep.Header == nil {
			ep.Header = map[string][]string{}
		}
		if l, ok := stringOrList(hd, p, v); ok {
			ep.Header[k] = l
		}
	}
}

// apiRoot is containerd's rule: unless override_path, the path gets /v2.
func apiRoot(p string, override bool) string {
	if p != "" {
		p = path.Clean("/" + p)
	}
	if override {
		return p
	}
	if p == "" || p == "/" {
		return "/v2"
	}
	if !strings.HasSuffix(p, "/v2") {
		p += "/v2"
	}
	return p
}

// clients reads client = "cert.pem" | ["a.pem", "b.pem"] | [["cert", "key"], ...].
func clients(t *table, p []string, v any, abs func(string) string) []ClientCert {
	if s, ok := v.(string); ok {
		return []ClientCert{{Cert: abs(s)}}
	}
	a, ok := v.([]any)
	if !ok {
		t.typeErr(p, "a path, an array of paths or an array of [cert, key] pairs", v)
		return nil
	}
	var out []ClientCert
	for i, e := range a {
		switch e := e.(type) {
		case string:
			out = append(out, ClientCert{Cert: abs(e)})
		case []any:
			pair, ok := stringList(t, index(p, i), e)
			if !ok {
				return nil
			}
			if len(pair) != 2 {
				t.d.errorf(index(p, i), "want a [cert, key] pair, got %d paths", len(pair))
				return nil
			}
			out = append(out, ClientCert{Cert: abs(pair[0]), Key: abs(pair[1])})
		default:
			t.typeErr(index(p, i), "a path or a [cert, key] pair", e)
			return nil
		}
	}
	return out
}

// Hosts resolves host the way containerd's CRI does with this config: the
// hosts.toml under ConfigPath if there is one; otherwise the mirrors for host
// (or for "*"), then the host itself. Configs then fill in, by endpoint host,
// credentials and any TLS setting the hosts.toml left unset (containerd
// ignores configs.tls once config_path is set; ingot honours both), and
// Headers are added to every endpoint.
func (r *Registry) Hosts(host string) (*HostConfig, error) {
	mirrors, ok := r.Mirrors[host]
	if !ok {
		mirrors = r.Mirrors["*"]
	}
	var hc *HostConfig
	if r.ConfigPath != "" {
		var err error
		if hc, err = LoadHosts(r.ConfigPath, host); err != nil {
			return nil, err
		}
		if hc.File == "" && len(mirrors) > 0 {
			hc = nil // no hosts.toml: the mirrors apply
		}
	}
	if hc == nil {
		hc = &HostConfig{Host: host}
		server := defaultEndpoint(host)
		seen := map[string]bool{}
		for _, m := range mirrors {
			u, err := url.Parse(m)
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("registry mirror %q for %s: %w", m, host, errInvalidURL)
			}
			ep := Endpoint{Scheme: u.Scheme, Host: u.Host, Path: u.Path, Capabilities: CapPull | CapResolve}
			if ep.Path == "" || ep.Path == "/" {
				ep.Path = "/v2"
			}
			if ep.URL() == server.URL() {
				ep.Capabilities = capAll
			}
			if !seen[ep.URL()] {
				seen[ep.URL()] = true
				hc.Endpoints = append(hc.Endpoints, ep)
			}
		}
		if !seen[server.URL()] {
			hc.Endpoints = append(hc.Endpoints, server)
		}
	}
	for i := range hc.Endpoints {
		r.fill(&hc.Endpoints[i])
	}
	return hc, nil
}

var errInvalidURL = errors.New("not a URL with a host")

func (r *Registry) fill(ep *Endpoint) {
	cfg := r.Configs[ep.Host]
	if cfg.Auth != nil {
		ep.Auth = cfg.Auth
	}
	if t := cfg.TLS; t != nil {
		if len(ep.CAFiles) == 0 && t.CAFile != "" {
			ep.CAFiles = []string{t.CAFile}
		}
		if len(ep.Clients) == 0 && t.CertFile != "" {
			ep.Clients = []ClientCert{{Cert: t.CertFile, Key: t.KeyFile}}
		}
		ep.SkipVerify = ep.SkipVerify || t.InsecureSkipVerify
	}
	if len(r.Headers) > 0 {
		h := map[string][]string{}
		for k, v := range r.Headers {
			h[k] = v
		}
		for k, v := range ep.Header {
			h[k] = v // the hosts.toml's own headers win
		}
		ep.Header = h
	}
}
