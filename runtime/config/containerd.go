package config

import (
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"

	"ingot.dev/ingot/internal/tomlpos"
)

// Plugin IDs of the CRI settings. Version 2 keeps all of them under criV2;
// version 3 splits them three ways.
const (
	criV2       = "io.containerd.grpc.v1.cri" // v2: everything; v3: the server only
	criImages   = "io.containerd.cri.v1.images"
	criRuntime  = "io.containerd.cri.v1.runtime"
	runcV1      = "io.containerd.runc.v1"
	ingotUnpack = "dev.ingot.v1.unpack" // ingot's own: layer unpack limits (Unpack)
	noSystemd   = "ingot has no systemd: cgroups are managed directly (cgroupfs driver); set cgroupDriver: cgroupfs in the kubelet config"
	noPlugins   = "ingot is one binary, without containerd plugins"
	noContainer = "ingot serves only CRI, not containerd's own API"
)

// decode reads the document onto c, which holds the defaults.
func decode(d *doc, c *Config) {
	top := d.top()
	if len(top.m) == 0 {
		return // an empty file: all defaults, as containerd
	}
	if _, _, present := top.get("version"); !present {
		// containerd 1.x would read such a file as version 1, 2.x as version 3;
		// the plugin IDs used say which layout was meant.
		c.Version = 3
		plugins, _ := top.m["plugins"].(map[string]any)
		if _, ok := plugins[criImages]; !ok {
			if _, ok := plugins[criRuntime]; !ok {
				if _, ok := plugins[criV2]; ok {
					c.Version = 2
				}
			}
		}
		d.warn([]string{"version"}, fmt.Sprintf("missing; read as version %d from the plugin names used (add version = %d at the top)", c.Version, c.Version))
	} else if !top.integer("version", &c.Version) {
		return
	}
	if c.Version != 2 && c.Version != 3 {
		top.errorf("version", "unsupported config version %d (want 2 or 3)", c.Version)
		return
	}
	decodeTop(top, c)
	plugins := top.sub("plugins")
	if c.Version == 2 {
		decodeV2(plugins, c)
	} else {
		decodeV3(plugins, c)
	}
	unpack(plugins.sub(ingotUnpack), c)
	for _, id := range plugins.keys() {
		if !plugins.used[id] {
			plugins.used[id] = true
			plugins.warnf(id, "no such plugin in ingot (%s); its settings are ignored%s", noPlugins, pluginHint(c.Version, id))
		}
	}
	top.done()
	checkRuntimes(top, c)
	checkRegistry(d, c)
}

func pluginHint(version int, id string) string {
	switch {
	case version == 2 && (id == criImages || id == criRuntime):
		return fmt.Sprintf(` (version 2 reads CRI settings from plugins."%s"; set version = 3 to use this layout)`, criV2)
	case id == "cri":
		return fmt.Sprintf(` (that is the version 1 layout; use plugins."%s")`, criV2)
	}
	return ""
}

