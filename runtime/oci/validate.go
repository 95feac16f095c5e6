package oci

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"unicode"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
)

// MaxAnnotationBytes bounds the annotations of one pod or container (keys and values summed):
// the kubelet's own limit on a pod's annotations (256 KiB), so no request the API server
// accepted is refused, and a hostile client cannot make the runtime persist megabytes per object.
const MaxAnnotationBytes = 256 << 10

// devRoot is where every device a container asks for must come from.
const devRoot = "/dev"

// ValidateSandbox refuses a RunPodSandbox request the runtime must not act on, before anything
// on the node changes. Errors wrap errdefs.ErrInvalid and name the field.
func ValidateSandbox(cfg *runtimeapi.PodSandboxConfig) error {
	m := cfg.GetMetadata()
	for _, f := range []struct{ field, v string }{
		{"name", m.GetName()}, {"namespace", m.GetNamespace()}, {"uid", m.GetUid()},
	} {
		if err := checkName("pod sandbox "+f.field, f.v); err != nil {
			return err
		}
	}
	if err := checkAnnotations("pod sandbox "+m.GetName(), cfg.GetAnnotations()); err != nil {
		return err
	}
	if d := cfg.GetLogDirectory(); d != "" && !filepath.IsAbs(d) {
		return fmt.Errorf("pod sandbox %s: log_directory %q is not absolute: %w", m.GetName(), d, errdefs.ErrInvalid)
	}
	if err := checkSysctls(cfg); err != nil {
		return fmt.Errorf("pod sandbox %s: %w", m.GetName(), err)
	}
	if err := checkPodFiles(cfg); err != nil {
		return fmt.Errorf("pod sandbox %s: %w", m.GetName(), err)
	}
	return nil
}

// Limits of what a pod's resolv.conf and hostname files may hold: a DNS name is at most 253
// bytes, a host name at most 64 (the kernel's HOST_NAME_MAX).
const (
	maxDNSName  = 253
	maxHostname = 64
)

// checkPodFiles refuses DNS settings and a hostname that could not be written as the single
// words of the pod's resolv.conf, hosts and hostname files: a newline in one would add lines of
// the client's choosing (another nameserver, another hosts entry).
func checkPodFiles(cfg *runtimeapi.PodSandboxConfig) error {
	dns := cfg.GetDnsConfig()
	for _, srv := range dns.GetServers() {
		if _, err := netip.ParseAddr(srv); err != nil {
			return fmt.Errorf("dns server %q is not an IP address: %w", srv, errdefs.ErrInvalid)
		}
	}
	for _, f := range []struct {
		what string
		vs   []string
	}{{"dns search", dns.GetSearches()}, {"dns option", dns.GetOptions()}} {
		for _, v := range f.vs {
			if v == "" {
				return fmt.Errorf("%s is empty: %w", f.what, errdefs.ErrInvalid)
			}
			if strings.ContainsFunc(v, isSpaceOrControl) {
				return fmt.Errorf("%s %q contains white space or control characters: %w", f.what, v, errdefs.ErrInvalid)
			}
			if len(v) > maxDNSName {
				return fmt.Errorf("%s %.40q… is longer than %d bytes: %w", f.what, v, maxDNSName, errdefs.ErrInvalid)
			}
		}
	}
	if h := cfg.GetHostname(); h != "" {
		if strings.ContainsFunc(h, isSpaceOrControl) || strings.ContainsAny(h, "/") {
			return fmt.Errorf("hostname %q is not a valid host name: %w", h, errdefs.ErrInvalid)
		}
		if len(h) > maxHostname {
			return fmt.Errorf("hostname %.40q… is longer than %d bytes: %w", h, maxHostname, errdefs.ErrInvalid)
		}
	}
	return nil
}

func isSpaceOrControl(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }

// ValidateContainer refuses a CreateContainer request the runtime must not act on, before
// anything on the node changes (no rootfs mounted, no host path created). Errors wrap
// errdefs.ErrInvalid and name the container and the field. Mount targets that reach through
// symlinks in the image need no check here: runc resolves them inside the rootfs.
func ValidateContainer(c *runtimeapi.ContainerConfig) error {
	name := c.GetMetadata().GetName()
	if err := checkName("container name", name); err != nil {
		return err
	}
	if err := checkAnnotations("container "+name, c.GetAnnotations()); err != nil {
		return err
	}
	for _, m := range c.GetMounts() {
		if p := m.GetContainerPath(); !filepath.IsAbs(p) {
			return fmt.Errorf("container %s: mount destination %q is not absolute: %w", name, p, errdefs.ErrInvalid)
		}
	}
	for _, d := range c.GetDevices() {
		if p := d.GetContainerPath(); !filepath.IsAbs(p) {
			return fmt.Errorf("container %s: device destination %q is not absolute: %w", name, p, errdefs.ErrInvalid)
		}
		if _, err := hostDevicePath(devRoot, d.GetHostPath()); err != nil {
			return fmt.Errorf("container %s: %w", name, err)
		}
	}
	return nil
}

