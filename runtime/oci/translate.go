package oci

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ImageConfig is what a container inherits from its image (the OCI image config).
type ImageConfig struct {
	Entrypoint []string
	Cmd        []string
	Env        []string
	User       string
	WorkingDir string
	StopSignal string
}

// PodFiles are the per-pod files bind-mounted into every container of the pod.
type PodFiles struct {
	Hosts, ResolvConf, Hostname string
	Shm                         string // the pod's /dev/shm, shared by its containers
}

// Args merges the CRI command and args with the image's entrypoint and cmd the way containerd
// does: a CRI command replaces the entrypoint (and drops the image cmd); CRI args replace the cmd.
func Args(c *runtimeapi.ContainerConfig, img ImageConfig) ([]string, error) {
	var args []string
	switch {
	case len(c.GetCommand()) > 0:
		args = append(append(args, c.GetCommand()...), c.GetArgs()...)
	case len(c.GetArgs()) > 0:
		args = append(append(args, img.Entrypoint...), c.GetArgs()...)
	default:
		args = append(append(args, img.Entrypoint...), img.Cmd...)
	}
	if len(args) == 0 {
		return nil, fmt.Errorf("container %s: no command: neither the request nor the image gives one", c.GetMetadata().GetName())
	}
	return args, nil
}

// Env merges the image's environment with the request's; the request wins per variable.
func Env(c *runtimeapi.ContainerConfig, img ImageConfig) []string {
	idx := map[string]int{}
	var env []string
	set := func(kv string) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			env[i] = kv
			return
		}
		idx[k] = len(env)
		env = append(env, kv)
	}
	for _, kv := range img.Env {
		set(kv)
	}
	for _, kv := range c.GetEnvs() {
		set(kv.GetKey() + "=" + string(kv.GetValue()))
	}
	if _, ok := idx["PATH"]; !ok {
		set(DefaultPath)
	}
	return env
}

// PodNamespaces names the namespaces of a pod's pause process that its containers may join: the
// runtime pins each (a bind mount of /proc/<pause>/ns/<file>) as <dir>/<file> when pause starts.
var PodNamespaces = map[specs.LinuxNamespaceType]string{
	specs.UserNamespace: "user", specs.NetworkNamespace: "net", specs.UTSNamespace: "uts",
	specs.IPCNamespace: "ipc", specs.PIDNamespace: "pid",
}

func nsPath(pid int, ns string) string { return fmt.Sprintf("/proc/%d/ns/%s", pid, ns) }

// UserNamespace checks a pod's user namespace options and returns its ID mappings: none for the
// node's user namespace (the default), one uid and one gid range starting at container ID 0 for
// a pod of its own. Containers cannot have user namespaces of their own (CRI: POD or NODE only).
func UserNamespace(u *runtimeapi.UserNamespace) (uids, gids []specs.LinuxIDMapping, err error) {
	if u == nil {
		return nil, nil, nil // unset: the node's (POD is the enum's zero value, so ask explicitly)
	}
	switch u.GetMode() {
	case runtimeapi.NamespaceMode_NODE:
		return nil, nil, nil
	case runtimeapi.NamespaceMode_POD:
	default:
		return nil, nil, fmt.Errorf("user namespace mode %v: only POD and NODE are supported", u.GetMode())
	}
	conv := func(kind string, m []*runtimeapi.IDMapping) ([]specs.LinuxIDMapping, error) {
		if len(m) != 1 {
			return nil, fmt.Errorf("user namespace: %d %s mappings, want exactly one", len(m), kind)
		}
		if m[0].GetContainerId() != 0 || m[0].GetLength() == 0 {
			return nil, fmt.Errorf("user namespace: the %s mapping must start at container ID 0 and be non-empty (got %d+%d)",
				kind, m[0].GetContainerId(), m[0].GetLength())
		}
		return []specs.LinuxIDMapping{{ContainerID: 0, HostID: m[0].GetHostId(), Size: m[0].GetLength()}}, nil
	}
	if uids, err = conv("uid", u.GetUids()); err != nil {
		return nil, nil, err
	}
	if gids, err = conv("gid", u.GetGids()); err != nil {
		return nil, nil, err
	}
	return uids, gids, nil
}