func decodeTop(t *table, c *Config) {
	if t.str("root", &c.RootDir) {
		absolute(t, "root", c.RootDir)
	}
	if t.str("state", &c.StateDir) {
		absolute(t, "state", c.StateDir)
	}
	if t.integer("oom_score", &c.OOMScore) && (c.OOMScore < -1000 || c.OOMScore > 1000) {
		t.errorf("oom_score", "%d is out of range (want -1000 to 1000)", c.OOMScore)
	}
	var imports []string
	if t.strs("imports", &imports) && len(imports) > 0 {
		t.errorf("imports", "not supported: ingot bakes one config file into the image; merge the imported files into this one")
	}
	t.unused(
		unusedKey{"temp", "", "ingot keeps temporary files under root"},
		unusedKey{"plugin_dir", "", noPlugins},
		unusedKey{"disabled_plugins", []string{}, noPlugins},
		unusedKey{"required_plugins", []string{}, noPlugins},
		unusedKey{"timeouts", map[string]any{}, "these are containerd-internal plugin timeouts"},
		unusedKey{"stream_processors", map[string]any{}, "ingot has no stream processors (no encrypted or custom-media-type layers)"},
		unusedKey{"proxy_plugins", map[string]any{}, noPlugins},
	)

	tt := t.sub("ttrpc")
	tt.unused(
		unusedKey{"address", "", noContainer + " (no ttrpc endpoint)"},
		unusedKey{"uid", 0, noContainer + " (no ttrpc endpoint)"},
		unusedKey{"gid", 0, noContainer + " (no ttrpc endpoint)"},
	)
	tt.done()
	cg := t.sub("cgroup")
	cg.unused(unusedKey{"path", "", "ingot places its own processes in cgroups"})
	cg.done()

	g := t.sub("grpc")
	if g.str("address", &c.GRPC.Address) {
		c.GRPC.Address = strings.TrimPrefix(c.GRPC.Address, "unix://")
		absolute(g, "address", c.GRPC.Address)
	}
	nonNegative(g, "uid", &c.GRPC.UID)
	nonNegative(g, "gid", &c.GRPC.GID)
	positive(g, "max_recv_message_size", &c.GRPC.MaxRecvMessageSize)
	positive(g, "max_send_message_size", &c.GRPC.MaxSendMessageSize)
	if g.str("tcp_address", &c.GRPC.TCPAddress) && c.GRPC.TCPAddress != "" {
		hostPort(g, "tcp_address", c.GRPC.TCPAddress)
	}
	g.str("tcp_tls_ca", &c.GRPC.TCPTLSCA)
	g.str("tcp_tls_cert", &c.GRPC.TCPTLSCert)
	g.str("tcp_tls_key", &c.GRPC.TCPTLSKey)
	if (c.GRPC.TCPTLSCert == "") != (c.GRPC.TCPTLSKey == "") {
		g.errorf("tcp_tls_cert", "tcp_tls_cert and tcp_tls_key go together")
	}
	g.done()

	dbg := t.sub("debug")
	var level string
	if dbg.str("level", &level) && level != "" {
		if l, ok := logLevel(level); ok {
			c.Log.Level = l
		} else {
			dbg.errorf("level", "invalid log level %q (want trace, debug, info, warn, error, fatal or panic)", level)
		}
	}
	if dbg.str("format", &c.Log.Format) {
		if c.Log.Format == "" {
			c.Log.Format = LogFormatText
		}
		dbg.oneOf("format", c.Log.Format, LogFormatText, LogFormatJSON)
	}
	dbg.unused(
		unusedKey{"address", "", "ingot has no debug socket"},
		unusedKey{"uid", 0, "ingot has no debug socket"},
		unusedKey{"gid", 0, "ingot has no debug socket"},
	)
	dbg.done()

	m := t.sub("metrics")
	if m.str("address", &c.Metrics.Address) && c.Metrics.Address != "" {
		hostPort(m, "address", c.Metrics.Address)
	}
	m.boolean("grpc_histogram", &c.Metrics.GRPCHistogram)
	m.done()
}

func logLevel(s string) (slog.Level, bool) {
	switch strings.ToLower(s) {
	case "trace":
		return slog.LevelDebug - 4, true
	case "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warn", "warning":
		return slog.LevelWarn, true
	case "error", "fatal", "panic":
		return slog.LevelError, true
	}
	return 0, false
}

func decodeV2(plugins *table, c *Config) {
	cri := plugins.sub(criV2)
	server(cri, c)
	runtime(cri, c)
	images(cri, c)
	cri.str("sandbox_image", &c.SandboxImage)
	var systemd bool
	if cri.boolean("systemd_cgroup", &systemd) && systemd {
		cri.warnf("systemd_cgroup", "%s", noSystemd)
	}
	ctd := cri.sub("containerd")
	snapshots(ctd, c)
	runtimes(ctd, c)
	ctd.unused(unusedKey{"no_pivot", false, "removed from containerd; use runtimes.<name>.options.NoPivotRoot"})
	ctd.done()
	cri.done()
}

func decodeV3(plugins *table, c *Config) {
	img := plugins.sub(criImages)
	images(img, c)
	snapshots(img, c)
	pinnedImages(img.sub("pinned_images"), c)
	img.unused(unusedKey{"runtime_platforms", map[string]any{}, "ingot pulls and runs images for the node's own platform only"})
	img.hint = moved(img)
	img.done()

	rt := plugins.sub(criRuntime)
	runtime(rt, c)
	ctd := rt.sub("containerd")
	runtimes(ctd, c)
	ctd.hint = moved(ctd)
	ctd.done()
	rt.hint = moved(rt)
	rt.done()

	srv := plugins.sub(criV2)
	server(srv, c)
	srv.hint = moved(srv)
	srv.done()
}

