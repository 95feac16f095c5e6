package oci

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Seccomp resolves a container's seccomp profile: the security context's profile, or the
// deprecated seccomp_profile_path when that is unset. A nil profile (and an empty path) is
// Unconfined, as the CRI proto says; RuntimeDefault is ingot's default profile (DefaultSeccomp);
// Localhost is a JSON profile file on the node. caps are the container's bounding set:
// RuntimeDefault lets a container use the syscalls its capabilities are for.
func Seccomp(p *runtimeapi.SecurityProfile, legacyPath string, caps []string) (*specs.LinuxSeccomp, error) {
	if p == nil {
		switch {
		case legacyPath == "" || legacyPath == "unconfined":
			return nil, nil
		case legacyPath == "runtime/default" || legacyPath == "docker/default":
			p = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
		case strings.HasPrefix(legacyPath, "localhost/"):
			p = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost,
				LocalhostRef: strings.TrimPrefix(legacyPath, "localhost/")}
		default:
			return nil, fmt.Errorf("seccomp profile path %q: want runtime/default, unconfined or localhost/<path>", legacyPath)
		}
	}
	switch p.GetProfileType() {
	case runtimeapi.SecurityProfile_Unconfined:
		return nil, nil
	case runtimeapi.SecurityProfile_RuntimeDefault:
		return DefaultSeccomp(caps), nil
	case runtimeapi.SecurityProfile_Localhost:
		ref := p.GetLocalhostRef()
		if !strings.HasPrefix(ref, "/") {
			return nil, fmt.Errorf("seccomp localhost profile %q: not an absolute path", ref)
		}
		data, err := os.ReadFile(ref)
		if err != nil {
			return nil, fmt.Errorf("seccomp localhost profile: %w", err)
		}
		s, err := ParseSeccompProfile(data, caps)
		if err != nil {
			return nil, fmt.Errorf("seccomp localhost profile %s: %w", ref, err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("seccomp profile type %v is not supported", p.GetProfileType())
}

// seccompDeny is one group of RuntimeDefault's refusals: the syscalls are refused unless the
// container holds one of caps (none: always refused).
type seccompDeny struct {
	caps  []string
	names []string
	errno uint // 0: EPERM
	why   string
}

// defaultDenied is RuntimeDefault's table. ingot's default profile allows what it does not
// name, and refuses what containers have no business calling: syscalls that act on the whole
// host and are only guarded by a capability the container normally lacks (refused as a second
// line of defence unless it holds that capability), interfaces that are not namespaced, and
// large attack surfaces. Capabilities already keep unprivileged containers from most of these;
// the profile keeps a kernel bug in one of them from being reachable. Nothing here comes from
// another runtime's profile; the groups follow the capabilities the kernel checks.
var defaultDenied = []seccompDeny{
	{nil, []string{"add_key", "keyctl", "request_key"}, 0, "the kernel keyring is not namespaced"},
	{nil, []string{"create_module", "get_kernel_syms", "query_module", "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl", "vm86", "vm86old"}, 0, "obsolete"},
	{nil, []string{"io_uring_setup", "io_uring_enter", "io_uring_register"}, 0, "a large attack surface outside the usual syscall paths"},
	{[]string{"CAP_SYS_ADMIN"}, []string{
		"mount", "umount", "umount2", "pivot_root", "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
		"unshare", "setns", "swapon", "swapoff", "quotactl", "quotactl_fd", "fanotify_init", "lookup_dcookie", "setdomainname",
	}, 0, "mounts, namespaces and host administration"},
	{[]string{"CAP_SYS_ADMIN"}, []string{"clone3"}, uint(unix.ENOSYS), "its flags are in memory a filter cannot read: ENOSYS makes libc fall back to clone"},
	{[]string{"CAP_SYS_ADMIN", "CAP_BPF"}, []string{"bpf"}, 0, "eBPF"},
	{[]string{"CAP_SYS_ADMIN", "CAP_PERFMON"}, []string{"perf_event_open"}, 0, "performance monitoring"},
	{[]string{"CAP_SYS_MODULE"}, []string{"init_module", "finit_module", "delete_module"}, 0, "kernel modules"},
	{[]string{"CAP_SYS_BOOT"}, []string{"reboot", "kexec_load", "kexec_file_load"}, 0, "rebooting the host"},
	{[]string{"CAP_SYS_TIME"}, []string{"settimeofday", "stime", "clock_settime", "clock_settime64", "clock_adjtime", "clock_adjtime64"}, 0, "the clock is not namespaced"},
	{[]string{"CAP_SYS_PACCT"}, []string{"acct"}, 0, "process accounting"},
	{[]string{"CAP_SYS_RAWIO"}, []string{"iopl", "ioperm"}, 0, "I/O ports"},
	{[]string{"CAP_SYS_PTRACE"}, []string{"kcmp", "pidfd_getfd", "process_madvise", "userfaultfd"}, 0, "inspecting other processes"},
	{[]string{"CAP_DAC_READ_SEARCH"}, []string{"open_by_handle_at"}, 0, "opens files by handle, around the mount namespace"},
	{[]string{"CAP_SYSLOG"}, []string{"syslog"}, 0, "the kernel log"},
	{[]string{"CAP_SYS_NICE"}, []string{"get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"}, 0, "NUMA placement"},
}

// cloneNamespaceFlags are clone(2)'s new-namespace flags; without CAP_SYS_ADMIN RuntimeDefault
// refuses a clone with any of them (one rule per flag: a rule's argument checks are ANDed).
var cloneNamespaceFlags = []uint64{
	unix.CLONE_NEWNS, unix.CLONE_NEWUTS, unix.CLONE_NEWIPC, unix.CLONE_NEWUSER,
	unix.CLONE_NEWPID, unix.CLONE_NEWNET, unix.CLONE_NEWCGROUP, unix.CLONE_NEWTIME,
}

// seccompArches are the architectures a filter for this build covers: the native one and the
// compat ABIs its kernel runs, so a 32-bit syscall cannot go around the table.
func seccompArches() []specs.Arch {
	switch runtime.GOARCH {
	case "amd64":
		return []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32}
	case "arm64":
		return []specs.Arch{specs.ArchAARCH64, specs.ArchARM}
	}
	return nil
}

// DefaultSeccomp is ingot's RuntimeDefault profile for a container holding caps.
func DefaultSeccomp(caps []string) *specs.LinuxSeccomp {
	held := func(want []string) bool {
		for _, c := range want {
			if slices.Contains(caps, c) {
				return true
			}
		}
		return false
	}
	s := &specs.LinuxSeccomp{DefaultAction: specs.ActAllow, Architectures: seccompArches()}
	for _, d := range defaultDenied {
		if d.caps != nil && held(d.caps) {
			continue
		}
		sc := specs.LinuxSyscall{Names: d.names, Action: specs.ActErrno}
		errno := d.errno
		if errno == 0 {
			errno = uint(unix.EPERM)
		}
		sc.ErrnoRet = &errno
		s.Syscalls = append(s.Syscalls, sc)
	}
	if !held([]string{"CAP_SYS_ADMIN"}) {
		eperm := uint(unix.EPERM)
		for _, f := range cloneNamespaceFlags {
			s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{
				Names: []string{"clone"}, Action: specs.ActErrno, ErrnoRet: &eperm,
				Args: []specs.LinuxSeccompArg{{Index: 0, Value: f, ValueTwo: f, Op: specs.OpMaskedEqual}},
			})
		}
	}
	return s
}