// SandboxSpec is the spec of a pod's pause container: it holds the pod's namespaces and does
// nothing else. rootfs holds the pause binary at /pause.
// netnsPath, when set, is a pinned network namespace the pod network was set up in; the pause
// process joins it instead of creating an empty one.
func SandboxSpec(cfg *runtimeapi.PodSandboxConfig, rootfs, cgroupsPath, netnsPath string) (*specs.Spec, error) {
	if err := ValidateSandbox(cfg); err != nil {
		return nil, err
	}
	s := Default(rootfs, []string{"/pause"})
	s.Root.Readonly = true
	s.Process.Capabilities = &specs.LinuxCapabilities{} // the pause process needs none
	s.Process.NoNewPrivileges = true
	opts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	var ns []specs.LinuxNamespace
	for _, n := range s.Linux.Namespaces {
		switch {
		case n.Type == specs.NetworkNamespace && opts.GetNetwork() == runtimeapi.NamespaceMode_NODE,
			n.Type == specs.UTSNamespace && opts.GetNetwork() == runtimeapi.NamespaceMode_NODE,
			n.Type == specs.IPCNamespace && opts.GetIpc() == runtimeapi.NamespaceMode_NODE,
			n.Type == specs.PIDNamespace && opts.GetPid() == runtimeapi.NamespaceMode_NODE:
			continue
		}
		if n.Type == specs.NetworkNamespace && netnsPath != "" {
			n.Path = netnsPath
		}
		ns = append(ns, n)
	}
	uids, gids, err := UserNamespace(opts.GetUsernsOptions())
	if err != nil {
		return nil, err
	}
	if uids != nil {
		// The pod's other namespaces are created inside (owned by) its user namespace.
		ns = append([]specs.LinuxNamespace{{Type: specs.UserNamespace}}, ns...)
		s.Linux.UIDMappings, s.Linux.GIDMappings = uids, gids
	}
	s.Linux.Namespaces = ns
	if opts.GetNetwork() != runtimeapi.NamespaceMode_NODE {
		s.Hostname = cfg.GetHostname()
	}
	s.Linux.CgroupsPath = cgroupsPath
	s.Linux.Sysctl = cfg.GetLinux().GetSysctls()
	s.Annotations = map[string]string{"io.kubernetes.cri.container-type": "sandbox"}
	return s, nil
}

// ContainerInput is everything ContainerSpec needs besides the CRI configs.
type ContainerInput struct {
	Rootfs string
	Image  ImageConfig
	// PodNamespaces is the directory where the pod's namespaces are pinned (see PodNamespaces).
	// Containers join those files, never /proc/<pause pid>/ns: once pause is gone, its pid may
	// be any process's, the node's own included.
	PodNamespaces string
	TargetPid     int // for NamespaceMode_TARGET: the target container's init
	CgroupsPath   string
	Files         PodFiles
	// Host is what the node can enforce (DetectHost): AppArmor, a cgroup namespace.
	Host Host
	// BoundingSet is the runtime's capability bounding set (BoundingSet()): what "privileged"
	// and "ALL" grant. nil: every capability the kernel knows.
	BoundingSet []string
	// ImageVolumes maps the container path of each image volume (a CRI mount naming an image)
	// to the directory where the runtime mounted that image's filesystem, read-only.
	ImageVolumes map[string]string
	// UnsetSeccompProfile is the seccomp profile of a request that names none (config.toml's
	// unset_seccomp_profile; see Seccomp).
	UnsetSeccompProfile string
}

