package oci

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func lsmContainer(sc *runtimeapi.LinuxContainerSecurityContext) *runtimeapi.ContainerConfig {
	return &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Command: []string{"sh"},
		Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: sc}}
}

// TestMACRefusedWithoutSupport checks that on a host without AppArmor (the zero Host) a request
// for an AppArmor profile other than unconfined, or for SELinux labels, fails naming what was
// asked, instead of running the container unconfined.
func TestMACRefusedWithoutSupport(t *testing.T) {
	localhost := &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: "localhost/k8s-deny-write"}
	for _, tc := range []struct {
		name    string
		sc      *runtimeapi.LinuxContainerSecurityContext
		wantErr string // "": accepted
	}{
		{name: "RuntimeDefault", sc: &runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}},
			wantErr: `container c: AppArmor profile "runtime/default": AppArmor is not enabled on this host`},
		{name: "Localhost", sc: &runtimeapi.LinuxContainerSecurityContext{Apparmor: localhost},
			wantErr: `container c: AppArmor profile "localhost/k8s-deny-write": AppArmor is not enabled on this host`},
		{name: "Localhost, privileged", sc: &runtimeapi.LinuxContainerSecurityContext{Apparmor: localhost, Privileged: true},
			wantErr: `container c: AppArmor profile "localhost/k8s-deny-write": AppArmor is not enabled on this host`},
		{name: "deprecated field", sc: &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "localhost/k8s-deny-write"},
			wantErr: `container c: AppArmor profile "localhost/k8s-deny-write": AppArmor is not enabled on this host`},
		{name: "deprecated field, runtime/default", sc: &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "runtime/default"},
			wantErr: `container c: AppArmor profile "runtime/default": AppArmor is not enabled on this host`},
		{name: "SELinux type", sc: &runtimeapi.LinuxContainerSecurityContext{SelinuxOptions: &runtimeapi.SELinuxOption{Type: "spc_t"}},
			wantErr: `container c: SELinux options (type "spc_t"): ingot applies no SELinux labels`},
		{name: "SELinux level", sc: &runtimeapi.LinuxContainerSecurityContext{SelinuxOptions: &runtimeapi.SELinuxOption{Level: "s0:c1,c2"}},
			wantErr: `container c: SELinux options (level "s0:c1,c2"): ingot applies no SELinux labels`},
		{name: "Unconfined", sc: &runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Unconfined}}},
		{name: "deprecated unconfined", sc: &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "unconfined"}},
		{name: "empty SELinux options", sc: &runtimeapi.LinuxContainerSecurityContext{SelinuxOptions: &runtimeapi.SELinuxOption{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ContainerSpec(&runtimeapi.PodSandboxConfig{}, lsmContainer(tc.sc), ContainerInput{Rootfs: t.TempDir(), PodNamespaces: "/run/ingot/podns/p", BoundingSet: DefaultCapabilities()})
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if s.Process.ApparmorProfile != "" || s.Process.SelinuxLabel != "" {
					t.Errorf("AppArmor profile %q, SELinux label %q: want none", s.Process.ApparmorProfile, s.Process.SelinuxLabel)
				}
				return
			}
			if err == nil {
				t.Fatalf("container created (AppArmor profile %q), want the error %q", s.Process.ApparmorProfile, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err %q, want %q", err, tc.wantErr)
			}
		})
	}
}

