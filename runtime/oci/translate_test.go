package oci

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// imageRootfs is a rootfs holding only the image's user databases, as ContainerSpec reads them.
func imageRootfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\ndefault-user:x:1000:1000::/home/default-user:/bin/sh\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte("root:x:0:\nwww-data:x:33:\ndefault-user:x:1000:\nin-image:x:50000:default-user\n"), 0o644)
	return root
}

func TestContainerSpec(t *testing.T) {
	rootfs := imageRootfs(t)
	bounding := []string{"CAP_CHOWN", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"} // no CAP_SYS_RESOURCE
	hostDir := t.TempDir()
	volume := t.TempDir()
	os.MkdirAll(filepath.Join(volume, "etc"), 0o755)
	seccompFile := filepath.Join(t.TempDir(), "block-chmod.json")
	os.WriteFile(seccompFile, []byte(`{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["chmod","fchmodat"],"action":"SCMP_ACT_ERRNO"}]}`), 0o644)

	sc := func(f func(*runtimeapi.LinuxContainerSecurityContext)) *runtimeapi.ContainerConfig {
		s := &runtimeapi.LinuxContainerSecurityContext{}
		f(s)
		return &runtimeapi.ContainerConfig{Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: s}}
	}
	withMounts := func(m ...*runtimeapi.Mount) *runtimeapi.ContainerConfig {
		return &runtimeapi.ContainerConfig{Mounts: m}
	}
	imageVolume := func(f func(*runtimeapi.Mount)) *runtimeapi.ContainerConfig {
		m := &runtimeapi.Mount{ContainerPath: "/mnt/image", Readonly: true, Image: &runtimeapi.ImageSpec{Image: "sha256:abc"}}
		f(m)
		return withMounts(m)
	}
	mountOf := func(s *specs.Spec, dst string) *specs.Mount {
		for i := range s.Mounts {
			if s.Mounts[i].Destination == dst {
				return &s.Mounts[i]
			}
		}
		return nil
	}

	for _, tc := range []struct {
		name    string
		cfg     *runtimeapi.ContainerConfig
		wantErr string
		check   func(t *testing.T, s *specs.Spec)
	}{
		{name: "privileged gets the runtime's bounding set and no seccomp", cfg: sc(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.Privileged = true
			s.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}
		}), check: func(t *testing.T, s *specs.Spec) {
			if !slices.Equal(s.Process.Capabilities.Bounding, bounding) {
				t.Errorf("bounding %v, want %v", s.Process.Capabilities.Bounding, bounding)
			}
			if s.Linux.Seccomp != nil || s.Linux.MaskedPaths != nil {
				t.Errorf("seccomp %v, masked %v: want neither", s.Linux.Seccomp, s.Linux.MaskedPaths)
			}
		}},
		{name: "ALL adds what the runtime holds", cfg: sc(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"ALL"}, DropCapabilities: []string{"KILL"}}
		}), check: func(t *testing.T, s *specs.Spec) {
			got := s.Process.Capabilities.Effective
			if !slices.Contains(got, "CAP_SYS_ADMIN") || slices.Contains(got, "CAP_KILL") || slices.Contains(got, "CAP_SYS_RESOURCE") {
				t.Errorf("capabilities %v", got)
			}
		}},
		{name: "a capability the runtime lacks", cfg: sc(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.Capabilities = &runtimeapi.Capability{AddCapabilities: []string{"SYS_RESOURCE"}}
		}), wantErr: "CAP_SYS_RESOURCE: not held by the runtime"},
		{name: "no seccomp profile is unconfined", cfg: sc(func(s *runtimeapi.LinuxContainerSecurityContext) {}),
			check: func(t *testing.T, s *specs.Spec) {
				if s.Linux.Seccomp != nil {
					t.Errorf("seccomp %+v, want none", s.Linux.Seccomp)
				}
			}},
		{name: "RuntimeDefault", cfg: sc(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.Seccomp = &runtimeapi.SecurityProfile{}
		}), check: func(t *testing.T, s *specs.Spec) {
			if s.Linux.Seccomp == nil || verdict(t, s.Linux.Seccomp, "mount") != "EPERM" || verdict(t, s.Linux.Seccomp, "read") != "allow" {
				t.Errorf("seccomp %+v: want the default profile", s.Linux.Seccomp)
			}
		}},
		{name: "localhost profile", cfg: sc(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: seccompFile}
		}), check: func(t *testing.T, s *specs.Spec) {
			if !denies(s.Linux.Seccomp, "fchmodat") || denies(s.Linux.Seccomp, "mount") {
				t.Errorf("seccomp %+v: want the file's profile", s.Linux.Seccomp)
			}
		}},
		{name: "deprecated profile path", cfg: sc(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.SeccompProfilePath = "localhost/" + seccompFile
		}), check: func(t *testing.T, s *specs.Spec) {
			if !denies(s.Linux.Seccomp, "chmod") {
				t.Errorf("seccomp %+v: want the file's profile", s.Linux.Seccomp)
			}
		}},
		{name: "missing localhost profile", cfg: sc(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.Seccomp = &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "/nonexistent.json"}
		}), wantErr: "seccomp localhost profile"},
		{name: "run_as_group needs a user", cfg: sc(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.RunAsGroup = &runtimeapi.Int64Value{Value: 1002}
		}), wantErr: "without run_as_user"},
		{name: "image groups merged by default", cfg: sc(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.RunAsUser = &runtimeapi.Int64Value{Value: 1000}
			s.SupplementalGroups = []int64{1234}
		}), check: func(t *testing.T, s *specs.Spec) {
			if u := s.Process.User; u.UID != 1000 || u.GID != 1000 || !slices.Equal(u.AdditionalGids, []uint32{50000, 1234}) {
				t.Errorf("user %+v", u)
			}
		}},
		{name: "strict supplemental groups", cfg: sc(func(s *runtimeapi.LinuxContainerSecurityContext) {
			s.RunAsUser = &runtimeapi.Int64Value{Value: 1000}
			s.SupplementalGroups = []int64{1234}
			s.SupplementalGroupsPolicy = runtimeapi.SupplementalGroupsPolicy_Strict
		}), check: func(t *testing.T, s *specs.Spec) {
			if u := s.Process.User; !slices.Equal(u.AdditionalGids, []uint32{1234}) {
				t.Errorf("user %+v", u)
			}
		}},
		{name: "bidirectional mount makes the root rshared", cfg: withMounts(&runtimeapi.Mount{HostPath: hostDir, ContainerPath: "/data",
			Propagation: runtimeapi.MountPropagation_PROPAGATION_BIDIRECTIONAL}),
			check: func(t *testing.T, s *specs.Spec) {
				m := mountOf(s, "/data")
				if s.Linux.RootfsPropagation != "rshared" || m == nil || !slices.Contains(m.Options, "rshared") {
					t.Errorf("root propagation %q, mount %+v", s.Linux.RootfsPropagation, m)
				}
			}},
		{name: "host-to-container mount makes the root rslave", cfg: withMounts(&runtimeapi.Mount{HostPath: hostDir, ContainerPath: "/data",
			Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}),
			check: func(t *testing.T, s *specs.Spec) {
				if s.Linux.RootfsPropagation != "rslave" {
					t.Errorf("root propagation %q", s.Linux.RootfsPropagation)
				}
			}},
		{name: "recursive read-only", cfg: withMounts(&runtimeapi.Mount{HostPath: hostDir, ContainerPath: "/ro", Readonly: true, RecursiveReadOnly: true}),
			check: func(t *testing.T, s *specs.Spec) {
				if m := mountOf(s, "/ro"); m == nil || !slices.Contains(m.Options, "rro") || !slices.Contains(m.Options, "ro") {
					t.Errorf("mount %+v", m)
				}
			}},
		{name: "recursive read-only needs read-only", cfg: withMounts(&runtimeapi.Mount{HostPath: hostDir, ContainerPath: "/ro", RecursiveReadOnly: true}),
			wantErr: "needs read-only"},
		{name: "recursive read-only needs private propagation", cfg: withMounts(&runtimeapi.Mount{HostPath: hostDir, ContainerPath: "/ro", Readonly: true,
			RecursiveReadOnly: true, Propagation: runtimeapi.MountPropagation_PROPAGATION_HOST_TO_CONTAINER}),
			wantErr: "needs private propagation"},
		{name: "image volume", cfg: imageVolume(func(*runtimeapi.Mount) {}), check: func(t *testing.T, s *specs.Spec) {
			if m := mountOf(s, "/mnt/image"); m == nil || m.Source != volume || !slices.Contains(m.Options, "ro") {
				t.Errorf("mount %+v", m)
			}
		}},
		{name: "image volume sub-path", cfg: imageVolume(func(m *runtimeapi.Mount) { m.ImageSubPath = "etc" }), check: func(t *testing.T, s *specs.Spec) {
			if m := mountOf(s, "/mnt/image"); m == nil || m.Source != filepath.Join(volume, "etc") {
				t.Errorf("mount %+v", m)
			}
		}},
		{name: "image volume sub-path missing", cfg: imageVolume(func(m *runtimeapi.Mount) { m.ImageSubPath = "nope" }), wantErr: `sub-path "nope"`},
		{name: "writable image volume", cfg: imageVolume(func(m *runtimeapi.Mount) { m.Readonly = false }), wantErr: "must be read-only"},
		{name: "image volume not mounted", cfg: imageVolume(func(m *runtimeapi.Mount) { m.ContainerPath = "/elsewhere" }), wantErr: "is not mounted"},
		{name: "memory and swap", cfg: &runtimeapi.ContainerConfig{Linux: &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{
			MemoryLimitInBytes: 15 << 20, MemorySwapLimitInBytes: 15 << 20}}},
			check: func(t *testing.T, s *specs.Spec) {
				m := s.Linux.Resources.Memory
				if m == nil || *m.Limit != 15<<20 || m.Swap == nil || *m.Swap != 15<<20 {
					t.Errorf("memory %+v", m)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Metadata = &runtimeapi.ContainerMetadata{Name: "c"}
			cfg.Command = []string{"sh"}
			s, err := ContainerSpec(&runtimeapi.PodSandboxConfig{}, cfg, ContainerInput{
				Rootfs: rootfs, PodNamespaces: "/run/ingot/podns/p", BoundingSet: bounding, ImageVolumes: map[string]string{"/mnt/image": volume}})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, s)
		})
	}
}