// ContainerSpec builds the spec of an application container in a pod.
func ContainerSpec(sb *runtimeapi.PodSandboxConfig, c *runtimeapi.ContainerConfig, in ContainerInput) (*specs.Spec, error) {
	if err := ValidateContainer(c); err != nil {
		return nil, err
	}
	args, err := Args(c, in.Image)
	if err != nil {
		return nil, err
	}
	s := Default(in.Rootfs, args)
	s.Process.Env = Env(c, in.Image)
	// A tty: runc init gives the process a terminal, whose master the shim holds. Programs on a
	// terminal want to know its kind; kubectl's is xterm-like (containerd says the same).
	if s.Process.Terminal = c.GetTty(); s.Process.Terminal && !slices.ContainsFunc(s.Process.Env, func(kv string) bool { return strings.HasPrefix(kv, "TERM=") }) {
		s.Process.Env = append(s.Process.Env, "TERM=xterm")
	}
	s.Process.Cwd = firstNonEmpty(c.GetWorkingDir(), in.Image.WorkingDir, "/")
	sc := c.GetLinux().GetSecurityContext()
	if err := setUser(s, sc, in.Image.User, in.Rootfs); err != nil {
		return nil, fmt.Errorf("container %s: %w", c.GetMetadata().GetName(), err)
	}
	if s.Process.ApparmorProfile, err = in.Host.AppArmor.Profile(sc.GetApparmor(), sc.GetApparmorProfile()); err != nil {
		return nil, fmt.Errorf("container %s: %w", c.GetMetadata().GetName(), err)
	}
	if err := SELinux(sc.GetSelinuxOptions()); err != nil {
		return nil, fmt.Errorf("container %s: %w", c.GetMetadata().GetName(), err)
	}
	s.Root.Readonly = sc.GetReadonlyRootfs()
	s.Process.NoNewPrivileges = sc.GetNoNewPrivs()
	s.Hostname = ""

	if err := containerNamespaces(s, sb, sc, in); err != nil {
		return nil, fmt.Errorf("container %s: %w", c.GetMetadata().GetName(), err)
	}
	if err := containerPrivileges(s, sc, in); err != nil {
		return nil, fmt.Errorf("container %s: %w", c.GetMetadata().GetName(), err)
	}
	if err := containerMounts(s, c, sc, in); err != nil {
		return nil, fmt.Errorf("container %s: %w", c.GetMetadata().GetName(), err)
	}
	if err := containerDevices(s, c); err != nil {
		return nil, fmt.Errorf("container %s: %w", c.GetMetadata().GetName(), err)
	}

	setResources(s, c.GetLinux().GetResources())
	// Always set, 0 included, as containerd does: a container must not inherit the runtime's own
	// value (config.toml's oom_score) when the kubelet asks for another.
	adj, _ := in.Host.OOM.Apply(int(c.GetLinux().GetResources().GetOomScoreAdj()))
	s.Process.OOMScoreAdj = &adj
	s.Linux.CgroupsPath = in.CgroupsPath
	s.Annotations = map[string]string{"io.kubernetes.cri.container-type": "container"}
	for k, v := range c.GetAnnotations() {
		s.Annotations[k] = v
	}
	return s, nil
}

// containerNamespaces sets the container's namespaces: net, ipc and uts are the pod's (pinned
// from pause), pid as the container asks, a user namespace when the pod has one, and a private
// cgroup namespace where the node allows it.
func containerNamespaces(s *specs.Spec, sb *runtimeapi.PodSandboxConfig, sc *runtimeapi.LinuxContainerSecurityContext, in ContainerInput) error {
	if in.PodNamespaces == "" {
		return errors.New("the pod's namespaces are not pinned")
	}
	podNS := func(t specs.LinuxNamespaceType) specs.LinuxNamespace {
		return specs.LinuxNamespace{Type: t, Path: filepath.Join(in.PodNamespaces, PodNamespaces[t])}
	}
	nsOpts := sc.GetNamespaceOptions()
	podOpts := sb.GetLinux().GetSecurityContext().GetNamespaceOptions()
	var ns []specs.LinuxNamespace
	uids, gids, err := UserNamespace(podOpts.GetUsernsOptions())
	if err != nil {
		return err
	}
	if uids != nil {
		ns = append(ns, podNS(specs.UserNamespace))
		s.Linux.UIDMappings, s.Linux.GIDMappings = uids, gids
	}
	ns = append(ns, specs.LinuxNamespace{Type: specs.MountNamespace})
	if podOpts.GetNetwork() != runtimeapi.NamespaceMode_NODE {
		ns = append(ns, podNS(specs.NetworkNamespace), podNS(specs.UTSNamespace))
	}
	if podOpts.GetIpc() != runtimeapi.NamespaceMode_NODE {
		ns = append(ns, podNS(specs.IPCNamespace))
	}
	switch nsOpts.GetPid() {
	case runtimeapi.NamespaceMode_NODE:
	case runtimeapi.NamespaceMode_POD:
		ns = append(ns, podNS(specs.PIDNamespace))
	case runtimeapi.NamespaceMode_TARGET:
		if in.TargetPid == 0 {
			return fmt.Errorf("pid namespace target %q is not running", nsOpts.GetTargetId())
		}
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace, Path: nsPath(in.TargetPid, "pid")})
	default:
		ns = append(ns, specs.LinuxNamespace{Type: specs.PIDNamespace})
	}
	// A private cgroup namespace hides the node's cgroup layout, as containerd does on cgroup v2;
	// privileged containers keep the node's, which tools managing cgroups expect.
	if in.Host.CgroupV2 && !sc.GetPrivileged() {
		ns = append(ns, specs.LinuxNamespace{Type: specs.CgroupNamespace})
	}
	s.Linux.Namespaces = ns
	return nil
}