// pinnedImages reads pinned_images: sandbox is honoured, other pins warn.
func pinnedImages(t *table, c *Config) {
	t.str("sandbox", &c.SandboxImage)
	for _, k := range t.keys() {
		if !t.used[k] {
			t.used[k] = true
			var s string
			if t.str(k, &s) {
				t.warnf(k, "ingot pins only the sandbox image")
			}
		}
	}
}

// v3Home says where version 3 reads a key that version 2 keeps directly
// under plugins."io.containerd.grpc.v1.cri", for hints on misplaced keys.
var v3Home = map[string][]string{
	"sandbox_image":                {criImages, "pinned_images", "sandbox"},
	"snapshotter":                  {criImages, "snapshotter"},
	"max_concurrent_downloads":     {criImages, "max_concurrent_downloads"},
	"image_pull_progress_timeout":  {criImages, "image_pull_progress_timeout"},
	"registry":                     {criImages, "registry"},
	"image_decryption":             {criImages, "image_decryption"},
	"disable_snapshot_annotations": {criImages, "disable_snapshot_annotations"},
	"discard_unpacked_layers":      {criImages, "discard_unpacked_layers"},
	"max_container_log_line_size":  {criRuntime, "max_container_log_line_size"},
	"enable_selinux":               {criRuntime, "enable_selinux"},
	"disable_apparmor":             {criRuntime, "disable_apparmor"},
	"unset_seccomp_profile":        {criRuntime, "unset_seccomp_profile"},
	"enable_cdi":                   {criRuntime, "enable_cdi"},
	"cni":                          {criRuntime, "cni"},
	"containerd":                   {criRuntime, "containerd"},
	"default_runtime_name":         {criRuntime, "containerd", "default_runtime_name"},
	"runtimes":                     {criRuntime, "containerd", "runtimes"},
	"disable_tcp_service":          {criV2, "disable_tcp_service"},
	"stream_server_address":        {criV2, "stream_server_address"},
	"stream_server_port":           {criV2, "stream_server_port"},
	"stream_idle_timeout":          {criV2, "stream_idle_timeout"},
	"enable_tls_streaming":         {criV2, "enable_tls_streaming"},
	"x509_key_pair_streaming":      {criV2, "x509_key_pair_streaming"},
}

// moved explains an unknown key of a version 3 table that version 3 reads
// from elsewhere.
func moved(t *table) func(string) string {
	return func(key string) string {
		home, ok := v3Home[key]
		if !ok {
			return ""
		}
		p := with([]string{"plugins"}, home...)
		if slices.Equal(p[:len(p)-1], t.path) {
			return ""
		}
		return "version 3 reads it from " + display(p)
	}
}

// server reads the CRI server keys (v2: the CRI table; v3: io.containerd.grpc.v1.cri).
func server(t *table, c *Config) {
	disableTCP := true
	t.boolean("disable_tcp_service", &disableTCP)
	if disableTCP && c.GRPC.TCPAddress != "" {
		t.d.warn([]string{"grpc", "tcp_address"}, fmt.Sprintf("no TCP listener: disable_tcp_service is true and %s", noContainer))
		c.GRPC.TCPAddress, c.GRPC.TCPTLSCA, c.GRPC.TCPTLSCert, c.GRPC.TCPTLSKey = "", "", "", ""
	}
	if t.str("stream_server_address", &c.Stream.Address) && c.Stream.Address != "" && net.ParseIP(c.Stream.Address) == nil {
		t.errorf("stream_server_address", "invalid IP address %q", c.Stream.Address)
	}
	if t.str("stream_server_port", &c.Stream.Port) {
		if n, err := strconv.Atoi(c.Stream.Port); err != nil || n < 0 || n > 65535 {
			t.errorf("stream_server_port", "invalid port %q (want \"0\" to \"65535\")", c.Stream.Port)
		}
	}
	t.duration("stream_idle_timeout", &c.Stream.IdleTimeout)
	t.boolean("enable_tls_streaming", &c.Stream.TLS)
	x := t.sub("x509_key_pair_streaming")
	x.str("tls_cert_file", &c.Stream.TLSCertFile)
	x.str("tls_key_file", &c.Stream.TLSKeyFile)
	if (c.Stream.TLSCertFile == "") != (c.Stream.TLSKeyFile == "") {
		x.errorf("tls_cert_file", "tls_cert_file and tls_key_file go together")
	}
	x.done()
}

