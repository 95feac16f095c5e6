package oci

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
)

// TestHostileContainerRequests: ContainerSpec refuses each hostile request with an invalid
// argument naming the field, and before it changes anything: the host path of an earlier,
// harmless mount in the same request is not created.
func TestHostileContainerRequests(t *testing.T) {
	big := strings.Repeat("x", MaxAnnotationBytes)
	for _, tc := range []struct {
		name    string
		edit    func(c *runtimeapi.ContainerConfig)
		wantErr string
	}{
		{"relative mount destination", func(c *runtimeapi.ContainerConfig) {
			c.Mounts = append(c.Mounts, &runtimeapi.Mount{HostPath: "/tmp", ContainerPath: "data"})
		}, `container c: mount destination "data" is not absolute`},
		{"container name with a slash", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "a/b" },
			`container name "a/b": a name may not contain`},
		{"container name with dot-dot", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = ".." },
			`container name "..": a name may not contain`},
		{"container name with a CNI_ARGS separator", func(c *runtimeapi.ContainerConfig) { c.Metadata.Name = "a;K8S_POD_NAME=x" },
			`a name may not contain`},
		{"annotations over 256 KiB", func(c *runtimeapi.ContainerConfig) { c.Annotations = map[string]string{"k": big} },
			"container c: annotations are 262145 bytes, more than the 262144 allowed"},
		{"device outside /dev", func(c *runtimeapi.ContainerConfig) {
			c.Devices = []*runtimeapi.Device{{HostPath: "/etc/shadow", ContainerPath: "/dev/x", Permissions: "rwm"}}
		}, "device /etc/shadow: host path is outside /dev"},
		{"device reaching out of /dev with dot-dot", func(c *runtimeapi.ContainerConfig) {
			c.Devices = []*runtimeapi.Device{{HostPath: "/dev/../etc/shadow", ContainerPath: "/dev/x"}}
		}, "device /dev/../etc/shadow: host path is outside /dev"},
		{"device through a symlink leaving /dev", func(c *runtimeapi.ContainerConfig) {
			// /dev/fd is a symlink to /proc/self/fd: cleaned, the path is below /dev; resolved,
			// it is the runtime's own /proc/<pid>/status.
			c.Devices = []*runtimeapi.Device{{HostPath: "/dev/fd/../status", ContainerPath: "/dev/x"}}
		}, "device /dev/fd/../status: a symlink leads outside /dev, to /proc/"},
		{"relative device destination", func(c *runtimeapi.ContainerConfig) {
			c.Devices = []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "x"}}
		}, `device destination "x" is not absolute`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			created := filepath.Join(t.TempDir(), "would-be-created")
			cfg := &runtimeapi.ContainerConfig{
				Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Command: []string{"sh"},
				Mounts: []*runtimeapi.Mount{{HostPath: created, ContainerPath: "/harmless"}},
			}
			tc.edit(cfg)
			_, err := ContainerSpec(&runtimeapi.PodSandboxConfig{}, cfg, ContainerInput{Rootfs: t.TempDir(), PodNamespaces: "/run/ingot/podns/p"})
			if err == nil || !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want an invalid argument containing %q", err, tc.wantErr)
			}
			if _, err := os.Lstat(created); err == nil {
				t.Errorf("the refused request created %s", created)
			}
		})
	}
}

// TestContainerRequestsAccepted: what the validation lets through (the edges of each rule).
func TestContainerRequestsAccepted(t *testing.T) {
	cfg := &runtimeapi.ContainerConfig{
		Metadata:    &runtimeapi.ContainerMetadata{Name: "Container.name-1_x"}, // critest uses mixed case
		Command:     []string{"sh"},
		Annotations: map[string]string{"k": strings.Repeat("x", MaxAnnotationBytes-1)},
		Mounts:      []*runtimeapi.Mount{{HostPath: t.TempDir(), ContainerPath: "/a/../b"}},
		Devices:     []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/mynull"}},
	}
	s, err := ContainerSpec(&runtimeapi.PodSandboxConfig{}, cfg, ContainerInput{Rootfs: t.TempDir(), PodNamespaces: "/run/ingot/podns/p"})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Linux.Devices) != 1 || s.Linux.Devices[0].Path != "/dev/mynull" || s.Linux.Devices[0].Major != 1 || s.Linux.Devices[0].Minor != 3 {
		t.Errorf("devices %+v, want /dev/null (1:3) at /dev/mynull", s.Linux.Devices)
	}
}

