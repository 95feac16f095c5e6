package oci

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// FuzzContainerSpec feeds ContainerSpec random CreateContainer configs (random bytes decoded as
// the protobuf the kubelet sends): it must not panic, and every refusal is the request's fault
// (an error the CRI server returns as invalid argument), never a crash of the runtime. Paths on the host the request names are
// moved below a temporary directory first: ContainerSpec creates missing mount sources, and a
// fuzzer must not create directories all over the machine.
func FuzzContainerSpec(f *testing.F) {
	seeds := []*runtimeapi.ContainerConfig{
		{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Command: []string{"sh"}},
		{
			Metadata: &runtimeapi.ContainerMetadata{Name: "web", Attempt: 1}, Image: &runtimeapi.ImageSpec{Image: "busybox"},
			Args: []string{"-c", "true"}, WorkingDir: "/w", Envs: []*runtimeapi.KeyValue{{Key: "A", Value: []byte("b")}},
			Mounts: []*runtimeapi.Mount{
				{ContainerPath: "/data", HostPath: "/data", Readonly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER},
				{ContainerPath: "/img", Image: &runtimeapi.ImageSpec{Image: "x"}, Readonly: true, ImageSubPath: "a/../b"},
			},
			Devices:     []*runtimeapi.Device{{HostPath: "/dev/null", ContainerPath: "/dev/n", Permissions: "r"}},
			Annotations: map[string]string{"k": "v"},
			Linux: &runtimeapi.LinuxContainerConfig{
				Resources: &runtimeapi.LinuxContainerResources{CpuShares: 2, CpuQuota: -1, MemoryLimitInBytes: 1 << 20, OomScoreAdj: -997,
					HugepageLimits: []*runtimeapi.HugepageLimit{{PageSize: "2MB", Limit: 1}}, Unified: map[string]string{"pids.max": "10"}},
				SecurityContext: &runtimeapi.LinuxContainerSecurityContext{
					Capabilities: &runtimeapi.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"KILL"}},
					RunAsUser:    &runtimeapi.Int64Value{Value: 1000}, RunAsGroup: &runtimeapi.Int64Value{Value: 1000},
					SupplementalGroups: []int64{5}, Seccomp: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/p.json"},
					NamespaceOptions: &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_TARGET, TargetId: "t"},
					MaskedPaths:      []string{"/proc/x"},
				},
			},
		},
		{Metadata: &runtimeapi.ContainerMetadata{Name: "u"}, Command: []string{"sh"},
			Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "www-data", Privileged: true}}},
	}
	for _, s := range seeds {
		data, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	rootfs := f.TempDir() // with the user databases setUser reads
	os.MkdirAll(filepath.Join(rootfs, "etc"), 0o755)
	os.WriteFile(filepath.Join(rootfs, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33::/var/www:/bin/false\n"), 0o644)
	os.WriteFile(filepath.Join(rootfs, "etc/group"), []byte("root:x:0:\nwww-data:x:33:\n"), 0o644)
	hostDir := f.TempDir()
	os.WriteFile(filepath.Join(hostDir, "p.json"), []byte(`{"defaultAction":"SCMP_ACT_ALLOW"}`), 0o644)
	volume := f.TempDir()
	pod := &runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "ns", Uid: "u"}}
	f.Fuzz(func(t *testing.T, data []byte) {
		var c runtimeapi.ContainerConfig
		if err := proto.Unmarshal(data, &c); err != nil {
			return
		}
		for _, m := range c.Mounts {
			if m != nil && m.HostPath != "" {
				m.HostPath = filepath.Join(hostDir, filepath.Clean("/"+m.HostPath))
			}
		}
		if sc := c.GetLinux().GetSecurityContext(); sc != nil {
			if sc.Seccomp != nil && sc.Seccomp.LocalhostRef != "" {
				sc.Seccomp.LocalhostRef = filepath.Join(hostDir, filepath.Clean("/"+sc.Seccomp.LocalhostRef))
			}
			if p, ok := strings.CutPrefix(sc.SeccompProfilePath, "localhost/"); ok {
				sc.SeccompProfilePath = "localhost/" + filepath.Join(hostDir, filepath.Clean("/"+p))
			}
		}
		s, err := ContainerSpec(pod, &c, ContainerInput{
			Rootfs: rootfs, PodNamespaces: "/run/ingot/podns/p", TargetPid: 1, CgroupsPath: "/ingot.pods/p/c",
			BoundingSet: DefaultCapabilities(), ImageVolumes: map[string]string{"/img": volume},
			Host: Host{CgroupV2: true, OOM: OOMLimit{CanLower: true}},
		})
		if err != nil {
			return
		}
		if s.Process == nil || len(s.Process.Args) == 0 || s.Root.Path != rootfs {
			t.Fatalf("spec without a process or with another root: %+v", s)
		}
		for _, m := range s.Mounts {
			if !filepath.IsAbs(m.Destination) {
				t.Fatalf("mount destination %q is not absolute", m.Destination)
			}
		}
	})
}