// denies reports whether the profile refuses name outright (no argument conditions).
func denies(s *specs.LinuxSeccomp, name string) bool {
	if s == nil {
		return false
	}
	for _, sc := range s.Syscalls {
		if sc.Action == specs.ActErrno && len(sc.Args) == 0 && slices.Contains(sc.Names, name) {
			return true
		}
	}
	return false
}

func TestCapsOfMask(t *testing.T) {
	// 0x1fffeffffff: every capability up to CAP_CHECKPOINT_RESTORE but CAP_SYS_RESOURCE (24).
	got := capsOfMask(0x1fffeffffff)
	if len(got) != 40 || slices.Contains(got, "CAP_SYS_RESOURCE") || got[0] != "CAP_CHOWN" || got[39] != "CAP_CHECKPOINT_RESTORE" {
		t.Errorf("capsOfMask = %v", got)
	}
	if got := capsOfMask(1<<21 | 1<<0); !slices.Equal(got, []string{"CAP_CHOWN", "CAP_SYS_ADMIN"}) {
		t.Errorf("capsOfMask = %v", got)
	}
}

func TestUserNamespace(t *testing.T) {
	m := func(ctr, host, n uint32) *runtimeapi.IDMapping {
		return &runtimeapi.IDMapping{ContainerId: ctr, HostId: host, Length: n}
	}
	for _, tc := range []struct {
		name    string
		in      *runtimeapi.UserNamespace
		want    []specs.LinuxIDMapping
		wantErr string
	}{
		{name: "unset is the node's", in: nil},
		{name: "node", in: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_NODE}},
		{name: "pod", in: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD,
			Uids: []*runtimeapi.IDMapping{m(0, 1000, 100000)}, Gids: []*runtimeapi.IDMapping{m(0, 1000, 100000)}},
			want: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 100000}}},
		{name: "two mappings", in: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD,
			Uids: []*runtimeapi.IDMapping{m(0, 1000, 10), m(0, 2000, 10)}, Gids: []*runtimeapi.IDMapping{m(0, 1000, 10)}},
			wantErr: "2 uid mappings"},
		{name: "0 not mapped", in: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD,
			Uids: []*runtimeapi.IDMapping{m(1, 1000, 10)}, Gids: []*runtimeapi.IDMapping{m(0, 1000, 10)}},
			wantErr: "must start at container ID 0"},
		{name: "no gid mapping", in: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD,
			Uids: []*runtimeapi.IDMapping{m(0, 1000, 10)}},
			wantErr: "0 gid mappings"},
		{name: "container", in: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_CONTAINER}, wantErr: "only POD and NODE"},
		{name: "target", in: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_TARGET}, wantErr: "only POD and NODE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uids, gids, err := UserNamespace(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(uids, tc.want) || !slices.Equal(gids, tc.want) {
				t.Errorf("mappings %v %v, want %v", uids, gids, tc.want)
			}
		})
	}
}

