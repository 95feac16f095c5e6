package oci

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
)

// verdict is what a process calling name(args…) gets from profile s, worked out the way runc
// and libseccomp build the filter: a rule's argument checks are ANDed, except that runc splits
// a rule with two checks on one argument into one rule per check; a call no rule matches gets
// the default action. It is "allow", "kill", … or the errno's name.
func verdict(t *testing.T, s *specs.LinuxSeccomp, name string, args ...uint64) string {
	t.Helper()
	var arg [6]uint64
	copy(arg[:], args)
	check := func(a specs.LinuxSeccompArg) bool {
		v := arg[a.Index]
		switch a.Op {
		case specs.OpEqualTo:
			return v == a.Value
		case specs.OpNotEqual:
			return v != a.Value
		case specs.OpLessThan:
			return v < a.Value
		case specs.OpLessEqual:
			return v <= a.Value
		case specs.OpGreaterThan:
			return v > a.Value
		case specs.OpGreaterEqual:
			return v >= a.Value
		case specs.OpMaskedEqual:
			return v&a.Value == a.ValueTwo
		}
		t.Fatalf("%s: unknown operator %q", name, a.Op)
		return false
	}
	matches := func(sc specs.LinuxSyscall) bool {
		perIndex := map[uint]int{}
		for _, a := range sc.Args {
			perIndex[a.Index]++
		}
		split := false
		for _, n := range perIndex {
			split = split || n > 1
		}
		if split {
			return slices.ContainsFunc(sc.Args, check)
		}
		for _, a := range sc.Args {
			if !check(a) {
				return false
			}
		}
		return true
	}
	result := func(act specs.LinuxSeccompAction, errno *uint) string {
		switch act {
		case specs.ActAllow:
			return "allow"
		case specs.ActErrno:
			if errno == nil {
				return "EPERM" // runc's default errno
			}
			return unix.ErrnoName(unix.Errno(*errno))
		}
		return string(act)
	}
	got := ""
	for _, sc := range s.Syscalls {
		if !slices.Contains(sc.Names, name) || !matches(sc) {
			continue
		}
		r := result(sc.Action, sc.ErrnoRet)
		if got != "" && got != r {
			t.Fatalf("%s%v matches rules that disagree: %s and %s", name, args, got, r)
		}
		got = r
	}
	if got == "" {
		got = result(s.DefaultAction, s.DefaultErrnoRet)
	}
	return got
}

