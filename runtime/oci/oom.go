package oci

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// OOMLimit is how far the runtime can lower the oom_score_adj of the containers it starts. The
// kernel lets a process set a value below the lowest its ancestors set only with CAP_SYS_RESOURCE
// in the initial user namespace. On a node the runtime holds it and the kubelet's values
// (Guaranteed pods at -997, node-critical ones lower) are applied as given; inside a test's user
// namespace it does not, and asking for less would fail the start with EACCES.
type OOMLimit struct {
	// CanLower: the runtime may set any value from -1000 to 1000.
	CanLower bool
	// Own is the runtime's own oom_score_adj: the floor when CanLower is false.
	Own int
}

// Apply returns the oom_score_adj a container that asks for want gets, and whether it was
// raised to the runtime's own value.
func (l OOMLimit) Apply(want int) (adj int, clamped bool) {
	if !l.CanLower && want < l.Own {
		return l.Own, true
	}
	return want, false
}

// DetectOOMLimit reads the calling process's capabilities, user namespace and oom_score_adj.
func DetectOOMLimit() OOMLimit { return detectOOMLimit(hasSysResource, ownOOMScoreAdj) }

func detectOOMLimit(hasSysResource func() bool, own func() int) OOMLimit {
	return OOMLimit{CanLower: hasSysResource(), Own: own()}
}

// hasSysResource reports whether the calling process holds CAP_SYS_RESOURCE in the initial user
// namespace, the one the kernel's oom_score_adj check asks about.
func hasSysResource() bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	if data[unix.CAP_SYS_RESOURCE/32].Effective&(1<<(unix.CAP_SYS_RESOURCE%32)) == 0 {
		return false
	}
	return inInitialUserNS()
}

// inInitialUserNS: the initial user namespace maps every uid onto itself.
func inInitialUserNS() bool {
	data, err := os.ReadFile("/proc/self/uid_map")
	if err != nil {
		return false
	}
	return strings.Join(strings.Fields(string(data)), " ") == "0 0 4294967295"
}

func ownOOMScoreAdj() int {
	data, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		return 0
	}
	v, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return v
}