// containerPrivileges sets capabilities, seccomp and the masked and read-only paths: everything
// for a privileged container, the adjusted default set and a seccomp filter otherwise.
func containerPrivileges(s *specs.Spec, sc *runtimeapi.LinuxContainerSecurityContext, in ContainerInput) error {
	bounding := in.BoundingSet
	if bounding == nil {
		bounding = allCapabilities()
	}
	if sc.GetPrivileged() {
		all := append([]string(nil), bounding...)
		s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: all, Effective: all, Permitted: all}
		s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil
		for i := range s.Mounts {
			if s.Mounts[i].Destination == "/sys" || s.Mounts[i].Destination == "/sys/fs/cgroup" {
				s.Mounts[i].Options = removeOpt(s.Mounts[i].Options, "ro")
			}
		}
		s.Linux.Resources.Devices = []specs.LinuxDeviceCgroup{{Allow: true, Access: "rwm"}}
	} else {
		caps, err := adjustCaps(DefaultCapabilities(), sc.GetCapabilities(), bounding)
		if err != nil {
			return err
		}
		s.Process.Capabilities = &specs.LinuxCapabilities{Bounding: caps, Effective: caps, Permitted: caps}
		// Seccomp is for unprivileged containers: a privileged one gets no filter, whatever it
		// asks for (as with containerd).
		if s.Linux.Seccomp, err = Seccomp(sc.GetSeccomp(), sc.GetSeccompProfilePath(), in.UnsetSeccompProfile, caps); err != nil {
			return err
		}
		if p := sc.GetMaskedPaths(); p != nil {
			s.Linux.MaskedPaths = p
		}
		if p := sc.GetReadonlyPaths(); p != nil {
			s.Linux.ReadonlyPaths = p
		}
	}
	return nil
}

// containerMounts adds the pod's files (/etc/hosts, resolv.conf, hostname, /dev/shm), then the
// mounts the kubelet asks for, which may override them.
func containerMounts(s *specs.Spec, c *runtimeapi.ContainerConfig, sc *runtimeapi.LinuxContainerSecurityContext, in ContainerInput) error {
	podMounts := []struct{ src, dst string }{
		{in.Files.Hosts, "/etc/hosts"}, {in.Files.ResolvConf, "/etc/resolv.conf"},
		{in.Files.Hostname, "/etc/hostname"}, {in.Files.Shm, "/dev/shm"},
	}
	asked := map[string]bool{}
	for _, m := range c.GetMounts() {
		asked[filepath.Clean(m.GetContainerPath())] = true
	}
	for _, m := range podMounts {
		if m.src == "" || asked[m.dst] {
			continue
		}
		opts := []string{"rbind", "rprivate"}
		if m.dst != "/dev/shm" && sc.GetReadonlyRootfs() {
			opts = append(opts, "ro")
		}
		s.Mounts = append(s.Mounts, specs.Mount{Destination: m.dst, Type: "bind", Source: m.src, Options: opts})
	}
	for _, m := range c.GetMounts() {
		mnt, err := mount(m, in.ImageVolumes)
		if err != nil {
			return err
		}
		s.Mounts = append(s.Mounts, mnt)
		// The container's root must pass propagation on for its mounts to (runc's rule).
		switch m.GetPropagation() {
		case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
			s.Linux.RootfsPropagation = "rshared"
		case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
			if s.Linux.RootfsPropagation == "" {
				s.Linux.RootfsPropagation = "rslave"
			}
		}
	}
	return nil
}

