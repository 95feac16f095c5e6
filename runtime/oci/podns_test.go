package oci

import (
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// TestContainersJoinPinnedNamespaces checks that a container joins its pod's namespaces through
// the files pinned when pause started, never through /proc/<pause pid>/ns, which names whatever
// process has that pid once pause is gone.
func TestContainersJoinPinnedNamespaces(t *testing.T) {
	userns := &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD,
		Uids: []*runtimeapi.IDMapping{{HostId: 100000, Length: 65536}}, Gids: []*runtimeapi.IDMapping{{HostId: 100000, Length: 65536}}}
	pod := func(o *runtimeapi.NamespaceOption) *runtimeapi.PodSandboxConfig {
		return &runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: o}}}
	}
	joined := func(s *specs.Spec) []string {
		var out []string
		for _, n := range s.Linux.Namespaces {
			if n.Path != "" {
				out = append(out, string(n.Type)+"="+n.Path)
			}
		}
		return out
	}
	const dir = "/run/ingot/podns/p"
	for _, tc := range []struct {
		name     string
		pod      *runtimeapi.PodSandboxConfig
		ctrPid   runtimeapi.NamespaceMode
		want     []string
		noPinDir bool
		wantErr  string
	}{
		{name: "user namespace and shared pid", pod: pod(&runtimeapi.NamespaceOption{UsernsOptions: userns}), ctrPid: runtimeapi.NamespaceMode_POD,
			want: []string{"user=" + dir + "/user", "network=" + dir + "/net", "uts=" + dir + "/uts", "ipc=" + dir + "/ipc", "pid=" + dir + "/pid"}},
		{name: "default pod", pod: pod(nil), ctrPid: runtimeapi.NamespaceMode_CONTAINER,
			want: []string{"network=" + dir + "/net", "uts=" + dir + "/uts", "ipc=" + dir + "/ipc"}},
		{name: "host network and ipc", pod: pod(&runtimeapi.NamespaceOption{Network: runtimeapi.NamespaceMode_NODE, Ipc: runtimeapi.NamespaceMode_NODE}),
			ctrPid: runtimeapi.NamespaceMode_CONTAINER, want: nil},
		{name: "nothing pinned", pod: pod(nil), noPinDir: true, wantErr: "container c: the pod's namespaces are not pinned"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Command: []string{"sh"},
				Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
					NamespaceOptions: &runtimeapi.NamespaceOption{Pid: tc.ctrPid}}}}
			in := ContainerInput{Rootfs: t.TempDir(), PodNamespaces: dir}
			if tc.noPinDir {
				in.PodNamespaces = ""
			}
			s, err := ContainerSpec(tc.pod, cfg, in)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := joined(s)
			if !slices.Equal(got, tc.want) {
				t.Errorf("joined namespaces %v, want %v", got, tc.want)
			}
			for _, j := range got {
				if strings.Contains(j, "/proc/") {
					t.Errorf("joins %s through /proc", j)
				}
			}
		})
	}
}
