package oci

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/opencontainers/cgroups"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Host is what the node can enforce for containers. The runtime reads it (DetectHost) when it
// builds a spec; the zero value is a host with neither cgroup v2 nor AppArmor.
type Host struct {
	// CgroupV2: the node runs the unified cgroup hierarchy. Unprivileged containers then get a
	// private cgroup namespace, as with containerd: they see their own cgroup as the root of
	// /sys/fs/cgroup and /proc/self/cgroup instead of the node's layout.
	CgroupV2 bool
	AppArmor AppArmor
	// OOM is how far containers' oom_score_adj may go below the runtime's own.
	OOM OOMLimit
}

// AppArmor is the host's AppArmor, as far as containers are concerned.
type AppArmor struct {
	// Enabled: the kernel enforces AppArmor (/sys/module/apparmor/parameters/enabled is Y, the
	// test containerd and critest use).
	Enabled bool
	// Profiles is the securityfs file that lists the loaded profiles. It is read for every
	// request: profiles are loaded and replaced while the runtime runs.
	Profiles string
}

// DetectHost reads what the running kernel enforces.
func DetectHost() Host {
	h := Host{CgroupV2: cgroups.IsCgroup2UnifiedMode(), OOM: DetectOOMLimit()}
	if b, err := os.ReadFile("/sys/module/apparmor/parameters/enabled"); err == nil && strings.HasPrefix(string(b), "Y") {
		h.AppArmor = AppArmor{Enabled: true, Profiles: "/sys/kernel/security/apparmor/profiles"}
	}
	return h
}

// Profile returns the AppArmor profile a container (or pod) asks for, "" for none. The
// structured field wins over the deprecated string, as the CRI says. Asking for a profile the
// host cannot enforce is an error, never a silently unconfined container: AppArmor off (as on
// ingot's own kernel), the runtime default (ingot has no profile loader, so no default profile),
// or a Localhost profile that is not loaded. Containers that ask for nothing run unconfined.
func (a AppArmor) Profile(sp *runtimeapi.SecurityProfile, deprecated string) (string, error) {
	var asked string // the request, spelled as the deprecated field spells it
	switch {
	case sp != nil:
		switch sp.GetProfileType() {
		case runtimeapi.SecurityProfile_Unconfined:
			return "", nil
		case runtimeapi.SecurityProfile_RuntimeDefault:
			asked = "runtime/default"
		case runtimeapi.SecurityProfile_Localhost:
			// The kubelet sends the bare name; critest sends "localhost/<name>".
			asked = "localhost/" + strings.TrimPrefix(sp.GetLocalhostRef(), "localhost/")
		default:
			return "", fmt.Errorf("AppArmor profile type %v: unknown", sp.GetProfileType())
		}
	case deprecated == "" || deprecated == "unconfined":
		return "", nil
	default:
		asked = deprecated
	}
	if !a.Enabled {
		return "", fmt.Errorf("AppArmor profile %q: AppArmor is not enabled on this host", asked)
	}
	name, ok := strings.CutPrefix(asked, "localhost/")
	switch {
	case asked == "runtime/default":
		return "", fmt.Errorf("AppArmor profile %q: ingot has no default AppArmor profile (ask for a profile loaded on the node, localhost/<name>, or for unconfined)", asked)
	case !ok:
		return "", fmt.Errorf("AppArmor profile %q: want runtime/default, unconfined or localhost/<name>", asked)
	case name == "":
		return "", fmt.Errorf("AppArmor profile %q names no profile", asked)
	}
	loaded, err := a.loaded(name)
	if err != nil {
		return "", fmt.Errorf("AppArmor profile %q: %w", asked, err)
	}
	if !loaded {
		return "", fmt.Errorf("AppArmor profile %q is not loaded on this host", asked)
	}
	return name, nil
}

// loaded reports whether the kernel has the profile name. Each line of the profiles file is
// "<name> (<mode>)".
func (a AppArmor) loaded(name string) (bool, error) {
	if a.Profiles == "" {
		return false, errors.New("no list of loaded AppArmor profiles")
	}
	f, err := os.Open(a.Profiles)
	if err != nil {
		return false, fmt.Errorf("list loaded AppArmor profiles: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.LastIndex(line, " ("); i >= 0 {
			line = line[:i]
		}
		if line == name {
			return true, nil
		}
	}
	if err := sc.Err(); err != nil {
		return false, fmt.Errorf("list loaded AppArmor profiles: %w", err)
	}
	return false, nil
}

// SELinux refuses SELinux options: ingot labels neither processes nor files, so a container that
// asks for a label would otherwise run without the confinement it asked for. An empty option
// set asks for nothing.
func SELinux(o *runtimeapi.SELinuxOption) error {
	var asked []string
	for _, f := range []struct{ key, value string }{
		{"user", o.GetUser()}, {"role", o.GetRole()}, {"type", o.GetType()}, {"level", o.GetLevel()},
	} {
		if f.value != "" {
			asked = append(asked, fmt.Sprintf("%s %q", f.key, f.value))
		}
	}
	if len(asked) == 0 {
		return nil
	}
	return fmt.Errorf("SELinux options (%s): ingot applies no SELinux labels, so it cannot confine as asked", strings.Join(asked, ", "))
}
