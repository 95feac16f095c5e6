package oci

import (
	"slices"
	"strings"
	"testing"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestCapabilitiesAddDrop checks the capability sets a container ends up with for the add/drop
// combinations pods use, applied as containerd applies them: "ALL" first (add ALL grants the
// runtime's bounding set, drop ALL empties the set), then the named additions, then the named
// drops.
func TestCapabilitiesAddDrop(t *testing.T) {
	bounding := []string{"CAP_CHOWN", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"}
	for _, tc := range []struct {
		name       string
		add, drop  []string
		want       []string
		wantErrSub string
	}{
		{name: "no change keeps the defaults the runtime holds", want: []string{"CAP_CHOWN", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_NET_BIND_SERVICE"}},
		{name: "drop ALL, add one", drop: []string{"ALL"}, add: []string{"NET_BIND_SERVICE"}, want: []string{"CAP_NET_BIND_SERVICE"}},
		{name: "drop all in lower case, add with prefix", drop: []string{"all"}, add: []string{"cap_net_bind_service"}, want: []string{"CAP_NET_BIND_SERVICE"}},
		{name: "drop ALL", drop: []string{"ALL"}, want: nil},
		{name: "add ALL, drop one", add: []string{"ALL"}, drop: []string{"KILL"},
			want: []string{"CAP_CHOWN", "CAP_SETGID", "CAP_SETUID", "CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"}},
		{name: "add ALL, drop ALL, add one", add: []string{"ALL", "NET_ADMIN"}, drop: []string{"ALL"}, want: []string{"CAP_NET_ADMIN"}},
		{name: "added and dropped: the drop wins", add: []string{"NET_ADMIN"}, drop: []string{"NET_ADMIN", "KILL"},
			want: []string{"CAP_CHOWN", "CAP_SETGID", "CAP_SETUID", "CAP_NET_BIND_SERVICE"}},
		{name: "drop ALL, add one the runtime lacks", drop: []string{"ALL"}, add: []string{"SYS_TIME"}, wantErrSub: "capability CAP_SYS_TIME: not held by the runtime"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &runtimeapi.ContainerConfig{
				Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Command: []string{"sh"},
				Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
					Capabilities: &runtimeapi.Capability{AddCapabilities: tc.add, DropCapabilities: tc.drop}}},
			}
			s, err := ContainerSpec(&runtimeapi.PodSandboxConfig{}, cfg, ContainerInput{Rootfs: t.TempDir(), PodNamespaces: "/run/ingot/podns/p", BoundingSet: bounding})
			if tc.wantErrSub != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrSub) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErrSub)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			c := s.Process.Capabilities
			for set, got := range map[string][]string{"bounding": c.Bounding, "effective": c.Effective, "permitted": c.Permitted} {
				if !slices.Equal(got, tc.want) {
					t.Errorf("%s set %v, want %v", set, got, tc.want)
				}
			}
		})
	}
}