// TestAppArmorProfiles checks, on a host with AppArmor, which profile a container runs under:
// a loaded Localhost profile is applied (whichever way the name is spelled, the structured field
// winning over the deprecated one); an unloaded one and the runtime default, which ingot cannot
// load, are refused.
func TestAppArmorProfiles(t *testing.T) {
	profiles := filepath.Join(t.TempDir(), "profiles")
	os.WriteFile(profiles, []byte("cri-validate-apparmor-test-deny-write (enforce)\ncri-validate-apparmor-test-audit-write (complain)\n/usr/bin/man (enforce)\n"), 0o644)
	host := Host{AppArmor: AppArmor{Enabled: true, Profiles: profiles}}
	local := func(ref string) *runtimeapi.SecurityProfile {
		return &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_Localhost, LocalhostRef: ref}
	}
	for _, tc := range []struct {
		name    string
		sc      *runtimeapi.LinuxContainerSecurityContext
		want    string
		wantErr string
	}{
		{name: "localhost/ prefix", sc: &runtimeapi.LinuxContainerSecurityContext{Apparmor: local("localhost/cri-validate-apparmor-test-deny-write")},
			want: "cri-validate-apparmor-test-deny-write"},
		{name: "bare name, as the kubelet sends it", sc: &runtimeapi.LinuxContainerSecurityContext{Apparmor: local("/usr/bin/man")},
			want: "/usr/bin/man"},
		{name: "deprecated field", sc: &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "localhost/cri-validate-apparmor-test-audit-write"},
			want: "cri-validate-apparmor-test-audit-write"},
		{name: "the structured field wins", sc: &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "localhost/non-existent-profile",
			Apparmor: local("localhost/cri-validate-apparmor-test-deny-write")}, want: "cri-validate-apparmor-test-deny-write"},
		{name: "nothing asked", sc: &runtimeapi.LinuxContainerSecurityContext{}, want: ""},
		{name: "unloaded", sc: &runtimeapi.LinuxContainerSecurityContext{Apparmor: local("localhost/non-existent-profile")},
			wantErr: `container c: AppArmor profile "localhost/non-existent-profile" is not loaded on this host`},
		{name: "a prefix of a loaded name", sc: &runtimeapi.LinuxContainerSecurityContext{Apparmor: local("cri-validate")},
			wantErr: `AppArmor profile "localhost/cri-validate" is not loaded on this host`},
		{name: "runtime default", sc: &runtimeapi.LinuxContainerSecurityContext{Apparmor: &runtimeapi.SecurityProfile{ProfileType: runtimeapi.SecurityProfile_RuntimeDefault}},
			wantErr: `container c: AppArmor profile "runtime/default": ingot has no default AppArmor profile`},
		{name: "unknown deprecated value", sc: &runtimeapi.LinuxContainerSecurityContext{ApparmorProfile: "docker-default"},
			wantErr: `AppArmor profile "docker-default": want runtime/default, unconfined or localhost/<name>`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ContainerSpec(&runtimeapi.PodSandboxConfig{}, lsmContainer(tc.sc), ContainerInput{
				Rootfs: t.TempDir(), PodNamespaces: "/run/ingot/podns/p", BoundingSet: DefaultCapabilities(), Host: host})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Process.ApparmorProfile != tc.want {
				t.Errorf("AppArmor profile %q, want %q", s.Process.ApparmorProfile, tc.want)
			}
		})
	}
}

// TestCgroupNamespace checks that on cgroup v2 unprivileged containers get a cgroup namespace of
// their own and privileged ones keep the node's; cgroup v1 hosts keep the node's for all, as
// containerd does.
func TestCgroupNamespace(t *testing.T) {
	for _, tc := range []struct {
		name       string
		v2         bool
		privileged bool
		want       bool
	}{
		{name: "cgroup v2", v2: true, want: true},
		{name: "cgroup v2, privileged", v2: true, privileged: true, want: false},
		{name: "cgroup v1", v2: false, want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ContainerSpec(&runtimeapi.PodSandboxConfig{}, lsmContainer(&runtimeapi.LinuxContainerSecurityContext{Privileged: tc.privileged}),
				ContainerInput{Rootfs: t.TempDir(), PodNamespaces: "/run/ingot/podns/p", BoundingSet: DefaultCapabilities(), Host: Host{CgroupV2: tc.v2}})
			if err != nil {
				t.Fatal(err)
			}
			got := false
			for _, n := range s.Linux.Namespaces {
				if n.Type == specs.CgroupNamespace {
					got = true
					if n.Path != "" {
						t.Errorf("cgroup namespace %+v: want a new one, not one to join", n)
					}
				}
			}
			if got != tc.want {
				t.Errorf("private cgroup namespace %v, want %v (namespaces %v)", got, tc.want, s.Linux.Namespaces)
			}
		})
	}
}
