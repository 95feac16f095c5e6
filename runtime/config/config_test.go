package config

import (
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

func warningStrings(ws []Warning) []string {
	var s []string
	for _, w := range ws {
		s = append(s, w.String())
	}
	return s
}

// TestSeed parses the config.toml examples of the seed document, each section
// verbatim and all of them merged, and checks every key landed.
func TestSeed(t *testing.T) {
	const noVersion = "version: missing; read as version 2 from the plugin names used (add version = 2 at the top)"
	seedTLS := &TLS{CAFile: "/etc/containerd/certs.d/registry-1.docker.io/ca.crt"}
	seedAuth := &Auth{Username: "username", Password: "password"}
	cases := []struct {
		file  string
		check func(t *testing.T, c *Config)
		warns []string
	}{
		{"seed-2.2.toml", func(t *testing.T, c *Config) {
			want := Default()
			want.Version = 2
			want.RootDir, want.StateDir = "/var/lib/containerd", "/run/containerd"
			want.SandboxImage = "k8s.gcr.io/pause:3.6"
			want.Registry.ConfigPath = "/etc/containerd/certs.d"
			if !reflect.DeepEqual(c, want) {
				t.Errorf("got\n%+v\nwant\n%+v", c, want)
			}
		}, nil},
		{"seed-4.2.toml", func(t *testing.T, c *Config) {
			if got := c.Registry.Mirrors["docker.io"]; !reflect.DeepEqual(got, []string{"https://registry-1.docker.io"}) {
				t.Errorf("mirrors docker.io = %q", got)
			}
			if got := c.Registry.Configs["registry-1.docker.io"]; !reflect.DeepEqual(got, RegistryConfig{TLS: &TLS{}}) {
				t.Errorf("configs = %+v", got)
			}
		}, []string{"testdata/seed-4.2.toml: " + noVersion}},
		{"seed-5.2.toml", func(t *testing.T, c *Config) {
			if c.Images.Snapshotter != SnapshotterOverlayfs || c.CgroupDriver != CgroupDriverCgroupfs {
				t.Errorf("snapshotter %q, cgroup driver %q", c.Images.Snapshotter, c.CgroupDriver)
			}
		}, []string{
			"testdata/seed-5.2.toml: " + noVersion,
			`testdata/seed-5.2.toml:6: plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options.SystemdCgroup: ` + noSystemd,
		}},
		{"seed-6.1.toml", func(t *testing.T, c *Config) {
			if c.MaxContainerLogLineSize != 16384 || c.Images.MaxConcurrentDownloads != 3 || c.GRPC.TCPAddress != "" ||
				c.Log.Level != slog.LevelInfo || c.Metrics.Address != "127.0.0.1:1338" {
				t.Errorf("got %+v", c)
			}
		}, []string{"testdata/seed-6.1.toml: " + noVersion}},
		{"seed-7.2.toml", func(t *testing.T, c *Config) {
			want := RegistryConfig{TLS: seedTLS, Auth: seedAuth}
			if got := c.Registry.Configs["registry-1.docker.io"]; !reflect.DeepEqual(got, want) {
				t.Errorf("configs = %+v %+v", got.TLS, got.Auth)
			}
		}, []string{"testdata/seed-7.2.toml: " + noVersion}},
		{"seed-all-v2.toml", func(t *testing.T, c *Config) {
			want := Default()
			want.Version = 2
			want.RootDir, want.StateDir = "/var/lib/containerd", "/run/containerd"
			want.SandboxImage = "k8s.gcr.io/pause:3.6"
			want.Metrics.Address = "127.0.0.1:1338"
			want.Registry.ConfigPath = "/etc/containerd/certs.d"
			want.Registry.Mirrors["docker.io"] = []string{"https://registry-1.docker.io"}
			want.Registry.Configs["registry-1.docker.io"] = RegistryConfig{TLS: seedTLS, Auth: seedAuth}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("got\n%+v\nwant\n%+v", c, want)
			}
		}, []string{
			`testdata/seed-all-v2.toml:21: plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options.SystemdCgroup: ` + noSystemd,
			`testdata/seed-all-v2.toml:26: plugins."io.containerd.grpc.v1.cri".registry.mirrors: containerd refuses mirrors together with config_path; ingot uses <config_path>/<host>/hosts.toml where one exists and these mirrors for other hosts`,
		}},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			c, ws, err := Load("testdata/" + tc.file)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
			if got := warningStrings(ws); !reflect.DeepEqual(got, tc.warns) {
				t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.warns, "\n"))
			}
		})
	}
}