// containerDevices adds the host devices the container asks for, with their cgroup rules.
func containerDevices(s *specs.Spec, c *runtimeapi.ContainerConfig) error {
	for _, d := range c.GetDevices() {
		dev, err := device(d.GetHostPath(), d.GetContainerPath())
		if err != nil {
			return err
		}
		s.Linux.Devices = append(s.Linux.Devices, dev)
		perms := d.GetPermissions()
		if perms == "" {
			perms = "rwm"
		}
		s.Linux.Resources.Devices = append(s.Linux.Resources.Devices, specs.LinuxDeviceCgroup{
			Allow: true, Type: dev.Type, Major: &dev.Major, Minor: &dev.Minor, Access: perms})
	}
	return nil
}

// Resources translates the CRI's container resources into the OCI cgroup limits, as
// ContainerSpec does at create time (UpdateContainerResources uses it later).
func Resources(r *runtimeapi.LinuxContainerResources) *specs.LinuxResources {
	s := &specs.Spec{Process: &specs.Process{}, Linux: &specs.Linux{Resources: &specs.LinuxResources{}}}
	setResources(s, r)
	return s.Linux.Resources
}

func setResources(s *specs.Spec, r *runtimeapi.LinuxContainerResources) {
	if r == nil {
		return
	}
	res := s.Linux.Resources
	cpu := &specs.LinuxCPU{}
	if v := r.GetCpuShares(); v > 0 {
		u := uint64(v)
		cpu.Shares = &u
	}
	if v := r.GetCpuQuota(); v != 0 {
		cpu.Quota = &v
	}
	if v := r.GetCpuPeriod(); v > 0 {
		u := uint64(v)
		cpu.Period = &u
	}
	cpu.Cpus, cpu.Mems = r.GetCpusetCpus(), r.GetCpusetMems()
	res.CPU = cpu
	if v := r.GetMemoryLimitInBytes(); v > 0 {
		res.Memory = &specs.LinuxMemory{Limit: &v}
		// CRI's swap limit is memory plus swap, as cgroup v1's memsw and the OCI spec count it.
		if sw := r.GetMemorySwapLimitInBytes(); sw > 0 {
			res.Memory.Swap = &sw
		}
	}
	for _, h := range r.GetHugepageLimits() {
		res.HugepageLimits = append(res.HugepageLimits, specs.LinuxHugepageLimit{Pagesize: h.GetPageSize(), Limit: h.GetLimit()})
	}
	if u := r.GetUnified(); len(u) > 0 {
		res.Unified = u
	}
}

func device(hostPath, ctrPath string) (specs.LinuxDevice, error) {
	real, err := hostDevicePath(devRoot, hostPath)
	if err != nil {
		return specs.LinuxDevice{}, err
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		return specs.LinuxDevice{}, fmt.Errorf("device %s: %w", hostPath, err)
	}
	d := specs.LinuxDevice{Path: ctrPath, Major: int64(unix.Major(st.Rdev)), Minor: int64(unix.Minor(st.Rdev))}
	mode := os.FileMode(st.Mode & 0o777)
	d.FileMode = &mode
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFCHR:
		d.Type = "c"
	case unix.S_IFBLK:
		d.Type = "b"
	default:
		return d, fmt.Errorf("device %s is not a device node", hostPath)
	}
	return d, nil
}

// adjustCaps applies the CRI's added and dropped capabilities to base the way containerd does:
// "ALL" first (added, the runtime's bounding set; dropped, nothing), then the named additions,
// then the named drops. So "drop ALL, add NET_BIND_SERVICE" leaves exactly that capability, and
// a capability both added and dropped is dropped. Naming a capability outside the bounding set is
// an error (the container could not get it).
func adjustCaps(base []string, c *runtimeapi.Capability, bounding []string) ([]string, error) {
	inBounding := map[string]bool{}
	for _, v := range bounding {
		inBounding[v] = true
	}
	isAll := func(v string) bool { return strings.EqualFold(v, "ALL") }
	set := map[string]bool{}
	for _, v := range base {
		set[v] = true
	}
	if slices.ContainsFunc(c.GetAddCapabilities(), isAll) {
		for _, v := range bounding {
			set[v] = true
		}
	}
	if slices.ContainsFunc(c.GetDropCapabilities(), isAll) {
		clear(set)
	}
	for _, v := range c.GetAddCapabilities() {
		if isAll(v) {
			continue
		}
		if !inBounding[normCap(v)] {
			return nil, fmt.Errorf("capability %s: not held by the runtime (its bounding set lacks it)", normCap(v))
		}
		set[normCap(v)] = true
	}
	for _, v := range c.GetDropCapabilities() {
		delete(set, normCap(v))
	}
	for _, v := range c.GetAddAmbientCapabilities() {
		set[normCap(v)] = true
	}
	var out []string
	for _, v := range allCapabilities() {
		if set[v] && inBounding[v] {
			out = append(out, v)
		}
	}
	return out, nil
}

