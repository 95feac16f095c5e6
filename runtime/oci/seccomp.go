package oci

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"

	"github.com/opencontainers/runc/libcontainer/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
)

// Seccomp resolves a container's seccomp profile: the security context's profile, else the
// deprecated seccomp_profile_path, else unset (config.toml's unset_seccomp_profile). A profile
// named nowhere is Unconfined, as the CRI proto says; RuntimeDefault is ingot's default profile
// (DefaultSeccomp); Localhost is a JSON profile file on the node. caps are the container's
// bounding set: RuntimeDefault lets a container use the syscalls its capabilities are for.
//
// unset only fills a request that names no profile at all. The kubelet always names one
// (Unconfined when the pod asks for none), so it matters for other CRI clients such as crictl;
// this is containerd's rule too.
//
// Every error is an errdefs.ErrInvalid; a Localhost profile's names the file.
func Seccomp(p *runtimeapi.SecurityProfile, legacyPath, unset string, caps []string) (*specs.LinuxSeccomp, error) {
	if p == nil {
		path := legacyPath
		if path == "" {
			path = unset
		}
		switch {
		case path == "" || path == "unconfined":
			return nil, nil
		case path == "runtime/default" || path == "docker/default":
			p = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
		case strings.HasPrefix(path, "localhost/"):
			p = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost,
				LocalhostRef: strings.TrimPrefix(path, "localhost/")}
		default:
			return nil, invalid{fmt.Errorf("seccomp profile path %q: want runtime/default, unconfined or localhost/<path>", path)}
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
			return nil, invalid{fmt.Errorf("seccomp localhost profile %s: not an absolute path", ref)}
		}
		data, err := readProfile(ref)
		if err != nil {
			return nil, invalid{fmt.Errorf("seccomp localhost profile %s: %w", ref, err)}
		}
		s, err := ParseSeccompProfile(data, caps)
		if err != nil {
			return nil, invalid{fmt.Errorf("seccomp localhost profile %s: %w", ref, err)}
		}
		return s, nil
	}
	return nil, invalid{fmt.Errorf("seccomp profile type %v is not supported", p.GetProfileType())}
}

// invalid marks an error as the request's fault (errdefs.ErrInvalid, whatever the cause
// underneath, a missing file included) without "invalid argument" in its text: the CRI server
// adds that once to every spec error.
type invalid struct{ error }

func (e invalid) Unwrap() []error { return []error{e.error, errdefs.ErrInvalid} }

// RuntimeDefault is an allow-list: a syscall it does not name fails with EPERM, so a syscall
// newer than the table (and every interface a container has no business with) is refused until
// someone decides otherwise. Its contents and conditions are containerd's default profile
// (contrib/seccomp/seccomp_default.go on main, after v2.3; it tracks Docker's), so a workload
// that runs under containerd's RuntimeDefault runs here. A name libseccomp or an architecture
// does not know is skipped when the filter is built.