func TestHostDevicePath(t *testing.T) {
	root := t.TempDir()
	dev := filepath.Join(root, "dev")
	os.MkdirAll(filepath.Join(dev, "disk"), 0o755)
	os.WriteFile(filepath.Join(dev, "sda"), nil, 0o600)
	os.WriteFile(filepath.Join(root, "secret"), nil, 0o600)
	os.Symlink("../sda", filepath.Join(dev, "disk", "by-id"))
	os.Symlink("../secret", filepath.Join(dev, "escape"))
	os.Symlink(root, filepath.Join(dev, "rootlink"))
	for _, tc := range []struct{ host, want, wantErr string }{
		{host: filepath.Join(dev, "sda"), want: filepath.Join(dev, "sda")},
		{host: filepath.Join(dev, "disk", "by-id"), want: filepath.Join(dev, "sda")},
		{host: filepath.Join(dev, "escape"), wantErr: "a symlink leads outside"},
		{host: filepath.Join(dev, "rootlink", "secret"), wantErr: "a symlink leads outside"},
		{host: filepath.Join(dev, "..", "secret"), wantErr: "host path is outside"},
		{host: dev, wantErr: "host path is outside"},
		{host: dev + "x/sda", wantErr: "host path is outside"},
		{host: "dev/sda", wantErr: "not absolute"},
		{host: filepath.Join(dev, "missing"), wantErr: "no such file"},
	} {
		got, err := hostDevicePath(dev, tc.host)
		if tc.wantErr != "" {
			if err == nil || !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s: %q, %v; want an invalid argument containing %q", tc.host, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %s", tc.host, got, err, tc.want)
		}
	}
}