// TestV2V3Same: the two layouts of one configuration give one Config.
func TestV2V3Same(t *testing.T) {
	c2, _, err := Load("testdata/seed-all-v2.toml")
	if err != nil {
		t.Fatal(err)
	}
	c3, w3, err := Load("testdata/seed-all-v3.toml")
	if err != nil {
		t.Fatal(err)
	}
	c2.Version = 3
	if !reflect.DeepEqual(c2, c3) {
		t.Errorf("v2:\n%+v\nv3:\n%+v", c2, c3)
	}
	if len(w3) != 2 {
		t.Errorf("v3 warnings: %q", warningStrings(w3))
	}
}

// TestContainerdDefault reads the full default configuration of containerd's
// documentation: no error, and warnings only where ingot really differs.
func TestContainerdDefault(t *testing.T) {
	c, ws, err := Load("testdata/containerd-default-v3.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		`testdata/containerd-default-v3.toml:74: plugins."io.containerd.cri.v1.runtime".enable_cdi: ingot does not inject CDI devices; CDI device requests fail`,
		`testdata/containerd-default-v3.toml:129: plugins."io.containerd.gc.v1.scheduler": no such plugin in ingot (ingot is one binary, without containerd plugins); its settings are ignored`,
	}
	if got := warningStrings(ws); !reflect.DeepEqual(got, want) {
		t.Errorf("warnings:\n%s", strings.Join(got, "\n"))
	}
	if c.GRPC.Address != "/run/containerd/containerd.sock" || c.SandboxImage != "registry.k8s.io/pause:3.10" ||
		c.CNI.IPPref != "ipv4" || c.Stream.IdleTimeout != 4*time.Hour || c.Images.PullProgressTimeout != 5*time.Minute {
		t.Errorf("got %+v", c)
	}
}

func TestEmpty(t *testing.T) {
	c, ws, err := Parse("config.toml", []byte("# nothing\n"))
	if err != nil || len(ws) != 0 || !reflect.DeepEqual(c, Default()) {
		t.Errorf("got %+v, %v, %v", c, ws, err)
	}
}

func TestValues(t *testing.T) {
	const doc = `version = 2
oom_score = -999
[grpc]
  address = "unix:///run/containerd/containerd.sock"
  uid = 5
  gid = 6
  tcp_address = "0.0.0.0:1234"
[debug]
  level = "trace"
  format = "json"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = false
  max_container_log_line_size = -1
  max_concurrent_downloads = 0
  stream_server_address = "::1"
  stream_server_port = "10010"
  stream_idle_timeout = "30m"
  enable_tls_streaming = true
  unset_seccomp_profile = "docker/default"
  enable_unprivileged_ports = false
  image_pull_progress_timeout = "0s"
  [plugins."io.containerd.grpc.v1.cri".x509_key_pair_streaming]
    tls_cert_file = "/c"
    tls_key_file = "/k"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dirs = ["/a", "/b"]
    max_conf_num = 0
    ip_pref = "cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "crun"
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
    pod_annotations = ["io.kubernetes.cri.*"]
    privileged_without_host_devices = true
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
      NoPivotRoot = true
      BinaryName = "/usr/bin/crun"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
    runtime_type = "io.containerd.kata.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata.options]
      ConfigPath = "/etc/kata.toml"
  [plugins."io.containerd.grpc.v1.cri".registry.configs."r.example:5000".auth]
    auth = "dXNlcjpwYXNz"
  [plugins."io.containerd.grpc.v1.cri".registry.headers]
    X-Meta = ["a", "b"]
[metrics]
  address = "[::1]:1338"
  grpc_histogram = true
`
	c, ws, err := Parse("config.toml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	check := func(name string, got, want any) {
		t.Helper()
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s = %#v, want %#v", name, got, want)
		}
	}
	check("OOMScore", c.OOMScore, -999)
	check("GRPC", c.GRPC, GRPC{Address: "/run/containerd/containerd.sock", UID: 5, GID: 6, TCPAddress: "0.0.0.0:1234",
		MaxRecvMessageSize: DefaultMaxMessageSize, MaxSendMessageSize: DefaultMaxMessageSize})
	check("Log", c.Log, Log{Level: slog.LevelDebug - 4, Format: LogFormatJSON})
	check("Metrics", c.Metrics, Metrics{Address: "[::1]:1338", GRPCHistogram: true})
	check("MaxContainerLogLineSize", c.MaxContainerLogLineSize, 0)
	check("Images", c.Images, Images{Snapshotter: SnapshotterNative})
	check("Stream", c.Stream, Stream{Address: "::1", Port: "10010", IdleTimeout: 30 * time.Minute, TLS: true, TLSCertFile: "/c", TLSKeyFile: "/k"})
	check("UnsetSeccompProfile", c.Containers.UnsetSeccompProfile, "runtime/default")
	check("EnableUnprivilegedPorts", c.Containers.EnableUnprivilegedPorts, false)
	check("CNI", c.CNI, CNI{BinDirs: []string{"/a", "/b"}, ConfDir: DefaultCNIConfDir, IPPref: "cni"})
	check("DefaultRuntime", c.DefaultRuntime, "crun")
	check("Runtimes", c.Runtimes, map[string]Runtime{
		"runc": {Type: RuntimeRuncV2},
		"crun": {Type: RuntimeRuncV2, PodAnnotations: []string{"io.kubernetes.cri.*"}, PrivilegedWithoutHostDevices: true, NoPivotRoot: true},
	})
	check("Auth", c.Registry.Configs["r.example:5000"].Auth, &Auth{Auth: "dXNlcjpwYXNz"})
	check("Headers", c.Registry.Headers, map[string][]string{"X-Meta": {"a", "b"}})
	check("warnings", warningStrings(ws), []string{
		`config.toml:37: plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options.BinaryName: ingot runs containers with its built-in libcontainer, not a runc binary`,
		`config.toml:39: plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata.runtime_type: ingot runs containers only with its built-in runc (libcontainer); runtime handler "kata" is not available`,
	})
}