// seccompAllowed are the syscalls every container may make. containerd allows ptrace and
// process_vm_* only on kernels from 4.8, which no longer let a traced process slip past its
// filter; ingot's kernels are all newer.
var seccompAllowed = []string{
	"accept", "accept4", "access", "adjtimex", "alarm",
	"bind", "brk",
	"cachestat", "capget", "capset", "chdir", "chmod", "chown", "chown32",
	"clock_adjtime", "clock_adjtime64", "clock_getres", "clock_getres_time64", "clock_gettime",
	"clock_gettime64", "clock_nanosleep", "clock_nanosleep_time64", "close", "close_range",
	"connect", "copy_file_range", "creat",
	"dup", "dup2", "dup3",
	"epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait", "epoll_pwait2",
	"epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat", "exit", "exit_group",
	"faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fanotify_mark", "fchdir",
	"fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32", "fchownat", "fcntl", "fcntl64",
	"fdatasync", "fgetxattr", "flistxattr", "flock", "fork", "fremovexattr", "fsetxattr", "fstat",
	"fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync", "ftruncate", "ftruncate64", "futex",
	"futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake", "futimesat",
	"getcpu", "getcwd", "getdents", "getdents64", "getegid", "getegid32", "geteuid", "geteuid32",
	"getgid", "getgid32", "getgroups", "getgroups32", "getitimer", "getpeername", "getpgid",
	"getpgrp", "getpid", "getppid", "getpriority", "getrandom", "getresgid", "getresgid32",
	"getresuid", "getresuid32", "getrlimit", "get_robust_list", "getrusage", "getsid",
	"getsockname", "getsockopt", "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32",
	"getxattr", "getxattrat",
	"inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl",
	"io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get",
	"ioprio_set", "io_setup", "io_submit", "ipc",
	"kill",
	"landlock_add_rule", "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32",
	"lgetxattr", "link", "linkat", "listen", "listmount", "listxattr", "listxattrat", "llistxattr",
	"_llseek", "lremovexattr", "lseek", "lsetxattr", "lsm_get_self_attr", "lsm_list_modules",
	"lsm_set_self_attr", "lstat", "lstat64",
	"madvise", "map_shadow_stack", "membarrier", "memfd_create", "memfd_secret", "mincore", "mkdir",
	"mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "mmap", "mmap2", "mprotect",
	"mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive", "mq_timedreceive_time64",
	"mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap", "mseal", "msgctl", "msgget",
	"msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
	"name_to_handle_at", "nanosleep", "newfstatat", "_newselect",
	"open", "openat", "openat2",
	"pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free",
	"pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2",
	"prlimit64", "process_mrelease", "process_vm_readv", "process_vm_writev", "pselect6",
	"pselect6_time64", "ptrace", "pwrite64", "pwritev", "pwritev2",
	"read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom", "recvmmsg",
	"recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "removexattrat", "rename",
	"renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
	"rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
	"rt_sigtimedwait_time64", "rt_tgsigqueueinfo",
	"sched_getaffinity", "sched_getattr", "sched_getparam", "sched_get_priority_max",
	"sched_get_priority_min", "sched_getscheduler", "sched_rr_get_interval",
	"sched_rr_get_interval_time64", "sched_setaffinity", "sched_setattr", "sched_setparam",
	"sched_setscheduler", "sched_yield", "seccomp", "select", "semctl", "semget", "semop",
	"semtimedop", "semtimedop_time64", "send", "sendfile", "sendfile64", "sendmmsg", "sendmsg",
	"sendto", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32", "setgroups",
	"setgroups32", "setitimer", "setpgid", "setpriority", "setregid", "setregid32", "setresgid",
	"setresgid32", "setresuid", "setresuid32", "setreuid", "setreuid32", "setrlimit",
	"set_robust_list", "setsid", "setsockopt", "set_thread_area", "set_tid_address", "setuid",
	"setuid32", "setxattr", "setxattrat", "shmat", "shmctl", "shmdt", "shmget", "shutdown",
	"sigaltstack", "signalfd", "signalfd4", "sigprocmask", "sigreturn", "socketcall", "socketpair",
	"splice", "stat", "stat64", "statfs", "statfs64", "statmount", "statx", "symlink", "symlinkat",
	"sync", "sync_file_range", "syncfs", "sysinfo",
	"tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
	"timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime",
	"timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate",
	"truncate64",
	"ugetrlimit", "umask", "uname", "unlink", "unlinkat", "uretprobe", "utime", "utimensat",
	"utimensat_time64", "utimes",
	"vfork", "vmsplice",
	"wait4", "waitid", "waitpid", "write", "writev",
}