// seccompFile is a seccomp profile as the kubelet's users write them: the OCI LinuxSeccomp
// fields plus the Docker profile format's extras (archMap, a syscall's single "name", and
// includes/excludes by capability and architecture).
type seccompFile struct {
	DefaultAction    specs.LinuxSeccompAction `json:"defaultAction"`
	DefaultErrnoRet  *uint                    `json:"defaultErrnoRet,omitempty"`
	Architectures    []specs.Arch             `json:"architectures,omitempty"`
	ArchMap          []seccompArchMap         `json:"archMap,omitempty"`
	Flags            []specs.LinuxSeccompFlag `json:"flags,omitempty"`
	ListenerPath     string                   `json:"listenerPath,omitempty"`
	ListenerMetadata string                   `json:"listenerMetadata,omitempty"`
	Syscalls         []seccompFileSyscall     `json:"syscalls,omitempty"`
}

type seccompArchMap struct {
	Arch      specs.Arch   `json:"architecture"`
	SubArches []specs.Arch `json:"subArchitectures"`
}

type seccompFileSyscall struct {
	Name     string                   `json:"name,omitempty"`
	Names    []string                 `json:"names,omitempty"`
	Action   specs.LinuxSeccompAction `json:"action"`
	ErrnoRet *uint                    `json:"errnoRet,omitempty"`
	Args     []specs.LinuxSeccompArg  `json:"args,omitempty"`
	Includes *seccompFilter           `json:"includes,omitempty"`
	Excludes *seccompFilter           `json:"excludes,omitempty"`
}

type seccompFilter struct {
	Arches []string `json:"arches,omitempty"`
	Caps   []string `json:"caps,omitempty"`
}

// ParseSeccompProfile reads a JSON seccomp profile (OCI or Docker format) for a container
// holding caps.
func ParseSeccompProfile(data []byte, caps []string) (*specs.LinuxSeccomp, error) {
	var f seccompFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	if f.DefaultAction == "" {
		return nil, fmt.Errorf("no defaultAction")
	}
	s := &specs.LinuxSeccomp{DefaultAction: f.DefaultAction, DefaultErrnoRet: f.DefaultErrnoRet,
		Architectures: f.Architectures, Flags: f.Flags, ListenerPath: f.ListenerPath, ListenerMetadata: f.ListenerMetadata}
	native := seccompArches()
	if len(s.Architectures) == 0 && len(f.ArchMap) > 0 {
		for _, m := range f.ArchMap {
			if len(native) > 0 && m.Arch == native[0] {
				s.Architectures = append([]specs.Arch{m.Arch}, m.SubArches...)
			}
		}
	}
	arch := runtime.GOARCH
	matches := func(flt *seccompFilter) bool {
		if len(flt.Arches) > 0 && !slices.Contains(flt.Arches, arch) {
			return false
		}
		for _, c := range flt.Caps {
			if !slices.Contains(caps, normCap(c)) {
				return false
			}
		}
		return true
	}
	for _, sc := range f.Syscalls {
		if sc.Includes != nil && !matches(sc.Includes) {
			continue
		}
		if sc.Excludes != nil && (len(sc.Excludes.Arches) > 0 || len(sc.Excludes.Caps) > 0) && matches(sc.Excludes) {
			continue
		}
		names := sc.Names
		if sc.Name != "" {
			names = append([]string{sc.Name}, names...)
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("a syscall rule names no syscall")
		}
		s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{Names: names, Action: sc.Action, ErrnoRet: sc.ErrnoRet, Args: sc.Args})
	}
	return s, nil
}

func normCap(v string) string {
	v = strings.ToUpper(v)
	if !strings.HasPrefix(v, "CAP_") {
		v = "CAP_" + v
	}
	return v
}