// TestDefaultSeccomp checks RuntimeDefault call by call, for both architectures the node is
// built for: what any container may do, what it may do only with a capability, and what
// nobody may (containerd's default profile).
func TestDefaultSeccomp(t *testing.T) {
	const (
		sigchld        = uint64(unix.SIGCHLD)
		threadFlags    = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD | unix.CLONE_SYSVSEM | unix.CLONE_SETTLS | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID
		addrNoRandom   = 0x0040000
		readImpliesExe = 0x0400000
	)
	plain := DefaultCapabilities()
	with := func(c string) []string { return append([]string{c}, DefaultCapabilities()...) }
	noChroot := slices.DeleteFunc(slices.Clone(DefaultCapabilities()), func(c string) bool { return c == "CAP_SYS_CHROOT" })
	both := []string{"amd64", "arm64"}
	for _, tc := range []struct {
		call   string
		args   []uint64
		caps   []string
		arches []string // nil: both
		want   string
	}{
		// What every program needs.
		{call: "read", caps: plain, want: "allow"},
		{call: "openat", caps: plain, want: "allow"},
		{call: "execve", caps: plain, want: "allow"},
		{call: "futex", caps: plain, want: "allow"},
		{call: "rt_sigreturn", caps: plain, want: "allow"},
		{call: "clone", args: []uint64{sigchld}, caps: plain, want: "allow"},
		{call: "clone", args: []uint64{threadFlags}, caps: plain, want: "allow"},
		{call: "socket", args: []uint64{unix.AF_INET}, caps: plain, want: "allow"},
		{call: "socket", args: []uint64{unix.AF_UNIX}, caps: plain, want: "allow"},
		{call: "socket", args: []uint64{unix.AF_NETLINK}, caps: plain, want: "allow"},
		{call: "socket", args: []uint64{unix.AF_NFC}, caps: plain, want: "allow"}, // between AF_ALG and AF_VSOCK
		{call: "socket", args: []uint64{unix.AF_XDP}, caps: plain, want: "allow"},
		{call: "personality", args: []uint64{0}, caps: plain, want: "allow"},
		{call: "personality", args: []uint64{0x8}, caps: plain, want: "allow"}, // PER_LINUX32
		{call: "personality", args: []uint64{0xffffffff}, caps: plain, want: "allow"},
		{call: "chroot", caps: plain, want: "allow"},
		{call: "ptrace", caps: plain, want: "allow"},
		// containerd allows these; the kernel still wants CAP_SYS_TIME to set the clock.
		{call: "adjtimex", caps: plain, want: "allow"},
		{call: "clock_adjtime", caps: plain, want: "allow"},
		{call: "name_to_handle_at", caps: plain, want: "allow"},
		{call: "listmount", caps: plain, want: "allow"},
		{call: "statmount", caps: plain, want: "allow"},
		{call: "arch_prctl", caps: plain, arches: []string{"amd64"}, want: "allow"},
		{call: "modify_ldt", caps: plain, arches: []string{"amd64"}, want: "allow"},
		{call: "arch_prctl", caps: plain, arches: []string{"arm64"}, want: "EPERM"},
		{call: "set_tls", caps: plain, arches: []string{"arm64"}, want: "allow"},
		{call: "arm_fadvise64_64", caps: plain, arches: []string{"arm64"}, want: "allow"},
		{call: "arm_fadvise64_64", caps: plain, arches: []string{"amd64"}, want: "EPERM"},

		// Unknown to the table: refused, whatever their age.
		{call: "open_tree_attr", caps: plain, want: "EPERM"},
		{call: "file_getattr", caps: plain, want: "EPERM"},
		{call: "file_setattr", caps: plain, want: "EPERM"},
		{call: "move_pages", caps: plain, want: "EPERM"},
		{call: "migrate_pages", caps: plain, want: "EPERM"},
		{call: "keyctl", caps: plain, want: "EPERM"},
		{call: "add_key", caps: with("CAP_SYS_ADMIN"), want: "EPERM"},
		{call: "io_uring_setup", caps: plain, want: "EPERM"},
		{call: "userfaultfd", caps: plain, want: "EPERM"},
		{call: "swapon", caps: with("CAP_SYS_ADMIN"), want: "EPERM"},
		{call: "pivot_root", caps: plain, want: "EPERM"},
		{call: "personality", args: []uint64{addrNoRandom}, caps: plain, want: "EPERM"},
		{call: "personality", args: []uint64{readImpliesExe}, caps: plain, want: "EPERM"},
		{call: "socket", args: []uint64{unix.AF_ALG}, caps: plain, want: "EPERM"},
		{call: "socket", args: []uint64{unix.AF_VSOCK}, caps: plain, want: "EPERM"},
		{call: "kexec_load", caps: with("CAP_SYS_BOOT"), want: "EPERM"},
		{call: "kexec_file_load", caps: with("CAP_SYS_BOOT"), want: "EPERM"},

		// Capability by capability.
		{call: "sethostname", caps: plain, want: "EPERM"},
		{call: "sethostname", caps: with("CAP_SYS_ADMIN"), want: "allow"},
		{call: "setdomainname", caps: plain, want: "EPERM"},
		{call: "mount", caps: plain, want: "EPERM"},
		{call: "mount", caps: with("CAP_SYS_ADMIN"), want: "allow"},
		{call: "unshare", caps: plain, want: "EPERM"},
		{call: "unshare", caps: with("CAP_SYS_ADMIN"), want: "allow"},
		{call: "setns", caps: plain, want: "EPERM"},
		{call: "fsopen", caps: plain, want: "EPERM"},
		{call: "clone", args: []uint64{unix.CLONE_NEWUSER | sigchld}, caps: plain, want: "EPERM"},
		{call: "clone", args: []uint64{unix.CLONE_NEWNET | sigchld}, caps: plain, want: "EPERM"},
		{call: "clone", args: []uint64{unix.CLONE_NEWCGROUP | sigchld}, caps: plain, want: "EPERM"},
		{call: "clone", args: []uint64{unix.CLONE_NEWUSER | sigchld}, caps: with("CAP_SYS_ADMIN"), want: "allow"},
		{call: "clone3", caps: plain, want: "ENOSYS"},
		{call: "clone3", caps: with("CAP_SYS_ADMIN"), want: "allow"},
		{call: "reboot", caps: plain, want: "EPERM"},
		{call: "reboot", caps: with("CAP_SYS_BOOT"), want: "allow"},
		{call: "chroot", caps: noChroot, want: "EPERM"},
		{call: "init_module", caps: plain, want: "EPERM"},
		{call: "finit_module", caps: with("CAP_SYS_MODULE"), want: "allow"},
		{call: "acct", caps: plain, want: "EPERM"},
		{call: "acct", caps: with("CAP_SYS_PACCT"), want: "allow"},
		{call: "kcmp", caps: plain, want: "EPERM"},
		{call: "pidfd_getfd", caps: with("CAP_SYS_PTRACE"), want: "allow"},
		{call: "iopl", caps: plain, want: "EPERM"},
		{call: "ioperm", caps: with("CAP_SYS_RAWIO"), want: "allow"},
		{call: "settimeofday", caps: plain, want: "EPERM"},
		{call: "clock_settime", caps: with("CAP_SYS_TIME"), want: "allow"},
		{call: "vhangup", caps: plain, want: "EPERM"},
		{call: "vhangup", caps: with("CAP_SYS_TTY_CONFIG"), want: "allow"},
		{call: "mbind", caps: plain, want: "EPERM"},
		{call: "set_mempolicy_home_node", caps: with("CAP_SYS_NICE"), want: "allow"},
		{call: "syslog", caps: plain, want: "EPERM"},
		{call: "syslog", caps: with("CAP_SYSLOG"), want: "allow"},
		{call: "bpf", caps: plain, want: "EPERM"},
		{call: "bpf", caps: with("CAP_BPF"), want: "allow"},
		{call: "perf_event_open", caps: plain, want: "EPERM"},
		{call: "perf_event_open", caps: with("CAP_PERFMON"), want: "allow"},
		{call: "open_by_handle_at", caps: plain, want: "EPERM"},
		{call: "open_by_handle_at", caps: with("CAP_DAC_READ_SEARCH"), want: "allow"},
	} {
		arches := tc.arches
		if arches == nil {
			arches = both
		}
		for _, arch := range arches {
			s := defaultSeccomp(arch, tc.caps)
			if got := verdict(t, s, tc.call, tc.args...); got != tc.want {
				t.Errorf("%s: %s%#v with %v: %s, want %s", arch, tc.call, tc.args, extraCaps(tc.caps), got, tc.want)
			}
		}
	}
}