// TestWarnings covers unknown keys, misplaced version 3 keys, keys that
// differ in case, and keys that mean nothing to ingot.
func TestWarnings(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []string
	}{
		{"unknown top", "version = 2\nroot = \"/r\"\nrooot = \"/x\"\n",
			[]string{"config.toml:3: rooot: unknown key; ignored"}},
		{"unknown in plugin", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"p\"\n  max_log = 1\n",
			[]string{`config.toml:4: plugins."io.containerd.grpc.v1.cri".max_log: unknown key; ignored`}},
		{"unknown in inline table", "version = 2\nmetrics = { address = \"127.0.0.1:1\", port = 2 }\n",
			[]string{`config.toml:2: metrics.port: unknown key; ignored`}},
		{"v2 key in v3 layout", "version = 3\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"p\"\n",
			[]string{`config.toml:3: plugins."io.containerd.grpc.v1.cri".sandbox_image: unknown key; ignored (version 3 reads it from plugins."io.containerd.cri.v1.images".pinned_images.sandbox)`}},
		{"v3 plugin in v2 file", "version = 2\n[plugins.\"io.containerd.cri.v1.images\"]\n  snapshotter = \"overlayfs\"\n",
			[]string{`config.toml:2: plugins."io.containerd.cri.v1.images": no such plugin in ingot (ingot is one binary, without containerd plugins); its settings are ignored (version 2 reads CRI settings from plugins."io.containerd.grpc.v1.cri"; set version = 3 to use this layout)`}},
		{"case", "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc.options]\n  systemdCgroup = false\n",
			[]string{`config.toml:3: plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options.systemdCgroup: read as SystemdCgroup (containerd ignores the case of keys; ingot's documentation does not)`}},
		{"default values are silent", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  enable_selinux = false\n  stats_collect_period = 10\n[metrics]\n  grpc_histogram = false\n", nil},
		{"meaningless values warn", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  enable_selinux = true\n",
			[]string{
				`config.toml:3: plugins."io.containerd.grpc.v1.cri".enable_selinux: ingot's kernel runs without SELinux; SELinux options in pod specs are refused`,
			}},
		{"tcp address without tcp service", "version = 2\n[grpc]\n  tcp_address = \"127.0.0.1:1\"\n",
			[]string{`config.toml:3: grpc.tcp_address: no TCP listener: disable_tcp_service is true and ingot serves only CRI, not containerd's own API`}},
		{"deprecated auths", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.auths.\"https://r.io\"]\n  username = \"u\"\n",
			[]string{`config.toml:2: plugins."io.containerd.grpc.v1.cri".registry.auths."https://r.io": deprecated in containerd; read as configs."r.io".auth`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, ws, err := Parse("config.toml", []byte(tc.doc))
			if err != nil {
				t.Fatal(err)
			}
			if got := warningStrings(ws); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.want, "\n"))
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	const cri = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n"
	cases := []struct{ name, doc, want string }{
		{"log line size type", cri + "  sandbox_image = \"p\"\n  max_container_log_line_size = \"16k\"\n",
			`config.toml:4: plugins."io.containerd.grpc.v1.cri".max_container_log_line_size: want an integer, got string`},
		{"log line size negative", cri + "  max_container_log_line_size = -2\n",
			`config.toml:3: plugins."io.containerd.grpc.v1.cri".max_container_log_line_size: -2 is negative (want a size in bytes, or -1 for no limit)`},
		{"downloads negative", cri + "  max_concurrent_downloads = -1\n",
			`config.toml:3: plugins."io.containerd.grpc.v1.cri".max_concurrent_downloads: -1 is negative (want a count, 0 for no limit)`},
		{"version", "version = 1\n", `config.toml:1: version: unsupported config version 1 (want 2 or 3)`},
		{"version type", "version = \"2\"\n", `config.toml:1: version: want an integer, got string`},
		{"snapshotter", "version = 3\n[plugins.'io.containerd.cri.v1.images']\n  snapshotter = \"zfs\"\n",
			`config.toml:3: plugins."io.containerd.cri.v1.images".snapshotter: invalid value "zfs" (want "overlayfs" or "native")`},
		{"metrics address", "version = 2\n[metrics]\n  address = \"localhost\"\n",
			`config.toml:3: metrics.address: invalid address "localhost" (want host:port, e.g. 127.0.0.1:1338)`},
		{"grpc address relative", "version = 2\n[grpc]\n  address = \"ingot.sock\"\n",
			`config.toml:3: grpc.address: "ingot.sock" is not an absolute path`},
		{"bool type", cri + "  disable_tcp_service = \"yes\"\n",
			`config.toml:3: plugins."io.containerd.grpc.v1.cri".disable_tcp_service: want a boolean, got string`},
		{"unused key still type-checked", cri + "  enable_selinux = 1\n",
			`config.toml:3: plugins."io.containerd.grpc.v1.cri".enable_selinux: want a boolean, got integer`},
		{"endpoint element", cri + "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n  endpoint = [\n    \"https://m\",\n    \"mirror.local\",\n  ]\n",
			`config.toml:6: plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io".endpoint[1]: invalid endpoint "mirror.local" (want http(s)://host[:port][/path])`},
		{"endpoint type", cri + "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n  endpoint = \"https://m\"\n",
			`config.toml:4: plugins."io.containerd.grpc.v1.cri".registry.mirrors."docker.io".endpoint: want an array of strings, got string`},
		{"tls type", cri + "[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"r\".tls]\n  insecure_skip_verify = \"true\"\n",
			`config.toml:4: plugins."io.containerd.grpc.v1.cri".registry.configs.r.tls.insecure_skip_verify: want a boolean, got string`},
		{"auth", cri + "[plugins.\"io.containerd.grpc.v1.cri\".registry.configs.\"r\".auth]\n  auth = \"not base64\"\n",
			`config.toml:4: plugins."io.containerd.grpc.v1.cri".registry.configs.r.auth.auth: want base64 of "user:password"`},
		{"duration", cri + "  stream_idle_timeout = \"4 hours\"\n",
			`config.toml:3: plugins."io.containerd.grpc.v1.cri".stream_idle_timeout: want a duration such as "5m0s", got "4 hours"`},
		{"stream port", cri + "  stream_server_port = \"http\"\n",
			`config.toml:3: plugins."io.containerd.grpc.v1.cri".stream_server_port: invalid port "http" (want "0" to "65535")`},
		{"default runtime", "version = 3\n[plugins.\"io.containerd.cri.v1.runtime\".containerd]\n  default_runtime_name = \"kata\"\n[plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.kata]\n  runtime_type = \"io.containerd.kata.v2\"\n",
			`config.toml:3: plugins."io.containerd.cri.v1.runtime".containerd.default_runtime_name: no runc runtime named "kata" under runtimes: ingot could run no pod by default`},
		{"imports", "version = 2\nimports = [\"/etc/containerd/conf.d/*.toml\"]\n",
			`config.toml:2: imports: not supported: ingot bakes one config file into the image; merge the imported files into this one`},
		{"table expected", cri + "  registry = \"x\"\n",
			`config.toml:3: plugins."io.containerd.grpc.v1.cri".registry: want a table, got string`},
		{"syntax", "version = 2\nroot = \n", `config.toml:2: unexpected character U+000A at start of value`},
		{"duplicate", "version = 2\nroot = \"/a\"\nroot = \"/b\"\n", `config.toml:3: root: key root is already defined`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := Parse("config.toml", []byte(tc.doc))
			if err == nil {
				t.Fatalf("no error; got %+v", c)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("%T %v is not an *Error", err, err)
			}
			if err.Error() != tc.want {
				t.Errorf("got  %s\nwant %s", err, tc.want)
			}
		})
	}
}

func TestSeveralErrors(t *testing.T) {
	_, _, err := Parse("c.toml", []byte("version = 2\n[metrics]\n  address = \"x\"\n[grpc]\n  uid = -1\n"))
	want := "c.toml:3: metrics.address: invalid address \"x\" (want host:port, e.g. 127.0.0.1:1338)\nc.toml:5: grpc.uid: -1 is negative"
	if err == nil || err.Error() != want {
		t.Errorf("got %v", err)
	}
}