// mount translates one CRI mount: a bind of a host path, or of an image volume.
func mount(m *runtimeapi.Mount, imageVolumes map[string]string) (specs.Mount, error) {
	dst := m.GetContainerPath()
	if !filepath.IsAbs(dst) {
		return specs.Mount{}, fmt.Errorf("mount destination %q is not absolute", dst)
	}
	src := m.GetHostPath()
	if m.GetImage().GetImage() != "" {
		// Image volumes are read-only by definition (CRI: the runtime should reject others).
		if !m.GetReadonly() {
			return specs.Mount{}, fmt.Errorf("image volume at %s must be read-only", dst)
		}
		root, ok := imageVolumes[filepath.Clean(dst)]
		if !ok {
			return specs.Mount{}, fmt.Errorf("image volume at %s (%s) is not mounted", dst, m.GetImage().GetImage())
		}
		src = root
		if sub := m.GetImageSubPath(); sub != "" {
			p, err := securePath(root, sub)
			if err != nil {
				return specs.Mount{}, fmt.Errorf("image volume at %s: sub-path %q: %w", dst, sub, err)
			}
			src = p
		}
	} else {
		if src == "" {
			return specs.Mount{}, fmt.Errorf("mount at %s has no host path", dst)
		}
		if _, err := os.Stat(src); os.IsNotExist(err) {
			// The kubelet's contract: a missing host path is created as a directory.
			if err := os.MkdirAll(src, 0o755); err != nil {
				return specs.Mount{}, fmt.Errorf("mount source %s: %w", src, err)
			}
		}
	}
	opts := []string{"rbind"}
	switch m.GetPropagation() {
	case runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL:
		opts = append(opts, "rshared")
	case runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER:
		opts = append(opts, "rslave")
	default:
		opts = append(opts, "rprivate")
	}
	if m.GetRecursiveReadOnly() {
		// CRI: recursive read-only needs read-only and private propagation.
		if !m.GetReadonly() {
			return specs.Mount{}, fmt.Errorf("mount at %s: recursive read-only needs read-only", dst)
		}
		if m.GetPropagation() != runtimeapi.MountPropagation_PROPAGATION_PRIVATE {
			return specs.Mount{}, fmt.Errorf("mount at %s: recursive read-only needs private propagation, not %v", dst, m.GetPropagation())
		}
		opts = append(opts, "rro")
	}
	if m.GetReadonly() {
		opts = append(opts, "ro")
	}
	return specs.Mount{Destination: dst, Type: "bind", Source: src, Options: opts}, nil
}

func allCapabilities() []string {
	return []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
		"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
		"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
		"CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
		"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
		"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
		"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
	}
}

func removeOpt(opts []string, drop string) []string {
	var out []string
	for _, o := range opts {
		if o != drop {
			out = append(out, o)
		}
	}
	return out
}

func firstNonEmpty(v ...string) string {
	for _, s := range v {
		if s != "" {
			return s
		}
	}
	return ""
}

// securePath resolves rel inside rootfs, refusing symlinks that lead outside it.
func securePath(rootfs, rel string) (string, error) {
	cur := rootfs
	parts := strings.Split(filepath.Clean("/"+rel), "/")
	for i := 0; i < len(parts); i++ {
		if parts[i] == "" {
			continue
		}
		next := filepath.Join(cur, parts[i])
		fi, err := os.Lstat(next)
		if err != nil {
			return "", err
		}
		if fi.Mode()&os.ModeSymlink != 0 {
			target, err := os.Readlink(next)
			if err != nil {
				return "", err
			}
			if filepath.IsAbs(target) {
				cur = rootfs
			}
			rest := append(strings.Split(filepath.Clean(target), "/"), parts[i+1:]...)
			parts = append(parts[:i+1], rest...)
			if len(parts) > 255 {
				return "", fmt.Errorf("too many symlinks resolving %s", rel)
			}
			continue
		}
		if !strings.HasPrefix(next, rootfs) {
			return "", fmt.Errorf("%s escapes the rootfs", rel)
		}
		cur = next
	}
	return cur, nil
}