func TestSandboxSpecUserNamespace(t *testing.T) {
	cfg := &runtimeapi.PodSandboxConfig{Linux: &runtimeapi.LinuxPodSandboxConfig{SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
		NamespaceOptions: &runtimeapi.NamespaceOption{UsernsOptions: &runtimeapi.UserNamespace{Mode: runtimeapi.NamespaceMode_POD,
			Uids: []*runtimeapi.IDMapping{{HostId: 1000, Length: 65536}}, Gids: []*runtimeapi.IDMapping{{HostId: 1000, Length: 65536}}}}}}}
	s, err := SandboxSpec(cfg, "/pause-root", "/ingot.pods/p/p", "/run/ingot/netns/p")
	if err != nil {
		t.Fatal(err)
	}
	if s.Linux.Namespaces[0].Type != specs.UserNamespace || s.Linux.Namespaces[0].Path != "" || len(s.Linux.UIDMappings) != 1 {
		t.Errorf("namespaces %v, uid mappings %v: want a new user namespace first", s.Linux.Namespaces, s.Linux.UIDMappings)
	}
	for _, n := range s.Linux.Namespaces {
		if n.Type == specs.NetworkNamespace && n.Path != "/run/ingot/netns/p" {
			t.Errorf("network namespace %+v: want the pinned pod network namespace", n)
		}
	}
	c, err := ContainerSpec(cfg, &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Command: []string{"sh"}},
		ContainerInput{Rootfs: t.TempDir(), PodNamespaces: "/run/ingot/podns/p"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Linux.Namespaces[0] != (specs.LinuxNamespace{Type: specs.UserNamespace, Path: "/run/ingot/podns/p/user"}) {
		t.Errorf("container namespaces %v: want the pod's pinned user namespace", c.Linux.Namespaces)
	}
}
