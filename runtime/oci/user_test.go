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

// hostileRootfs is an image whose user databases hold entries named like numbers, and entries
// with ids no process can have, each mapping to root: a runtime that looks a signed or
// out-of-range "uid" up as a name, or trusts the ids in the files, runs the container as root.
func hostileRootfs(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc"), 0o755)
	passwd := "root:x:0:0:root:/root:/bin/sh\n" +
		"-1:x:0:0::/:/bin/sh\n" +
		"+1000:x:0:0::/:/bin/sh\n" +
		"4294967296:x:0:0::/:/bin/sh\n" +
		"wraps:x:4294967295:4294967295::/:/bin/sh\n" +
		"negative:x:-1:-1::/:/bin/sh\n" +
		"app:x:1000:1000::/home/app:/bin/sh\n"
	group := "root:x:0:\n-1:x:0:\n+7:x:0:\nwraps:x:4294967295:\napp:x:1000:\nextra:x:-5:app\n"
	os.WriteFile(filepath.Join(root, "etc/passwd"), []byte(passwd), 0o644)
	os.WriteFile(filepath.Join(root, "etc/group"), []byte(group), 0o644)
	return root
}

// TestUserIDsInRange checks that uids and gids from every source — the security context, the
// image's User, the image's /etc/passwd and /etc/group — are 0..2^32-2, and that a user or group
// that looks numeric is never looked up as a name.
func TestUserIDsInRange(t *testing.T) {
	rootfs := hostileRootfs(t)
	i64 := func(v int64) *runtimeapi.Int64Value { return &runtimeapi.Int64Value{Value: v} }
	for _, tc := range []struct {
		name      string
		imageUser string
		sc        *runtimeapi.LinuxContainerSecurityContext
		want      specs.User
		wantErr   string
	}{
		{name: "run_as_user -1", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(-1)},
			wantErr: "run_as_user -1: a uid must be between 0 and 4294967294"},
		{name: "run_as_user 2^32-1", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1<<32 - 1)},
			wantErr: "run_as_user 4294967295: a uid must be between 0 and 4294967294"},
		{name: "run_as_user 2^32", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1 << 32)},
			wantErr: "run_as_user 4294967296: a uid must be between 0 and 4294967294"},
		{name: "run_as_group -1", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1000), RunAsGroup: i64(-1)},
			wantErr: "run_as_group -1: a gid must be between 0 and 4294967294"},
		{name: "supplemental group -1", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1000), SupplementalGroups: []int64{5, -1}},
			wantErr: "supplemental group -1: a gid must be between 0 and 4294967294"},
		{name: "image user -1", imageUser: "-1",
			wantErr: `user "-1": not a uid between 0 and 4294967294, and not a name`},
		{name: "image user +1000", imageUser: "+1000",
			wantErr: `user "+1000": not a uid between 0 and 4294967294, and not a name`},
		{name: "image user 2^32", imageUser: "4294967296",
			wantErr: `user "4294967296": not a uid between 0 and 4294967294, and not a name`},
		{name: "run_as_username -1", imageUser: "app", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUsername: "-1"},
			wantErr: `user "-1": not a uid between 0 and 4294967294, and not a name`},
		{name: "image group -1", imageUser: "1000:-1",
			wantErr: `group "-1": not a gid between 0 and 4294967294, and not a name`},
		{name: "image group +7", imageUser: "app:+7",
			wantErr: `group "+7": not a gid between 0 and 4294967294, and not a name`},
		{name: "passwd entry with uid 2^32-1", imageUser: "wraps",
			wantErr: `user "wraps" not found in the image's /etc/passwd`},
		{name: "passwd entry with uid -1", imageUser: "negative",
			wantErr: `user "negative" not found in the image's /etc/passwd`},
		{name: "group entry with gid 2^32-1", imageUser: "app:wraps",
			wantErr: `group "wraps" not found in the image's /etc/group`},
		{name: "name from passwd, bad group entry ignored", imageUser: "app",
			want: specs.User{UID: 1000, GID: 1000}},
		{name: "largest uid and gid", sc: &runtimeapi.LinuxContainerSecurityContext{RunAsUser: i64(1<<32 - 2), RunAsGroup: i64(1<<32 - 2)},
			want: specs.User{UID: 1<<32 - 2, GID: 1<<32 - 2}},
		{name: "numeric image user with leading zeros", imageUser: "01000",
			want: specs.User{UID: 1000, GID: 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &runtimeapi.ContainerConfig{Metadata: &runtimeapi.ContainerMetadata{Name: "c"}, Command: []string{"sh"},
				Linux: &runtimeapi.LinuxContainerConfig{SecurityContext: tc.sc}}
			s, err := ContainerSpec(&runtimeapi.PodSandboxConfig{}, cfg, ContainerInput{
				Rootfs: rootfs, Image: ImageConfig{User: tc.imageUser}, PodNamespaces: "/run/ingot/podns/p", BoundingSet: DefaultCapabilities()})
			if tc.wantErr != "" {
				if err == nil {
					t.Fatalf("user %+v, want the error %q", s.Process.User, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantErr) || !strings.HasPrefix(err.Error(), "container c: ") {
					t.Fatalf("err %q, want one naming the container and containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			u := s.Process.User
			if u.UID != tc.want.UID || u.GID != tc.want.GID || !slices.Equal(u.AdditionalGids, tc.want.AdditionalGids) {
				t.Errorf("user %+v, want %+v", u, tc.want)
			}
		})
	}
}