// seccompCapAllowed are the syscalls a container may make only when it holds a capability: the
// kernel checks that capability too, and without it they are refused before the kernel code
// (and its bugs) is reached.
var seccompCapAllowed = []struct {
	cap   string
	names []string
}{
	{"CAP_DAC_READ_SEARCH", []string{"open_by_handle_at"}},
	{"CAP_SYS_ADMIN", []string{
		"bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
		"lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open",
		"quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount",
		"umount2", "unshare",
	}},
	{"CAP_SYS_BOOT", []string{"reboot"}},
	{"CAP_SYS_CHROOT", []string{"chroot"}},
	{"CAP_SYS_MODULE", []string{"delete_module", "init_module", "finit_module"}},
	{"CAP_SYS_PACCT", []string{"acct"}},
	{"CAP_SYS_PTRACE", []string{"kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"}},
	{"CAP_SYS_RAWIO", []string{"iopl", "ioperm"}},
	{"CAP_SYS_TIME", []string{"settimeofday", "stime", "clock_settime", "clock_settime64"}},
	{"CAP_SYS_TTY_CONFIG", []string{"vhangup"}},
	{"CAP_SYS_NICE", []string{"get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"}},
	{"CAP_SYSLOG", []string{"syslog"}},
	{"CAP_BPF", []string{"bpf"}},
	{"CAP_PERFMON", []string{"perf_event_open"}},
}

// seccompArch is RuntimeDefault for one GOARCH: the ABIs the filter covers (native first, then
// the compat ABIs its kernel runs, so a 32-bit syscall cannot go around the table) and the
// syscalls only that architecture has.
type seccompArch struct {
	abis    []specs.Arch
	allowed []string
}

var seccompArches = map[string]seccompArch{
	"amd64": {
		abis:    []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		allowed: []string{"arch_prctl", "modify_ldt"},
	},
	"arm64": {
		abis:    []specs.Arch{specs.ArchAARCH64, specs.ArchARM},
		allowed: []string{"arm_fadvise64_64", "arm_sync_file_range", "sync_file_range2", "breakpoint", "cacheflush", "set_tls"},
	},
}

// personalityAllowed are the personality(2) arguments a container may pass: Linux, 32-bit
// Linux, either with a 2.6-style uname, and 0xffffffff (a query). Others (ADDR_NO_RANDOMIZE,
// READ_IMPLIES_EXEC…) weaken the process's own defences.
var personalityAllowed = []uint64{0x0, 0x0008, 0x20000, 0x20008, 0xffffffff}

// cloneNamespaceFlags are clone(2)'s new-namespace flags: without CAP_SYS_ADMIN a clone with
// any of them is refused. CLONE_NEWTIME is not among them: in clone(2) its bit is part of the
// exit signal, and only clone3 and unshare can ask for a time namespace.
const cloneNamespaceFlags = unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER |
	unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWCGROUP

// DefaultSeccomp is ingot's RuntimeDefault profile, for this build's architecture, for a
// container holding caps.
func DefaultSeccomp(caps []string) *specs.LinuxSeccomp { return defaultSeccomp(runtime.GOARCH, caps) }

func defaultSeccomp(goarch string, caps []string) *specs.LinuxSeccomp {
	eperm, enosys := uint(unix.EPERM), uint(unix.ENOSYS)
	arch := seccompArches[goarch]
	s := &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, DefaultErrnoRet: &eperm, Architectures: arch.abis}
	allow := func(names []string, args ...specs.LinuxSeccompArg) {
		s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{Names: names, Action: specs.ActAllow, Args: args})
	}
	allow(seccompAllowed)
	if len(arch.allowed) > 0 {
		allow(arch.allowed)
	}
	// socket(2) for every address family but AF_ALG (the kernel's crypto API) and AF_VSOCK (the
	// hypervisor's sockets). Three rules of one condition each, as a rule's conditions on one
	// argument would be split by runc into rules that are ORed. 32-bit x86 reaches socket()
	// through socketcall(2) too, which a filter cannot look into.
	allow([]string{"socket"}, specs.LinuxSeccompArg{Index: 0, Value: unix.AF_ALG, Op: specs.OpLessThan})
	allow([]string{"socket"}, specs.LinuxSeccompArg{Index: 0, Value: unix.AF_ALG + 1, Op: specs.OpEqualTo})
	allow([]string{"socket"}, specs.LinuxSeccompArg{Index: 0, Value: unix.AF_VSOCK, Op: specs.OpGreaterThan})
	for _, v := range personalityAllowed {
		allow([]string{"personality"}, specs.LinuxSeccompArg{Index: 0, Value: v, Op: specs.OpEqualTo})
	}
	for _, g := range seccompCapAllowed {
		if slices.Contains(caps, g.cap) {
			allow(g.names)
		}
	}
	if !slices.Contains(caps, "CAP_SYS_ADMIN") {
		// clone's flags are its first argument on amd64 and arm64 (s390 would differ).
		allow([]string{"clone"}, specs.LinuxSeccompArg{Index: 0, Value: cloneNamespaceFlags, ValueTwo: 0, Op: specs.OpMaskedEqual})
		// clone3's flags are in memory a filter cannot read: ENOSYS makes libc fall back to
		// clone, whose flags it can.
		s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys})
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
// holding caps, for this build's architecture.
//
// Everything libcontainer would refuse when the container starts is refused here, where the
// error can name the rule: bad JSON, an unknown action, architecture, flag or operator, an
// argument index past the sixth, an errno out of range. A syscall name nobody knows is not an
// error: libseccomp skips names it cannot resolve, so one profile serves kernels of several ages
// (as with runc and containerd).
func ParseSeccompProfile(data []byte, caps []string) (*specs.LinuxSeccomp, error) {
	return parseSeccompProfile(runtime.GOARCH, data, caps)
}

