package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func writeHosts(t *testing.T, root, host, body string) string {
	t.Helper()
	dir := filepath.Join(root, host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if body != "" {
		if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadHosts(t *testing.T) {
	root := t.TempDir()
	dir := writeHosts(t, root, "docker.io", `server = "https://registry-1.docker.io"    # Exclude this to not use upstream

[host."https://public-mirror.example.com"]
  capabilities = ["pull"]                  # Requires less trust, won't resolve tag to digest from this host
[host."https://docker-mirror.internal/api"]
  capabilities = ["pull", "resolve"]
  ca = "docker-mirror.crt"                 # Or absolute path /etc/containerd/certs.d/docker.io/docker-mirror.crt
  client = [["/etc/certs/client.cert", "/etc/certs/client.key"], ["client.pem", ""]]
  skip_verify = true
  override_path = true
  dial_timeout = "1s"
  proxy = "http://my-proxy:8080"
  mirror_weight = 3
  [host."https://docker-mirror.internal/api".header]
    x-custom-1 = "custom header"
    x-custom-2 = ["part a", "part b"]
`)
	hc, err := LoadHosts(root, "docker.io")
	if err != nil {
		t.Fatal(err)
	}
	want := &HostConfig{
		Host: "docker.io",
		File: filepath.Join(dir, "hosts.toml"),
		Endpoints: []Endpoint{
			{Scheme: "https", Host: "public-mirror.example.com", Path: "/v2", Capabilities: CapPull},
			{Scheme: "https", Host: "docker-mirror.internal", Path: "/api", Capabilities: CapPull | CapResolve,
				CAFiles:    []string{filepath.Join(dir, "docker-mirror.crt")},
				Clients:    []ClientCert{{"/etc/certs/client.cert", "/etc/certs/client.key"}, {filepath.Join(dir, "client.pem"), ""}},
				SkipVerify: true, DialTimeout: time.Second, Proxy: "http://my-proxy:8080",
				Header: map[string][]string{"x-custom-1": {"custom header"}, "x-custom-2": {"part a", "part b"}}},
			{Scheme: "https", Host: "registry-1.docker.io", Path: "/v2", Capabilities: CapPull | CapResolve | CapPush},
		},
		Warnings: []Warning{{File: filepath.Join(dir, "hosts.toml"), Line: 13, Key: `host."https://docker-mirror.internal/api".mirror_weight`, Msg: "unknown key; ignored"}},
	}
	if !reflect.DeepEqual(hc, want) {
		t.Errorf("got\n%+v\nwant\n%+v", hc, want)
	}
	if got := hc.Endpoints[1].URL(); got != "https://docker-mirror.internal/api" {
		t.Errorf("URL() = %q", got)
	}
	if got := hc.Endpoints[0].Capabilities.String(); got != "pull" {
		t.Errorf("Capabilities.String() = %q", got)
	}
}

func TestLoadHostsDefaults(t *testing.T) {
	root := t.TempDir()
	writeHosts(t, root, "r.example_5000_", "server = \"https://r.example:5000\"\nca = [\"/a.crt\", \"b.crt\"]\n")
	certs := writeHosts(t, root, "certs.example", "")
	for _, f := range []string{"ca.crt", "client.cert", "client.key", "README"} {
		os.WriteFile(filepath.Join(certs, f), nil, 0o644)
	}
	cases := []struct {
		root, host string
		want       Endpoint
	}{
		{"", "docker.io", Endpoint{Scheme: "https", Host: "registry-1.docker.io", Path: "/v2", Capabilities: capAll}},
		{root, "quay.io", Endpoint{Scheme: "https", Host: "quay.io", Path: "/v2", Capabilities: capAll}},
		{root, "localhost:5000", Endpoint{Scheme: "http", Host: "localhost:5000", Path: "/v2", Capabilities: capAll}},
		{root, "127.0.0.1:5000", Endpoint{Scheme: "http", Host: "127.0.0.1:5000", Path: "/v2", Capabilities: capAll}},
		{root, "r.example:5000", Endpoint{Scheme: "https", Host: "r.example:5000", Path: "/v2", Capabilities: capAll,
			CAFiles: []string{"/a.crt", filepath.Join(root, "r.example_5000_", "b.crt")}}},
		{root, "certs.example", Endpoint{Scheme: "https", Host: "certs.example", Path: "/v2", Capabilities: capAll,
			CAFiles: []string{filepath.Join(certs, "ca.crt")},
			Clients: []ClientCert{{filepath.Join(certs, "client.cert"), filepath.Join(certs, "client.key")}}}},
	}
	for _, c := range cases {
		hc, err := LoadHosts(c.root, c.host)
		if err != nil {
			t.Fatal(err)
		}
		if len(hc.Endpoints) != 1 || !reflect.DeepEqual(hc.Endpoints[0], c.want) {
			t.Errorf("%s: got %+v, want %+v", c.host, hc.Endpoints, c.want)
		}
	}

	// _default catches every host without its own directory; the server
	// stays the host's own.
	writeHosts(t, root, "_default", "[host.\"https://mirror.example\"]\n  capabilities = [\"pull\", \"resolve\"]\n")
	hc, err := LoadHosts("/nonexistent:"+root, "quay.io")
	if err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, e := range hc.Endpoints {
		urls = append(urls, e.URL())
	}
	if want := []string{"https://mirror.example/v2", "https://quay.io/v2"}; !reflect.DeepEqual(urls, want) {
		t.Errorf("_default: got %q, want %q", urls, want)
	}
}

func TestLoadHostsBad(t *testing.T) {
	cases := []struct{ name, doc, want string }{
		{"capability", "[host.\"https://m\"]\n  capabilities = [\"pull\", \"pul\"]\n",
			`hosts.toml:2: host."https://m".capabilities[1]: unknown capability "pul" (want pull, resolve or push)`},
		{"server", "server = \"ftp://r\"\n", `hosts.toml:1: server: invalid registry URL "ftp://r" (want http(s)://host[:port][/path])`},
		{"host url", "[host.\"https://\"]\n  skip_verify = true\n", `hosts.toml:1: host."https://": invalid registry URL "https://" (want http(s)://host[:port][/path])`},
		{"ca type", "ca = 3\n", `hosts.toml:1: ca: want an array of strings, got integer`},
		{"client pair", "client = [[\"a\", \"b\", \"c\"]]\n", `hosts.toml:1: client[0]: want a [cert, key] pair, got 3 paths`},
		{"skip_verify", "[host.\"https://m\"]\nskip_verify = \"yes\"\n", `hosts.toml:2: host."https://m".skip_verify: want a boolean, got string`},
		{"dial_timeout", "dial_timeout = \"soon\"\n", `hosts.toml:1: dial_timeout: want a duration such as "5m0s", got "soon"`},
		{"proxy", "proxy = \"http://p:1/path\"\n", `hosts.toml:1: proxy: invalid proxy "http://p:1/path" (want http, https, socks5 or socks5h://host:port)`},
		{"header", "[header]\n  x = 1\n", `hosts.toml:2: header.x: want a string or an array of strings, got integer`},
		{"syntax", "server = https://r\n", `hosts.toml:1: unexpected character U+0068 'h' at start of value`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			writeHosts(t, root, "r.io", tc.doc)
			_, err := LoadHosts(root, "r.io")
			if err == nil {
				t.Fatal("no error")
			}
			got := strings.TrimPrefix(err.Error(), filepath.Join(root, "r.io")+"/")
			if got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}

func TestRegistryHosts(t *testing.T) {
	root := t.TempDir()
	writeHosts(t, root, "ghcr.io", "[host.\"https://ghcr-mirror.local\"]\n")
	r := &Registry{
		ConfigPath: root,
		Mirrors: map[string][]string{
			"docker.io": {"https://mirror.local", "http://harbor.local/v2/proxy", "https://registry-1.docker.io"},
			"*":         {"https://catch-all.local"},
		},
		Configs: map[string]RegistryConfig{
			"mirror.local":      {TLS: &TLS{CAFile: "/ca.crt", CertFile: "/c.crt", KeyFile: "/c.key"}},
			"ghcr-mirror.local": {Auth: &Auth{Username: "u", Password: "p"}},
			"registry-1.docker.io": {TLS: &TLS{InsecureSkipVerify: true},
				Auth: &Auth{IdentityToken: "tok"}},
		},
		Headers: map[string][]string{"User-Agent": {"ingot"}},
	}
	hc, err := r.Hosts("docker.io")
	if err != nil {
		t.Fatal(err)
	}
	hdr := map[string][]string{"User-Agent": {"ingot"}}
	want := []Endpoint{
		{Scheme: "https", Host: "mirror.local", Path: "/v2", Capabilities: CapPull | CapResolve, CAFiles: []string{"/ca.crt"},
			Clients: []ClientCert{{"/c.crt", "/c.key"}}, Header: hdr},
		{Scheme: "http", Host: "harbor.local", Path: "/v2/proxy", Capabilities: CapPull | CapResolve, Header: hdr},
		{Scheme: "https", Host: "registry-1.docker.io", Path: "/v2", Capabilities: capAll, SkipVerify: true,
			Auth: &Auth{IdentityToken: "tok"}, Header: hdr},
	}
	if !reflect.DeepEqual(hc.Endpoints, want) {
		t.Errorf("docker.io:\n%+v\nwant\n%+v", hc.Endpoints, want)
	}

	hc, err = r.Hosts("quay.io")
	if err != nil {
		t.Fatal(err)
	}
	if len(hc.Endpoints) != 2 || hc.Endpoints[0].Host != "catch-all.local" || hc.Endpoints[1].Host != "quay.io" {
		t.Errorf("quay.io: %+v", hc.Endpoints)
	}

	// A hosts.toml wins over mirrors; credentials still come from configs.
	hc, err = r.Hosts("ghcr.io")
	if err != nil {
		t.Fatal(err)
	}
	if len(hc.Endpoints) != 2 || hc.Endpoints[0].Host != "ghcr-mirror.local" || hc.Endpoints[0].Auth == nil || hc.Endpoints[1].Host != "ghcr.io" {
		t.Errorf("ghcr.io: %+v", hc.Endpoints)
	}
}

// TestSeedRegistry resolves docker.io with the seed's registry settings: the
// mirror, TLS and credentials of its sections 4.2 and 7.2 all apply.
func TestSeedRegistry(t *testing.T) {
	c, _, err := Load("testdata/seed-all-v2.toml")
	if err != nil {
		t.Fatal(err)
	}
	c.Registry.ConfigPath = t.TempDir() // no hosts.toml for docker.io
	hc, err := c.Registry.Hosts("docker.io")
	if err != nil {
		t.Fatal(err)
	}
	want := []Endpoint{{Scheme: "https", Host: "registry-1.docker.io", Path: "/v2", Capabilities: capAll,
		CAFiles: []string{"/etc/containerd/certs.d/registry-1.docker.io/ca.crt"},
		Auth:    &Auth{Username: "username", Password: "password"}}}
	if !reflect.DeepEqual(hc.Endpoints, want) {
		t.Errorf("got\n%+v\nwant\n%+v", hc.Endpoints, want)
	}
}