// checkName refuses names that could be read as paths or break the "_"- and ";"-joined keys
// they end up in (name reservations, CNI_ARGS). The kubelet only sends DNS labels and
// subdomains; critest sends mixed case, so the rule is a deny list, not Kubernetes' grammar.
// Empty names are the handlers' to refuse (they say which fields are required).
func checkName(what, v string) error {
	switch {
	case v == "." || strings.Contains(v, ".."), strings.ContainsAny(v, "/;"):
		return fmt.Errorf("%s %q: a name may not contain \"/\", \";\" or \"..\": %w", what, v, errdefs.ErrInvalid)
	case strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return fmt.Errorf("%s %q: a name may not contain control characters: %w", what, v, errdefs.ErrInvalid)
	}
	return nil
}

func checkAnnotations(what string, a map[string]string) error {
	total := 0
	for k, v := range a {
		total += len(k) + len(v)
	}
	if total > MaxAnnotationBytes {
		return fmt.Errorf("%s: annotations are %d bytes, more than the %d allowed: %w", what, total, MaxAnnotationBytes, errdefs.ErrInvalid)
	}
	return nil
}

// sysctlName is the kubelet's grammar for sysctl names: dot- or slash-separated segments of
// lower-case letters, digits, "-" and "_" that start and end with a letter or digit, so no
// segment is empty or "..".
var sysctlName = regexp.MustCompile(`^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$`)

// ipcSysctls are the sysctls of the IPC namespace, as the kubelet lists them: names equal to
// an entry without its trailing "*", or starting with it when it has one.
var ipcSysctls = []string{"kernel.shm*", "kernel.msg*", "kernel.sem", "fs.mqueue.*"}

// checkSysctls allows only the namespaced sysctls, and only when the pod has the namespace of
// its own (the kubelet's rules): IPC ones without host IPC, net.* without host network. Anything
// else would change the node for every pod on it.
func checkSysctls(cfg *runtimeapi.PodSandboxConfig) error {
	opts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	names := make([]string, 0, len(cfg.GetLinux().GetSysctls()))
	for k := range cfg.GetLinux().GetSysctls() {
		names = append(names, k)
	}
	sort.Strings(names) // the same request always names the same sysctl first
	for _, k := range names {
		if len(k) > 253 || !sysctlName.MatchString(k) {
			return fmt.Errorf("sysctl %q is not a valid sysctl name: %w", k, errdefs.ErrInvalid)
		}
		dotted := sysctlDots(k)
		switch {
		case isIPCSysctl(dotted):
			if opts.GetIpc() == runtimeapi.NamespaceMode_NODE {
				return fmt.Errorf("sysctl %s: the pod shares the node's IPC namespace: %w", k, errdefs.ErrInvalid)
			}
		case strings.HasPrefix(dotted, "net."):
			if opts.GetNetwork() == runtimeapi.NamespaceMode_NODE {
				return fmt.Errorf("sysctl %s: the pod shares the node's network namespace: %w", k, errdefs.ErrInvalid)
			}
		default:
			return fmt.Errorf("sysctl %s is not namespaced (allowed: kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, net.*): %w", k, errdefs.ErrInvalid)
		}
	}
	return nil
}

// sysctlDots turns the slash form of a sysctl name (net/ipv4/conf/eth0.100/rp_filter) into the
// dotted one, where the slash form's dots become slashes, as sysctl(8) does.
func sysctlDots(k string) string {
	if !strings.Contains(k, "/") {
		return k
	}
	return strings.Map(func(r rune) rune {
		switch r {
		case '/':
			return '.'
		case '.':
			return '/'
		}
		return r
	}, k)
}

func isIPCSysctl(k string) bool {
	for _, p := range ipcSysctls {
		if pre, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(k, pre) {
				return true
			}
		} else if k == p {
			return true
		}
	}
	return false
}

// hostDevicePath returns where the device a container asks for really is: host must name a
// path below root (/dev) once cleaned, and stay below it with every symlink resolved
// (/dev/stdin leads to /proc/self/fd/0, /dev/disk/by-id/… to /dev/sda).
func hostDevicePath(root, host string) (string, error) {
	if !filepath.IsAbs(host) {
		return "", fmt.Errorf("device %q: host path is not absolute: %w", host, errdefs.ErrInvalid)
	}
	if !below(root, filepath.Clean(host)) {
		return "", fmt.Errorf("device %s: host path is outside %s: %w", host, root, errdefs.ErrInvalid)
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", fmt.Errorf("device %s: %w", host, err)
	}
	resolved, err := filepath.EvalSymlinks(host)
	if err != nil {
		return "", fmt.Errorf("device %s: %w: %w", host, errdefs.ErrInvalid, err)
	}
	if !below(realRoot, resolved) {
		return "", fmt.Errorf("device %s: a symlink leads outside %s, to %s: %w", host, root, resolved, errdefs.ErrInvalid)
	}
	return resolved, nil
}

func below(root, p string) bool { return strings.HasPrefix(p, strings.TrimSuffix(root, "/")+"/") }
