package oci

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// BoundingSet returns the capabilities in the calling process's bounding set, in kernel order.
// A container cannot hold more than its runtime has: on hosts (and in sandboxes) that drop some
// capability, CAP_SYS_RESOURCE for one, "privileged" and "ALL" mean what the runtime holds.
func BoundingSet() ([]string, error) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, fmt.Errorf("read the runtime's capability bounding set: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				return nil, fmt.Errorf("capability bounding set %q: %w", strings.TrimSpace(v), err)
			}
			return capsOfMask(mask), nil
		}
	}
	return nil, fmt.Errorf("no CapBnd line in /proc/self/status")
}

// capsOfMask names the capabilities of a kernel capability mask (bit n is capability n, in the
// order of allCapabilities).
func capsOfMask(mask uint64) []string {
	var out []string
	for i, c := range allCapabilities() {
		if mask&(1<<uint(i)) != 0 {
			out = append(out, c)
		}
	}
	return out
}