// runtime reads the keys of how containers are made (v2: the CRI table; v3:
// io.containerd.cri.v1.runtime).
func runtime(t *table, c *Config) {
	if t.integer("max_container_log_line_size", &c.MaxContainerLogLineSize) {
		switch n := c.MaxContainerLogLineSize; {
		case n < -1:
			t.errorf("max_container_log_line_size", "%d is negative (want a size in bytes, or -1 for no limit)", n)
		case n == -1:
			c.MaxContainerLogLineSize = 0
		}
	}
	p := &c.Containers
	t.boolean("disable_apparmor", &p.DisableAppArmor)
	if t.str("unset_seccomp_profile", &p.UnsetSeccompProfile) {
		s := p.UnsetSeccompProfile
		if s != "" && s != "unconfined" && s != "runtime/default" && s != "docker/default" && !strings.HasPrefix(s, "localhost/") {
			t.errorf("unset_seccomp_profile", "invalid profile %q (want \"\", \"unconfined\", \"runtime/default\" or \"localhost/<path>\")", s)
		}
		if s == "docker/default" {
			p.UnsetSeccompProfile = "runtime/default"
		}
	}
	t.boolean("restrict_oom_score_adj", &p.RestrictOOMScoreAdj)
	t.boolean("disable_proc_mount", &p.DisableProcMount)
	t.boolean("device_ownership_from_security_context", &p.DeviceOwnershipFromSecurityContext)
	t.boolean("ignore_image_defined_volumes", &p.IgnoreImageDefinedVolumes)
	t.boolean("enable_unprivileged_ports", &p.EnableUnprivilegedPorts)
	t.boolean("enable_unprivileged_icmp", &p.EnableUnprivilegedICMP)
	t.boolean("tolerate_missing_hugetlb_controller", &p.TolerateMissingHugetlbController)
	t.boolean("disable_hugetlb_controller", &p.DisableHugetlbController)
	t.duration("drain_exec_sync_io_timeout", &c.DrainExecSyncIOTimeout)
	t.unused(
		unusedKey{"enable_selinux", false, "ingot's kernel runs without SELinux; SELinux options in pod specs are refused"},
		unusedKey{"selinux_category_range", 1024, "ingot's kernel runs without SELinux"},
		unusedKey{"disable_cgroup", false, "ingot always manages container cgroups"},
		unusedKey{"enable_cdi", false, "ingot does not inject CDI devices; CDI device requests fail"},
		unusedKey{"cdi_spec_dirs", []string{"/etc/cdi", "/var/run/cdi"}, "ingot does not inject CDI devices"},
		unusedKey{"netns_mounts_under_state_dir", false, "ingot decides where pod network namespaces are mounted"},
		unusedKey{"ignore_deprecation_warnings", []string{}, "ingot has no containerd deprecation warnings to silence"},
	)
	cni(t.sub("cni"), c)
}

// images reads the image keys (v2: the CRI table; v3: io.containerd.cri.v1.images).
func images(t *table, c *Config) {
	if t.integer("max_concurrent_downloads", &c.Images.MaxConcurrentDownloads) && c.Images.MaxConcurrentDownloads < 0 {
		t.errorf("max_concurrent_downloads", "%d is negative (want a count, 0 for no limit)", c.Images.MaxConcurrentDownloads)
	}
	t.duration("image_pull_progress_timeout", &c.Images.PullProgressTimeout)
	t.boolean("image_pull_with_sync_fs", &c.Images.PullWithSyncFS)
	t.unused(
		unusedKey{"stats_collect_period", 10, "ingot computes filesystem usage on request"},
		unusedKey{"disable_image_pull_with_transfer_service", false, ""}, // ingot pulls one way only
		unusedKey{"use_local_image_pull", false, ""},
		unusedKey{"concurrent_layer_fetch_buffer", 0, "ingot fetches each layer in one request"},
	)
	dec := t.sub("image_decryption")
	// "node" does nothing in containerd either without stream processors,
	// which ingot warns about.
	dec.unused(unusedKey{"key_model", "node", "ingot cannot decrypt encrypted images"})
	dec.done()
	registry(t.sub("registry"), c)
}