func parseSeccompProfile(goarch string, data []byte, caps []string) (*specs.LinuxSeccomp, error) {
	var f seccompFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, jsonError(data, err)
	}
	if f.DefaultAction == "" {
		return nil, errors.New("no defaultAction")
	}
	if err := checkAction("defaultAction", f.DefaultAction, f.DefaultErrnoRet); err != nil {
		return nil, err
	}
	if f.DefaultAction == specs.ActNotify {
		// The notify fd is handed over with write(2), which the filter would already trap.
		return nil, errors.New("defaultAction: SCMP_ACT_NOTIFY cannot be the default action")
	}
	if len(f.Architectures) > 0 && len(f.ArchMap) > 0 {
		return nil, errors.New("architectures and archMap are both set: want one of them")
	}
	for _, a := range f.Architectures {
		if err := checkArch("architectures", a); err != nil {
			return nil, err
		}
	}
	for _, m := range f.ArchMap {
		for _, a := range append([]specs.Arch{m.Arch}, m.SubArches...) {
			if err := checkArch("archMap", a); err != nil {
				return nil, err
			}
		}
	}
	for _, fl := range f.Flags {
		if !slices.Contains(seccomp.KnownFlags(), string(fl)) {
			return nil, fmt.Errorf("flags: unknown flag %q (want one of %s)", fl, strings.Join(seccomp.KnownFlags(), ", "))
		}
	}

	s := &specs.LinuxSeccomp{DefaultAction: f.DefaultAction, DefaultErrnoRet: f.DefaultErrnoRet,
		Architectures: f.Architectures, Flags: f.Flags, ListenerPath: f.ListenerPath, ListenerMetadata: f.ListenerMetadata}
	if native := seccompArches[goarch].abis; len(native) > 0 {
		for _, m := range f.ArchMap {
			if m.Arch == native[0] {
				s.Architectures = append([]specs.Arch{m.Arch}, m.SubArches...)
			}
		}
	}
	// Docker's includes and excludes: a rule is for this container when it holds every
	// capability and runs on an architecture the includes name, and holds none of the
	// capabilities and runs on none of the architectures the excludes name.
	holds := func(c string) bool { return slices.Contains(caps, normCap(c)) }
	for i, sc := range f.Syscalls {
		names := sc.Names
		if sc.Name != "" {
			names = append([]string{sc.Name}, names...)
		}
		where := fmt.Sprintf("syscalls[%d]", i)
		if len(names) > 0 {
			where += " (" + strings.Join(names, ", ") + ")"
		}
		if len(names) == 0 || slices.Contains(names, "") {
			return nil, fmt.Errorf("%s: a rule must name its syscalls", where)
		}
		if sc.Action == "" {
			return nil, fmt.Errorf("%s: no action", where)
		}
		if err := checkAction(where+": action", sc.Action, sc.ErrnoRet); err != nil {
			return nil, err
		}
		if sc.Action == specs.ActNotify && (f.ListenerPath == "" || slices.Contains(names, "write")) {
			return nil, fmt.Errorf("%s: SCMP_ACT_NOTIFY needs a listenerPath and cannot apply to write", where)
		}
		for j, a := range sc.Args {
			if a.Index > 5 {
				return nil, fmt.Errorf("%s: args[%d]: index %d: a syscall has arguments 0 to 5", where, j, a.Index)
			}
			if !slices.Contains(seccomp.KnownOperators(), string(a.Op)) {
				return nil, fmt.Errorf("%s: args[%d]: unknown operator %q (want one of %s)", where, j, a.Op, strings.Join(seccomp.KnownOperators(), ", "))
			}
		}
		if in := sc.Includes; in != nil {
			if len(in.Arches) > 0 && !slices.Contains(in.Arches, goarch) || slices.ContainsFunc(in.Caps, func(c string) bool { return !holds(c) }) {
				continue
			}
		}
		if ex := sc.Excludes; ex != nil {
			if slices.Contains(ex.Arches, goarch) || slices.ContainsFunc(ex.Caps, holds) {
				continue
			}
		}
		s.Syscalls = append(s.Syscalls, specs.LinuxSyscall{Names: names, Action: sc.Action, ErrnoRet: sc.ErrnoRet, Args: sc.Args})
	}
	return s, nil
}

