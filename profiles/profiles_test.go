package profiles

import (
	"cmp"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestBuiltins(t *testing.T) {
	if got, want := Names(), []string{"dev", "metal", "minimal", "worker"}; !slices.Equal(got, want) {
		t.Fatalf("Names() = %q, want %q", got, want)
	}
	wantModules := map[string][]string{
		"minimal": {"virtio_pci", "virtio_blk", "virtio_rng", "button", "evdev"},
		"dev": {"virtio_pci", "virtio_blk", "virtio_rng", "virtio_net", "overlay", "bridge", "br_netfilter", "veth",
			"nf_tables", "nft_chain_nat", "nft_nat", "nft_masq", "nft_fib_inet", "nft_ct", "button", "evdev",
			"qemu_fw_cfg", "fat", "vfat", "nls_cp437", "nls_ascii", "cdrom", "isofs"},
		"worker": {"virtio_pci", "virtio_blk", "virtio_rng", "virtio_net", "overlay", "bridge", "br_netfilter", "veth",
			"nf_tables", "nft_chain_nat", "nft_nat", "nft_masq", "nft_fib_inet", "nft_ct",
			"nft_numgen", "nft_reject_inet", "nft_reject_ipv4", "nft_reject_ipv6", "nft_limit", "nft_objref", "nf_conntrack_netlink",
			"nft_compat", "xt_comment", "xt_mark", "xt_conntrack", "xt_MASQUERADE", "xt_addrtype",
			"xt_statistic", "xt_nat", "xt_multiport", "xt_physdev", "ipt_REJECT",
			"button", "evdev", "qemu_fw_cfg", "fat", "vfat", "nls_cp437", "nls_ascii", "cdrom", "isofs"},
	}
	// metal: worker's without the virtio drivers, which its module sets bring when a device asks.
	wantModules["metal"] = slices.DeleteFunc(slices.Clone(wantModules["worker"]), func(m string) bool { return strings.HasPrefix(m, "virtio_") })
	wantKernel := map[string]string{"metal": "linux-image-arm64"}
	for _, name := range Names() {
		p, raw, err := Builtin(name)
		if err != nil {
			t.Fatalf("Builtin(%q): %v", name, err)
		}
		if p.Name != name {
			t.Errorf("%s: name = %q, want the file's name", name, p.Name)
		}
		if err := p.Validate(); err != nil {
			t.Errorf("%s: Validate: %v", name, err)
		}
		if !strings.Contains(string(raw), "# ") {
			t.Errorf("%s: raw TOML has no comments", name)
		}
		if !slices.Equal(p.Kernel.Modules, wantModules[name]) {
			t.Errorf("%s: modules = %q, want %q", name, p.Kernel.Modules, wantModules[name])
		}
		if got, want := p.Kernel.PackageFor("arm64"), cmp.Or(wantKernel[name], "linux-image-cloud-arm64"); got != want {
			t.Errorf("%s: kernel package for arm64 = %q", name, got)
		}
		if len(p.Kernel.Cmdline) != 0 {
			t.Errorf("%s: cmdline = %q, want none", name, p.Kernel.Cmdline)
		}
	}

	min, _, _ := Builtin("minimal")
	if len(min.Services) != 0 || len(min.Bundles) != 0 || min.Runtime.Enabled {
		t.Errorf("minimal: services %v, bundles %v; want none", min.Services, min.Bundles)
	}

	worker, _, _ := Builtin("worker")
	if !worker.Kubelet.Enabled || !worker.Runtime.Enabled || !slices.Equal(worker.Bundles, []string{"kubelet"}) || len(worker.Services) != 0 {
		t.Errorf("worker: kubelet %+v, runtime %v, bundles %q, services %v; want a kubelet and a runtime, no shell", worker.Kubelet, worker.Runtime.Enabled, worker.Bundles, worker.Services)
	}

	metal, _, _ := Builtin("metal")
	if !metal.Kubelet.Enabled || !metal.Runtime.Enabled || len(metal.Services) != 0 ||
		!slices.Equal(metal.Kernel.Console, []string{ConsoleVGA, ConsoleSerial}) || len(metal.Network.Interfaces) != 1 ||
		metal.Network.Interfaces[0].Match != MatchEthernet || !metal.Network.Interfaces[0].DHCP ||
		!slices.Equal(metal.Kernel.ModuleSets, []string{"virtio", "storage", "network", "usb-storage"}) {
		t.Errorf("metal: kubelet %v, runtime %v, services %v, console %q, network %+v, sets %q", metal.Kubelet.Enabled, metal.Runtime.Enabled,
			metal.Services, metal.Kernel.Console, metal.Network.Interfaces, metal.Kernel.ModuleSets)
	}

	dev, _, _ := Builtin("dev")
	if dev.Hostname != "ingot-dev" || !slices.Equal(dev.Bundles, []string{"busybox", "crictl"}) || len(dev.Services) != 1 || !dev.Runtime.Enabled {
		t.Fatalf("dev: hostname %q, bundles %q, %d services", dev.Hostname, dev.Bundles, len(dev.Services))
	}
	sh := dev.Services[0]
	if sh.Name != "shell" || !slices.Equal(sh.Command, []string{"/bin/sh", "-l"}) || !sh.Console || sh.Restart != RestartAlways ||
		!slices.Equal(sh.Env, []string{"PATH=/bin:/sbin:/usr/bin:/usr/sbin", "HOME=/root", "TERM=vt100", "ENV=/etc/profile"}) {
		t.Errorf("dev: shell service = %+v", sh)
	}

	if _, _, err := Builtin("nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Builtin(nope) = %v, want fs.ErrNotExist", err)
	}
}