// unpack reads ingot's layer unpack limits, the same table in both layouts.
func unpack(t *table, c *Config) {
	positive(t, "max_path_length", &c.Unpack.MaxPathLength)
	positive(t, "max_path_depth", &c.Unpack.MaxPathDepth)
	positive(t, "max_entries", &c.Unpack.MaxEntries)
	positive(t, "max_uncompressed_bytes", &c.Unpack.MaxUncompressedBytes)
	t.done()
}

// snapshots reads the unpack keys (v2: containerd table; v3: images table).
func snapshots(t *table, c *Config) {
	if t.str("snapshotter", &c.Images.Snapshotter) {
		if c.Images.Snapshotter == "" {
			c.Images.Snapshotter = SnapshotterOverlayfs
		}
		t.oneOf("snapshotter", c.Images.Snapshotter, SnapshotterOverlayfs, SnapshotterNative)
	}
	t.boolean("discard_unpacked_layers", &c.Images.DiscardUnpackedLayers)
	t.unused(unusedKey{"disable_snapshot_annotations", true, "ingot has no remote snapshotters to pass annotations to"})
}

func cni(t *table, c *Config) {
	var dir string
	if t.str("bin_dir", &dir) {
		c.CNI.BinDirs = []string{dir}
	}
	t.strs("bin_dirs", &c.CNI.BinDirs) // containerd 2.1; wins over bin_dir
	for i, d := range c.CNI.BinDirs {
		if !path.IsAbs(d) {
			t.d.errorf(index(with(t.path, "bin_dirs"), i), "%q is not an absolute path", d)
		}
	}
	if t.str("conf_dir", &c.CNI.ConfDir) {
		absolute(t, "conf_dir", c.CNI.ConfDir)
	}
	nonNegative(t, "max_conf_num", &c.CNI.MaxConfNum)
	if t.str("ip_pref", &c.CNI.IPPref) {
		if c.CNI.IPPref == "" {
			c.CNI.IPPref = DefaultCNIIPPref
		}
		t.oneOf("ip_pref", c.CNI.IPPref, "ipv4", "ipv6", "cni")
	}
	t.unused(
		unusedKey{"conf_template", "", "ingot does not generate CNI configs from a template; put the config in conf_dir"},
		unusedKey{"setup_serially", false, ""},        // ingot runs the CNI plugins of a pod one after another anyway
		unusedKey{"use_internal_loopback", false, ""}, // ingot always brings lo up itself
	)
	t.done()
}

// runtimes reads default_runtime_name and the runtimes table.
func runtimes(t *table, c *Config) {
	t.str("default_runtime_name", &c.DefaultRuntime)
	t.unused(
		unusedKey{"ignore_blockio_not_enabled_errors", false, "ingot has no block-I/O classes"},
		unusedKey{"ignore_rdt_not_enabled_errors", false, "ingot has no RDT classes"},
		unusedKey{"default_runtime", map[string]any{}, "removed from containerd; use default_runtime_name and runtimes"},
		unusedKey{"untrusted_workload_runtime", map[string]any{}, "removed from containerd; use a runtime class under runtimes"},
	)
	rs := t.sub("runtimes")
	for _, name := range rs.keys() {
		r, ok := runtimeEntry(rs.sub(name), name)
		if ok {
			c.Runtimes[name] = r
		}
	}
}