// checkAction refuses an action runc does not know, and an errno that would not be returned as
// written: only ERRNO and TRACE return one (the runtime spec makes any other a failure), and
// it must fit an errno (4095 at most; libseccomp keeps 16 bits).
func checkAction(where string, a specs.LinuxSeccompAction, errno *uint) error {
	if !slices.Contains(seccomp.KnownActions(), string(a)) {
		return fmt.Errorf("%s: unknown action %q (want one of %s)", where, a, strings.Join(seccomp.KnownActions(), ", "))
	}
	if errno == nil {
		return nil
	}
	if a != specs.ActErrno && a != specs.ActTrace {
		return fmt.Errorf("%s: an errno return goes with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not %s", where, a)
	}
	if *errno > 4095 {
		return fmt.Errorf("%s: errno %d is out of range (0 to 4095)", where, *errno)
	}
	return nil
}

func checkArch(where string, a specs.Arch) error {
	if !slices.Contains(seccomp.KnownArchs(), string(a)) {
		return fmt.Errorf("%s: unknown architecture %q (want one of %s)", where, a, strings.Join(seccomp.KnownArchs(), ", "))
	}
	return nil
}

// jsonError says where in the file a JSON error is, as a line and column people can go to.
func jsonError(data []byte, err error) error {
	var off int64
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		off = syn.Offset
	case errors.As(err, &typ):
		off = typ.Offset
	default:
		return fmt.Errorf("bad JSON: %w", err)
	}
	// Offset counts the bytes read, the offending one included.
	before := data[:max(0, min(int(off), len(data))-1)]
	line := bytes.Count(before, []byte("\n")) + 1
	col := len(before) - bytes.LastIndexByte(before, '\n')
	return fmt.Errorf("bad JSON at line %d, column %d: %w", line, col, err)
}

func normCap(v string) string {
	v = strings.ToUpper(v)
	if !strings.HasPrefix(v, "CAP_") {
		v = "CAP_" + v
	}
	return v
}

// maxSeccompProfile bounds a localhost seccomp profile: Docker's default profile is ~20 KiB.
const maxSeccompProfile = 1 << 20

// readProfile reads a profile the request names by path: only a regular file, and only up to
// maxSeccompProfile. A FIFO would block the open (hence O_NONBLOCK) and /dev/zero would be read
// until the runtime runs out of memory.
func readProfile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	if fi.Size() > maxSeccompProfile {
		return nil, fmt.Errorf("larger than %d bytes", maxSeccompProfile)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxSeccompProfile+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxSeccompProfile { // it grew after the stat
		return nil, fmt.Errorf("larger than %d bytes", maxSeccompProfile)
	}
	return data, nil
}