// TestHostileSandboxRequests: SandboxSpec refuses hostile pod requests with an invalid
// argument naming the field; the kubelet's namespaced sysctls pass where the pod has the
// namespace of its own.
func TestHostileSandboxRequests(t *testing.T) {
	pod := func(edit func(*runtimeapi.PodSandboxConfig)) *runtimeapi.PodSandboxConfig {
		c := &runtimeapi.PodSandboxConfig{
			Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "default", Uid: "u1"},
			Linux:    &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{}}},
		}
		edit(c)
		return c
	}
	sysctl := func(k string) func(*runtimeapi.PodSandboxConfig) {
		return func(c *runtimeapi.PodSandboxConfig) { c.Linux.Sysctls = map[string]string{k: "1"} }
	}
	hostNet := func(k string) func(*runtimeapi.PodSandboxConfig) {
		return func(c *runtimeapi.PodSandboxConfig) {
			sysctl(k)(c)
			c.Linux.SecurityContext.NamespaceOptions.Network = runtimeapi.NamespaceMode_NODE
		}
	}
	for _, tc := range []struct {
		name    string
		edit    func(*runtimeapi.PodSandboxConfig)
		wantErr string // "" accepted
	}{
		{"pod name with a slash", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "../../etc" }, `pod sandbox name "../../etc": a name may not contain`},
		{"namespace with dot-dot", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Namespace = "a..b" }, `pod sandbox namespace "a..b"`},
		{"uid with a slash", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Uid = "u/1" }, `pod sandbox uid "u/1"`},
		{"pod name with a newline", func(c *runtimeapi.PodSandboxConfig) { c.Metadata.Name = "p\nx" }, "control characters"},
		{"annotations over 256 KiB", func(c *runtimeapi.PodSandboxConfig) {
			c.Annotations = map[string]string{"a": strings.Repeat("x", MaxAnnotationBytes/2), "b": strings.Repeat("x", MaxAnnotationBytes/2)}
		}, "pod sandbox p: annotations are 262146 bytes, more than the 262144 allowed"},
		{"relative log directory", func(c *runtimeapi.PodSandboxConfig) { c.LogDirectory = "logs" }, `log_directory "logs" is not absolute`},
		{"node-wide sysctl", sysctl("kernel.panic"), "sysctl kernel.panic is not namespaced"},
		{"node-wide sysctl in slash form", sysctl("vm/overcommit_memory"), "sysctl vm/overcommit_memory is not namespaced"},
		{"uts sysctl (not in the kubelet's set)", sysctl("kernel.hostname"), "sysctl kernel.hostname is not namespaced"},
		{"sysctl reaching out of /proc/sys", sysctl("net/../../../etc/passwd"), "is not a valid sysctl name"},
		{"sysctl with an empty segment", sysctl("net..ipv4"), "is not a valid sysctl name"},
		{"net sysctl with host network", hostNet("net.ipv4.ip_forward"), "sysctl net.ipv4.ip_forward: the pod shares the node's network namespace"},
		{"ipc sysctl with host ipc", func(c *runtimeapi.PodSandboxConfig) {
			sysctl("kernel.shmmax")(c)
			c.Linux.SecurityContext.NamespaceOptions.Ipc = runtimeapi.NamespaceMode_NODE
		}, "sysctl kernel.shmmax: the pod shares the node's IPC namespace"},
		{"net sysctl in its own netns", sysctl("net.ipv4.ip_unprivileged_port_start"), ""},
		{"net sysctl in slash form with a dotted interface", sysctl("net/ipv4/conf/eth0.100/rp_filter"), ""},
		{"kernel.shm*", sysctl("kernel.shm_rmid_forced"), ""},
		{"kernel.msg*", sysctl("kernel.msgmax"), ""},
		{"kernel.sem", sysctl("kernel.sem"), ""},
		{"kernel.sem is not a prefix", sysctl("kernel.semx"), "sysctl kernel.semx is not namespaced"},
		{"fs.mqueue.*", sysctl("fs.mqueue.msg_max"), ""},
		{"ipc sysctl with host network", hostNet("kernel.msgmax"), ""},
		// The DNS settings and the hostname become lines of the pod's resolv.conf, hosts and
		// hostname files: a newline in one would add lines of the client's choosing.
		{"dns server that is not an address", func(c *runtimeapi.PodSandboxConfig) {
			c.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"10.0.0.10\noptions ndots:0"}}
		}, `dns server "10.0.0.10\noptions ndots:0" is not an IP address`},
		{"dns search with a newline", func(c *runtimeapi.PodSandboxConfig) {
			c.DnsConfig = &runtimeapi.DNSConfig{Searches: []string{"svc.cluster.local\nnameserver 6.6.6.6"}}
		}, `dns search "svc.cluster.local\nnameserver 6.6.6.6" contains white space or control characters`},
		{"dns option with a space", func(c *runtimeapi.PodSandboxConfig) {
			c.DnsConfig = &runtimeapi.DNSConfig{Options: []string{"ndots:5 rotate"}}
		}, `dns option "ndots:5 rotate" contains white space`},
		{"dns search too long", func(c *runtimeapi.PodSandboxConfig) {
			c.DnsConfig = &runtimeapi.DNSConfig{Searches: []string{strings.Repeat("a.", 127)}}
		}, "is longer than 253 bytes"},
		{"kubelet's dns settings", func(c *runtimeapi.PodSandboxConfig) {
			c.DnsConfig = &runtimeapi.DNSConfig{Servers: []string{"10.96.0.10", "fd00::a"}, Searches: []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}, Options: []string{"ndots:5", "edns0"}}
		}, ""},
		{"hostname with a newline", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "web\n1.2.3.4 evil" }, `hostname "web\n1.2.3.4 evil" is not a valid host name`},
		{"hostname too long", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = strings.Repeat("h", 65) }, "is longer than 64 bytes"},
		{"hostname with dots and capitals (critest)", func(c *runtimeapi.PodSandboxConfig) { c.Hostname = "Web-1.example" }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := SandboxSpec(pod(tc.edit), "/pause-root", "/ingot.pods/p/p", "")
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %v, want an invalid argument containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestSeccompProfileNotARegularFile: a localhost seccomp profile naming a FIFO, a device or a
// huge file is refused at once; the runtime neither blocks on the open nor reads without end.
func TestSeccompProfileNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge.json")
	if err := os.WriteFile(huge, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(huge, 2*maxSeccompProfile); err != nil { // sparse: nothing to fill the disk
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, want string }{
		{fifo, "seccomp localhost profile " + fifo + ": not a regular file"},
		{"/dev/zero", "seccomp localhost profile /dev/zero: not a regular file"},
		{huge, "seccomp localhost profile " + huge + ": larger than 1048576 bytes"},
	} {
		done := make(chan error, 1)
		go func() {
			_, err := Seccomp(&runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: tc.path}, "", "", nil)
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || err.Error() != tc.want || !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("err %v, want %q (invalid argument)", err, tc.want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Seccomp(%s) still reading after 5s", tc.path)
		}
	}
}

// TestImageUserDatabaseNotARegularFile: an image whose /etc/passwd is a FIFO (image layers may
// hold FIFOs) does not block CreateContainer: the database is treated as missing.
func TestImageUserDatabaseNotARegularFile(t *testing.T) {
	rootfs := t.TempDir()
	os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755)
	for _, db := range []string{"passwd", "group"} {
		if err := unix.Mkfifo(filepath.Join(rootfs, "etc", db), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := ContainerSpec(&runtimeapi.PodSandboxConfig{}, &runtimeapi.ContainerConfig{
			Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Command: []string{"sh"},
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "www-data"}},
		}, ContainerInput{Rootfs: rootfs, PodNamespaces: "/run/ingot/podns/p"})
		done <- err
	}()
	select {
	case err := <-done:
		if want := `user "www-data"`; err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err %v, want one naming the user the image does not have (%s)", err, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ContainerSpec still reading the image's /etc/passwd FIFO after 5s")
	}
}