func runtimeEntry(t *table, name string) (Runtime, bool) {
	var r Runtime
	r.Type = RuntimeRuncV2
	if t.str("runtime_type", &r.Type) && r.Type != RuntimeRuncV2 && r.Type != runcV1 && r.Type != "" {
		t.warnf("runtime_type", "ingot runs containers only with its built-in runc (libcontainer); runtime handler %q is not available", name)
		for _, k := range t.keys() {
			t.used[k] = true // the options of another runtime are its own business
		}
		return r, false
	}
	r.Type = RuntimeRuncV2
	t.strs("pod_annotations", &r.PodAnnotations)
	t.strs("container_annotations", &r.ContainerAnnotations)
	t.boolean("privileged_without_host_devices", &r.PrivilegedWithoutHostDevices)
	t.boolean("privileged_without_host_devices_all_devices_allowed", &r.PrivilegedWithoutHostDevicesAllDevicesAllowed)
	for i, p := range append(r.PodAnnotations, r.ContainerAnnotations...) {
		if _, err := path.Match(p, ""); err != nil {
			key := "pod_annotations"
			if i >= len(r.PodAnnotations) {
				key, i = "container_annotations", i-len(r.PodAnnotations)
			}
			t.d.errorf(index(with(t.path, key), i), "bad pattern %q: %v", p, err)
		}
	}
	t.unused(
		unusedKey{"runtime_path", "", "ingot has no shim binaries to choose"},
		unusedKey{"runtime_engine", "", "removed from containerd"},
		unusedKey{"runtime_root", "", "removed from containerd"},
		unusedKey{"base_runtime_spec", "", "ingot builds OCI specs from its own defaults"},
		unusedKey{"cni_conf_dir", "", "ingot uses one CNI config for all runtime handlers (cni.conf_dir)"},
		unusedKey{"cni_max_conf_num", 0, "ingot uses one CNI config for all runtime handlers (cni.max_conf_num)"},
		unusedKey{"snapshotter", "", "ingot uses one snapshotter for all runtime handlers"},
		unusedKey{"sandboxer", "podsandbox", "ingot's sandbox is always its built-in pause process"},
		unusedKey{"sandbox_mode", "podsandbox", "ingot's sandbox is always its built-in pause process"},
		unusedKey{"io_type", "", "ingot's shim always holds container stdio itself"},
		unusedKey{"treat_ro_mounts_as_rro", false, "ingot makes read-only mounts read-only, not recursively read-only"},
		unusedKey{"cgroup_writable", false, "ingot mounts the container cgroup read-only"},
	)
	o := t.sub("options")
	var systemd bool
	if o.boolean("SystemdCgroup", &systemd) && systemd {
		o.warnf("SystemdCgroup", "%s", noSystemd)
	}
	o.boolean("NoPivotRoot", &r.NoPivotRoot)
	o.boolean("NoNewKeyring", &r.NoNewKeyring)
	o.unused(
		unusedKey{"BinaryName", "", "ingot runs containers with its built-in libcontainer, not a runc binary"},
		unusedKey{"Root", "", "ingot keeps container state under state"},
		unusedKey{"ShimCgroup", "", "ingot places its shims itself"},
		unusedKey{"IoUid", 0, "ingot's shim holds stdio in-process; there are no FIFOs to own"},
		unusedKey{"IoGid", 0, "ingot's shim holds stdio in-process; there are no FIFOs to own"},
		unusedKey{"CriuPath", "", "ingot does not checkpoint containers"},
		unusedKey{"CriuImagePath", "", "ingot does not checkpoint containers"},
		unusedKey{"CriuWorkPath", "", "ingot does not checkpoint containers"},
		unusedKey{"TaskAPIAddress", "", "ingot has no task API"},
		unusedKey{"TaskAPIVersion", 0, "ingot has no task API"},
	)
	o.done()
	t.done()
	return r, true
}

func checkRuntimes(t *table, c *Config) {
	if _, ok := c.Runtimes[c.DefaultRuntime]; ok {
		return
	}
	key := []string{"plugins", criV2, "containerd", "default_runtime_name"}
	if c.Version == 3 {
		key = []string{"plugins", criRuntime, "containerd", "default_runtime_name"}
	}
	t.d.errorf(key, "no runc runtime named %q under runtimes: ingot could run no pod by default", c.DefaultRuntime)
}