func TestDefaults(t *testing.T) {
	p, err := Parse("d.toml", []byte("name = \"d\"\n[[service]]\nname = \"s\"\ncommand = [\"/bin/s\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Hostname != "ingot" || p.Kernel.Package != "linux-image-cloud-{arch}" ||
		p.Disk != (Disk{ESPMiB: 256, StateMiB: 256}) || p.Services[0].Restart != RestartAlways {
		t.Errorf("defaults not applied: %+v", p)
	}
}

func TestLoad(t *testing.T) {
	if p, err := Load("dev"); err != nil || p.Name != "dev" {
		t.Fatalf("Load(dev) = %v, %v", p, err)
	}
	file := filepath.Join(t.TempDir(), "mine.toml")
	if err := os.WriteFile(file, []byte("name = \"mine\"\nhostname = \"Bad_Host\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(file)
	var e *Error
	if !errors.As(err, &e) || e.File != file || e.Line != 2 || e.Key != "hostname" {
		t.Errorf("Load(%s) = %v, want *Error at %s:2 hostname", file, err, file)
	}
	if _, err := Load("no-such-profile"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(no-such-profile) = %v, want fs.ErrNotExist", err)
	}
}

// TestParseErrors checks that each kind of mistake is reported as one line
// naming the file, the line and the key.
func TestParseErrors(t *testing.T) {
	const svc = "[[service]]\nname = \"a\"\ncommand = [\"/bin/a\"]\n"
	for _, tc := range []struct {
		name, doc, want string
		line            int
		key             string
	}{
		{"unknown top-level key", "name = \"x\"\n\nkernal = 1\n",
			`x.toml:3: unknown key "kernal"`, 3, ""},
		{"unknown nested key", "name = \"x\"\n[kernel]\nmodlues = []\n",
			`x.toml:3: kernel: unknown key "modlues"`, 3, "kernel"},
		{"unknown key in service", "name = \"x\"\n" + svc + svc + "restat = \"never\"\n",
			`x.toml:8: service[1]: unknown key "restat"`, 8, "service[1]"},
		{"wrong case", "Name = \"x\"\n",
			`x.toml:1: unknown key "Name" (keys are case-sensitive: did you mean "name"?)`, 1, ""},
		{"wrong type", "name = \"x\"\n[kernel]\n\n\nmodules = 5\n",
			`x.toml:5: kernel.modules: wrong type: want array of strings, got integer`, 5, "kernel.modules"},
		{"wrong element type", "name = \"x\"\n[kernel]\nmodules = [\n  \"a\",\n  7,\n]\n",
			`x.toml:5: kernel.modules[1]: wrong type: want string, got integer`, 5, "kernel.modules[1]"},
		{"wrong type in service", "name = \"x\"\n" + svc + "console = \"yes\"\n",
			`x.toml:5: service[0].console: wrong type: want boolean, got string`, 5, "service[0].console"},
		{"table for string", "name = \"x\"\nhostname = { a = 1 }\n",
			`x.toml:2: hostname: wrong type: want string, got table`, 2, "hostname"},
		{"unquoted sysctl", "name = \"x\"\n[sysctls]\nnet.ipv4.ip_forward = \"1\"\n",
			`x.toml:3: sysctls: key net.ipv4.ip_forward is dotted, so TOML reads it as nested tables; quote it: "net.ipv4.ip_forward" = "..."`, 3, "sysctls"},
		{"missing name", "hostname = \"h\"\n",
			`x.toml: name: required`, 0, "name"},
		{"bad name", "name = \"My_Profile\"\n",
			`x.toml:1: name: invalid value "My_Profile" (want lowercase letters, digits and '-')`, 1, "name"},
		{"bad module name", "name = \"x\"\n[kernel]\nmodules = [\"virtio_pci\", \"virtio-blk.ko\"]\n",
			`x.toml:3: kernel.modules[1]: invalid module name "virtio-blk.ko" (want [A-Za-z0-9_-]+, without .ko)`, 3, "kernel.modules[1]"},
		{"unknown module set", "name = \"x\"\n[kernel]\nmodule_sets = [\"virtio\", \"wifi\"]\n",
			`x.toml:3: kernel.module_sets[1]: unknown module set "wifi" (known: network, storage, usb-storage, virtio)`, 3, "kernel.module_sets[1]"},
		{"duplicate service", "name = \"x\"\n" + svc + "\n" + svc,
			`x.toml:7: service[1].name: duplicate service "a" (also service[0])`, 7, "service[1].name"},
		{"relative command path", "name = \"x\"\n[[service]]\nname = \"a\"\ncommand = [\n  \"bin/sh\",\n]\n",
			`x.toml:5: service[0].command[0]: "bin/sh" is not an absolute path (init does not search $PATH)`, 5, "service[0].command[0]"},
		{"missing command", "name = \"x\"\n[[service]]\nname = \"a\"\n",
			`x.toml:2: service[0].command: required (want an array: absolute path, then arguments)`, 2, "service[0].command"},
		{"bad restart", "name = \"x\"\n" + svc + svc + "restart = \"sometimes\"\n",
			`x.toml:8: service[1].restart: invalid value "sometimes" (want always, on-failure or never)`, 8, "service[1].restart"},
		{"empty restart", "name = \"x\"\n" + svc + "restart = \"\"\n",
			`x.toml:5: service[0].restart: invalid value "" (want always, on-failure or never)`, 5, "service[0].restart"},
		{"echo on a console service", "name = \"x\"\n" + svc + "console = true\necho = true\n",
			`x.toml:6: service[0].echo: a console service writes to the console itself; echo is for services whose output is captured`, 6, "service[0].echo"},
		{"two console services", "name = \"x\"\n" + svc + "console = true\n[[service]]\nname = \"b\"\ncommand = [\"/bin/b\"]\nconsole = true\n",
			`x.toml:9: service[1].console: only one service may own the console; service[0] "a" already does`, 9, "service[1].console"},
		{"bad env", "name = \"x\"\n" + svc + "env = [\"A=1\", \"oops\"]\n",
			`x.toml:5: service[0].env[1]: invalid value "oops" (want KEY=VALUE, KEY of letters, digits and '_')`, 5, "service[0].env[1]"},
		{"bad hostname", "name = \"x\"\nhostname = \"-node.example\"\n",
			`x.toml:2: hostname: invalid value "-node.example" (want an RFC 1123 hostname: dot-separated labels of 1-63 lowercase letters, digits and '-', not starting or ending with '-')`, 2, "hostname"},
		{"bad runtime config", "name = \"x\"\n[runtime]\nconfig = \"\"\"\nversion = 2\n[plugins.\\\"io.containerd.grpc.v1.cri\\\"]\nmax_container_log_line_size = \\\"big\\\"\n\"\"\"\n",
			`x.toml:3: runtime.config: the embedded config.toml:3: plugins."io.containerd.grpc.v1.cri".max_container_log_line_size: want an integer, got string`, 3, "runtime.config"},
		{"bad interface address", "name = \"x\"\n[[network.interface]]\nname = \"eth0\"\naddresses = [\"10.0.2.300/24\"]\n",
			`x.toml:4: network.interface[0].addresses[0]: invalid address "10.0.2.300/24" (want CIDR like 10.0.2.15/24)`, 4, "network.interface[0].addresses[0]"},
		{"unknown interface match", "name = \"x\"\n[[network.interface]]\nmatch = \"wifi\"\ndhcp = true\n",
			`x.toml:3: network.interface[0].match: unknown match "wifi" (want "ethernet": every wired Ethernet NIC)`, 3, "network.interface[0].match"},
		{"interface match with an address", "name = \"x\"\n[[network.interface]]\nmatch = \"ethernet\"\ndhcp = true\naddresses = [\"10.0.0.2/24\"]\n",
			`x.toml:3: network.interface[0].match: matched links are configured by DHCP only (dhcp = true, no addresses or gateway: the same address on every link would clash)`, 3, "network.interface[0].match"},
		{"interface match and name", "name = \"x\"\n[[network.interface]]\nname = \"eth0\"\nmatch = \"ethernet\"\ndhcp = true\n",
			`x.toml:4: network.interface[0].match: an interface has a name ("eth0") or a match, not both`, 4, "network.interface[0].match"},
		{"unknown console", "name = \"x\"\n[kernel]\nconsole = [\"serial\", \"hdmi\"]\n",
			`x.toml:3: kernel.console[1]: unknown console "hdmi" (want "serial" or "vga")`, 3, "kernel.console[1]"},
		{"no console", "name = \"x\"\n[kernel]\nconsole = []\n",
			`x.toml:3: kernel.console: no console (want one or both of "serial", "vga")`, 3, "kernel.console"},
		{"unknown bundle", "name = \"x\"\nbundles = [\"busybox\", \"toybox\"]\n",
			`x.toml:2: bundles[1]: unknown bundle "toybox" (known: busybox, crictl, cni-plugins, kubelet)`, 2, "bundles[1]"},
		{"kubelet without its bundle", "name = \"x\"\n[kubelet]\nenabled = true\n",
			`x.toml:3: kubelet.enabled: the kubelet needs the "kubelet" bundle (add it to bundles)`, 3, "kubelet.enabled"},
		{"kubelet without the runtime", "name = \"x\"\nbundles = [\"kubelet\"]\n[runtime]\nenabled = false\n[kubelet]\nenabled = true\n",
			`x.toml:6: kubelet.enabled: the kubelet needs the runtime (runtime.enabled = true)`, 6, "kubelet.enabled"},
		{"kubelet binary not absolute", "name = \"x\"\nbundles = [\"kubelet\"]\n[kubelet]\nbinary = \"bin/kubelet\"\n",
			`x.toml:4: kubelet.binary: invalid value "bin/kubelet" (want an absolute path on the build host)`, 4, "kubelet.binary"},
		{"kubelet cluster_dns not an address", "name = \"x\"\n[kubelet]\ncluster_dns = [\"10.96.0.10\", \"dns\"]\n",
			`x.toml:3: kubelet.cluster_dns[1]: invalid value "dns" (want an IP address)`, 3, "kubelet.cluster_dns[1]"},
		{"kubelet max_pods zero", "name = \"x\"\n[kubelet]\nmax_pods = 0\n",
			`x.toml:3: kubelet.max_pods: 0 is out of range (1 to 10000)`, 3, "kubelet.max_pods"},
		{"bad sysctl value", "name = \"x\"\n[sysctls]\n\"net.ipv4.ip_forward\" = \"\"\n",
			`x.toml:3: sysctls."net.ipv4.ip_forward": invalid value "" (want a non-empty single line)`, 3, `sysctls."net.ipv4.ip_forward"`},
		{"bad sysctl name", "name = \"x\"\nsysctls = { \"net..x\" = \"1\" }\n",
			`x.toml:2: sysctls."net..x": invalid sysctl name (want dotted lowercase path like net.ipv4.ip_forward)`, 2, `sysctls."net..x"`},
		{"ESP too small", "name = \"x\"\n[disk]\nstate_mib = 64\nesp_mib = 50\n",
			`x.toml:4: disk.esp_mib: 50 MiB is too small (minimum 100)`, 4, "disk.esp_mib"},
		{"health timeout", "name = \"x\"\n[upgrade]\nhealth_timeout_s = 0\n",
			`x.toml:3: upgrade.health_timeout_s: 0: want 1 to 86400 seconds`, 3, "upgrade.health_timeout_s"},
		{"bad cmdline", "name = \"x\"\n[kernel]\ncmdline = [\"quiet loglevel=3\"]\n",
			`x.toml:3: kernel.cmdline[0]: invalid value "quiet loglevel=3" (want one non-empty argument without spaces)`, 3, "kernel.cmdline[0]"},
		{"bad ntp server", "name = \"x\"\nntp = [\"pool.ntp.org\", \"ntp server\"]\n",
			`x.toml:2: ntp[1]: invalid value "ntp server" (want a host name or IP address, optionally with :port)`, 2, "ntp[1]"},
		{"ntp server with a bad port", "name = \"x\"\nntp = [\"10.0.2.2:ntp\"]\n",
			`x.toml:2: ntp[0]: invalid value "10.0.2.2:ntp" (want a host name or IP address, optionally with :port)`, 2, "ntp[0]"},
		{"syntax error", "name = \"x\"\n[kernel\nmodules = []\n",
			`x.toml:2: expected ']' to close table name`, 2, ""},
		{"duplicate key", "name = \"x\"\nname = \"y\"\n",
			`x.toml:2: name: key name is already defined`, 2, "name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse("x.toml", []byte(tc.doc))
			if err == nil {
				t.Fatalf("Parse succeeded: %+v", p)
			}
			if got := err.Error(); got != tc.want {
				t.Errorf("error:\n got  %s\n want %s", got, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error is %T, want *Error", err)
			}
			if e.File != "x.toml" || e.Line != tc.line || e.Key != tc.key {
				t.Errorf("Error{File: %q, Line: %d, Key: %q}, want {x.toml, %d, %q}", e.File, e.Line, e.Key, tc.line, tc.key)
			}
		})
	}
}

// TestNTPServers: a profile names the NTP servers a node uses when neither its node config nor
// DHCP names any, as host names or addresses, each optionally with a port.
func TestNTPServers(t *testing.T) {
	p, err := Parse("x.toml", []byte("name = \"x\"\nntp = [\"pool.ntp.org\", \"10.0.2.2:1123\", \"fd00::1\", \"[fd00::2]:123\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"pool.ntp.org", "10.0.2.2:1123", "fd00::1", "[fd00::2]:123"}; !slices.Equal(p.NTP, want) {
		t.Errorf("ntp = %q; want %q", p.NTP, want)
	}
}

func TestValidateWithoutFile(t *testing.T) {
	p, _, _ := Builtin("dev")
	p.Services = append(p.Services, Service{Name: "shell", Command: []string{"/x"}, Restart: RestartNever})
	if err := p.Validate(); err == nil || err.Error() != `service[1].name: duplicate service "shell" (also service[0])` {
		t.Errorf("Validate = %v", err)
	}
}

// FuzzParse checks that no input panics and that every error is one line.
func FuzzParse(f *testing.F) {
	for _, name := range Names() {
		_, raw, _ := Builtin(name)
		f.Add(raw)
	}
	f.Add([]byte("service = [{ name = \"a\", command = [\"/a\"], env = [[1]] }]\n[service.x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := Parse("f.toml", data)
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("error is not one line: %q", err)
		}
	})
}