// extraCaps names what a case holds beyond the default set, for failure messages.
func extraCaps(caps []string) string {
	var extra []string
	for _, c := range caps {
		if !slices.Contains(DefaultCapabilities(), c) {
			extra = append(extra, c)
		}
	}
	if len(caps) < len(DefaultCapabilities()) {
		return "fewer than the default capabilities"
	}
	if extra == nil {
		return "the default capabilities"
	}
	return "the default capabilities and " + strings.Join(extra, ", ")
}

func TestDefaultSeccompShape(t *testing.T) {
	for arch, want := range map[string][]specs.Arch{
		"amd64": {specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		"arm64": {specs.ArchAARCH64, specs.ArchARM},
	} {
		s := defaultSeccomp(arch, DefaultCapabilities())
		if s.DefaultAction != specs.ActErrno || s.DefaultErrnoRet == nil || *s.DefaultErrnoRet != 1 {
			t.Errorf("%s: default action %s errno %v, want SCMP_ACT_ERRNO with errnoRet 1 (EPERM)", arch, s.DefaultAction, s.DefaultErrnoRet)
		}
		if !slices.Equal(s.Architectures, want) {
			t.Errorf("%s: architectures %v, want %v", arch, s.Architectures, want)
		}
	}
	seen := map[string]bool{}
	for _, n := range seccompAllowed {
		if seen[n] {
			t.Errorf("%s is listed twice", n)
		}
		seen[n] = true
	}
	if got := DefaultSeccomp(nil).Architectures; len(got) == 0 {
		t.Error("DefaultSeccomp for this build names no architecture: compat syscalls would go around it")
	}
}

// TestSeccompLocalhostProfileErrors: a Localhost profile the runtime cannot use is refused when
// the container is created, as InvalidArgument, with the file and what is wrong with it.
func TestSeccompLocalhostProfileErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, profile, want string
	}{
		{"bad JSON", "{\n  \"defaultAction\": \"SCMP_ACT_ERRNO\",\n  \"syscalls\": [}\n", "bad JSON at line 3, column 16: invalid character '}'"},
		{"wrong type", `{"defaultAction": 1}`, "bad JSON at line 1, column 19: json: cannot unmarshal number"},
		{"no default action", `{"syscalls": []}`, "no defaultAction"},
		{"unknown default action", `{"defaultAction": "SCMP_ACT_DENY"}`, `defaultAction: unknown action "SCMP_ACT_DENY" (want one of SCMP_ACT_ALLOW,`},
		{"notify by default", `{"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/run/x.sock"}`, "defaultAction: SCMP_ACT_NOTIFY cannot be the default action"},
		{"unknown action", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}, {"names": ["mount", "umount2"], "action": "SCMP_ACT_BLOCK"}]}`,
			`syscalls[1] (mount, umount2): action: unknown action "SCMP_ACT_BLOCK"`},
		{"no action", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"name": "read"}]}`, "syscalls[0] (read): no action"},
		{"no names", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}`, "syscalls[0]: a rule must name its syscalls"},
		{"unknown architecture", `{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86_65"]}`, `architectures: unknown architecture "SCMP_ARCH_X86_65"`},
		{"unknown sub-architecture", `{"defaultAction": "SCMP_ACT_ERRNO", "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_I386"]}]}`, `archMap: unknown architecture "SCMP_ARCH_I386"`},
		{"both architecture lists", `{"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}`, "architectures and archMap are both set"},
		{"bad operator", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQUAL"}]}]}`,
			`syscalls[0] (personality): args[0]: unknown operator "SCMP_CMP_EQUAL" (want one of SCMP_CMP_EQ,`},
		{"argument index", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["ioctl"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}`,
			"syscalls[0] (ioctl): args[0]: index 6: a syscall has arguments 0 to 5"},
		{"errno with allow", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW", "errnoRet": 1}]}`,
			"syscalls[0] (read): action: an errno return goes with SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not SCMP_ACT_ALLOW"},
		{"errno out of range", `{"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000}`, "defaultAction: errno 70000 is out of range"},
		{"unknown flag", `{"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_LOUD"]}`, `flags: unknown flag "SECCOMP_FILTER_FLAG_LOUD"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".json")
			if err := os.WriteFile(path, []byte(tc.profile), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Seccomp(&runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: path}, "", "", DefaultCapabilities())
			want := "seccomp localhost profile " + path + ": " + tc.want
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("err %v\nwant one starting %q", err, want)
			}
			if c := errdefs.Code(err); c != codes.InvalidArgument {
				t.Errorf("code %v, want InvalidArgument", c)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(dir, "nonexistent.json")
		_, err := Seccomp(nil, "localhost/"+path, "", DefaultCapabilities())
		want := "seccomp localhost profile " + path + ": open " + path + ": no such file or directory"
		if err == nil || err.Error() != want {
			t.Fatalf("err %v, want %q", err, want)
		}
		if c := errdefs.Code(err); c != codes.InvalidArgument {
			t.Errorf("code %v, want InvalidArgument", c)
		}
	})
	t.Run("unknown deprecated path", func(t *testing.T) {
		_, err := Seccomp(nil, "", "docker/strict", nil)
		if want := `seccomp profile path "docker/strict": want runtime/default, unconfined or localhost/<path>`; err == nil || err.Error() != want || !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("err %v, want %q (invalid argument)", err, want)
		}
	})
	t.Run("relative path", func(t *testing.T) {
		_, err := Seccomp(&runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "profiles/x.json"}, "", "", nil)
		if want := "seccomp localhost profile profiles/x.json: not an absolute path"; err == nil || err.Error() != want || !errors.Is(err, errdefs.ErrInvalid) {
			t.Fatalf("err %v, want %q (invalid argument)", err, want)
		}
	})
}

// TestSeccompLocalhostProfile: the seed document's example (section 7.1) and Docker's format.
func TestSeccompLocalhostProfile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	seed := write("seed.json", `{
    "defaultAction": "SCMP_ACT_ERRNO",
    "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": [
        {
            "names": [
                "accept",
                "bind",
                "listen"
            ],
            "action": "SCMP_ACT_ALLOW"
        }
    ]
}`)
	s, err := Seccomp(&runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: seed}, "", "", DefaultCapabilities())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Architectures, []specs.Arch{specs.ArchX86_64}) {
		t.Errorf("architectures %v", s.Architectures)
	}
	for call, want := range map[string]string{"accept": "allow", "listen": "allow", "read": "EPERM"} {
		if got := verdict(t, s, call); got != want {
			t.Errorf("seed profile: %s: %s, want %s", call, got, want)
		}
	}

	// A name libseccomp does not know is skipped when the filter is built, as runc does: a
	// profile may name syscalls newer than the node's kernel.
	future := write("future.json", `{"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read", "frobnicate_at"], "action": "SCMP_ACT_ALLOW"}]}`)
	if _, err := Seccomp(nil, "localhost/"+future, "", nil); err != nil {
		t.Errorf("a profile naming an unknown syscall: %v", err)
	}

	docker := []byte(`{
		"defaultAction": "SCMP_ACT_ERRNO",
		"archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86"]},
		            {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
		"syscalls": [
			{"name": "read", "action": "SCMP_ACT_ALLOW"},
			{"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
			{"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
			{"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
			{"names": ["kcmp"], "action": "SCMP_ACT_ALLOW", "excludes": {"caps": ["SYS_ADMIN", "SYS_PTRACE"]}}
		]}`)
	for _, tc := range []struct {
		arch  string
		caps  []string
		names []string
		abis  []specs.Arch
	}{
		{"amd64", []string{"CAP_CHOWN"}, []string{"read", "ptrace", "arch_prctl", "kcmp"}, []specs.Arch{specs.ArchX86_64, specs.ArchX86}},
		{"arm64", []string{"CAP_CHOWN"}, []string{"read", "ptrace", "kcmp"}, []specs.Arch{specs.ArchAARCH64, specs.ArchARM}},
		{"amd64", []string{"CAP_SYS_ADMIN"}, []string{"read", "mount", "arch_prctl"}, []specs.Arch{specs.ArchX86_64, specs.ArchX86}},
		// excludes: holding any one of the capabilities named is enough to leave the rule out
		{"amd64", []string{"CAP_SYS_PTRACE"}, []string{"read", "ptrace", "arch_prctl"}, []specs.Arch{specs.ArchX86_64, specs.ArchX86}},
	} {
		s, err := parseSeccompProfile(tc.arch, docker, tc.caps)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, sc := range s.Syscalls {
			names = append(names, sc.Names...)
		}
		if !slices.Equal(names, tc.names) || !slices.Equal(s.Architectures, tc.abis) {
			t.Errorf("%s with %v: syscalls %v on %v, want %v on %v", tc.arch, tc.caps, names, s.Architectures, tc.names, tc.abis)
		}
	}
}

// TestUnsetSeccompProfile: config.toml's unset_seccomp_profile fills a request that names no
// profile, and only that.
func TestUnsetSeccompProfile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "allow-all.json")
	os.WriteFile(file, []byte(`{"defaultAction": "SCMP_ACT_LOG"}`), 0o644)
	unconfined := &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}
	for _, tc := range []struct {
		name    string
		profile *runtimeapi.SecurityProfile
		path    string
		unset   string
		want    string // "none", "default", "file"
	}{
		{"no profile, nothing configured", nil, "", "", "none"},
		{"no profile, runtime/default configured", nil, "", "runtime/default", "default"},
		{"no profile, docker/default configured", nil, "", "docker/default", "default"},
		{"no profile, a file configured", nil, "", "localhost/" + file, "file"},
		{"no profile, unconfined configured", nil, "", "unconfined", "none"},
		{"Unconfined asked for", unconfined, "", "runtime/default", "none"},
		{"deprecated path asks for unconfined", nil, "unconfined", "runtime/default", "none"},
		{"deprecated path asks for a file", nil, "localhost/" + file, "runtime/default", "file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Command: []string{"sh"},
				Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
					Seccomp: tc.profile, SeccompProfilePath: tc.path}}}
			s, err := ContainerSpec(&runtimeapi.PodSandboxConfig{}, cfg, ContainerInput{Rootfs: t.TempDir(), PodNamespaces: "/run/ingot/podns/p", UnsetSeccompProfile: tc.unset})
			if err != nil {
				t.Fatal(err)
			}
			got := "none"
			switch sc := s.Linux.Seccomp; {
			case sc == nil:
			case sc.DefaultAction == specs.ActLog:
				got = "file"
			case sc.DefaultAction == specs.ActErrno && verdict(t, sc, "mount") == "EPERM" && verdict(t, sc, "read") == "allow":
				got = "default"
			default:
				got = fmt.Sprintf("%+v", sc)
			}
			if got != tc.want {
				t.Errorf("profile %s, want %s", got, tc.want)
			}
		})
	}
}