func registry(t *table, c *Config) {
	r := &c.Registry
	if t.str("config_path", &r.ConfigPath) && r.ConfigPath != "" {
		// containerd allows a list joined by ':'; each must be absolute.
		for _, p := range strings.Split(r.ConfigPath, ":") {
			absolute(t, "config_path", p)
		}
	}
	mirrors := t.sub("mirrors")
	for _, host := range mirrors.keys() {
		m := mirrors.sub(host)
		var eps []string
		if m.strs("endpoint", &eps) {
			for i, e := range eps {
				if err := endpointURL(e); err != nil {
					t.d.errorf(index(with(m.path, "endpoint"), i), "%v", err)
				}
			}
			r.Mirrors[host] = eps
		}
		m.done()
	}
	configs := t.sub("configs")
	for _, host := range configs.keys() {
		rc := configs.sub(host)
		var cfg RegistryConfig
		if tl := rc.sub("tls"); tl.present() {
			cfg.TLS = &TLS{}
			tl.str("ca_file", &cfg.TLS.CAFile)
			tl.str("cert_file", &cfg.TLS.CertFile)
			tl.str("key_file", &cfg.TLS.KeyFile)
			tl.boolean("insecure_skip_verify", &cfg.TLS.InsecureSkipVerify)
			if cfg.TLS.CertFile != "" && cfg.TLS.KeyFile == "" {
				tl.errorf("cert_file", "a client certificate needs key_file too")
			}
			if cfg.TLS.KeyFile != "" && cfg.TLS.CertFile == "" {
				tl.errorf("key_file", "a client key needs cert_file too")
			}
			tl.done()
		}
		if at := rc.sub("auth"); at.present() {
			cfg.Auth = readAuth(at)
		}
		rc.done()
		r.Configs[host] = cfg
	}
	// auths (deprecated since containerd 1.3) is keyed by endpoint URL.
	auths := t.sub("auths")
	for _, ep := range auths.keys() {
		a := readAuth(auths.sub(ep))
		host := ep
		if u, err := url.Parse(ep); err == nil && u.Host != "" {
			host = u.Host
		}
		cfg := r.Configs[host]
		if cfg.Auth == nil {
			cfg.Auth = a
			r.Configs[host] = cfg
		}
		auths.warnf(ep, "deprecated in containerd; read as configs.%s.auth", tomlpos.QuoteKey(host))
	}
	headers := t.sub("headers")
	for _, h := range headers.keys() {
		v, p, _ := headers.get(h)
		if l, ok := stringOrList(headers, p, v); ok {
			r.Headers[h] = l
		}
	}
	t.done()
}

func readAuth(t *table) *Auth {
	a := &Auth{}
	t.str("username", &a.Username)
	t.str("password", &a.Password)
	t.str("identitytoken", &a.IdentityToken)
	if t.str("auth", &a.Auth) && a.Auth != "" {
		dec, err := base64.StdEncoding.DecodeString(a.Auth)
		if err != nil || !strings.Contains(string(dec), ":") {
			t.errorf("auth", "want base64 of \"user:password\"")
		}
	}
	t.done()
	return a
}

func checkRegistry(d *doc, c *Config) {
	r := c.Registry
	if r.ConfigPath == "" || len(r.Mirrors) == 0 {
		return
	}
	// The first mirrors table written (entries are in document order).
	var p []string
	for _, e := range d.idx.Entries() {
		if n := len(e.Path); n >= 2 && e.Path[n-2] == (tomlpos.Step{Key: "registry", Index: -1}) && e.Path[n-1] == (tomlpos.Step{Key: "mirrors", Index: -1}) {
			for _, s := range e.Path {
				p = append(p, s.Key)
			}
			break
		}
	}
	d.warn(p, "containerd refuses mirrors together with config_path; ingot uses <config_path>/<host>/hosts.toml where one exists and these mirrors for other hosts")
}

// endpointURL checks a mirror endpoint: http(s)://host[:port][/path].
func endpointURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("invalid endpoint %q (want http(s)://host[:port][/path])", s)
	}
	return nil
}

func absolute(t *table, key, p string) {
	if !path.IsAbs(p) {
		t.errorf(key, "%q is not an absolute path", p)
	}
}

func nonNegative(t *table, key string, dst *int) {
	if t.integer(key, dst) && *dst < 0 {
		t.errorf(key, "%d is negative", *dst)
	}
}

func positive(t *table, key string, dst *int) {
	if t.integer(key, dst) && *dst <= 0 {
		t.errorf(key, "%d is not positive", *dst)
	}
}

// hostPort checks a listen address host:port.
func hostPort(t *table, key, s string) {
	host, port, err := net.SplitHostPort(s)
	if err == nil {
		var n int
		n, err = strconv.Atoi(port)
		if err == nil && (n < 0 || n > 65535) {
			err = fmt.Errorf("port out of range")
		}
		if err == nil && host != "" && host != "localhost" && net.ParseIP(host) == nil {
			err = fmt.Errorf("host is not an IP address")
		}
	}
	if err != nil {
		t.errorf(key, "invalid address %q (want host:port, e.g. 127.0.0.1:1338)", s)
	}
}
