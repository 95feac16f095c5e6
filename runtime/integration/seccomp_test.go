package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/internal/testgate"
)

// seccompProbe tries, inside a container, a personality(2) call RuntimeDefault refuses
// (ADDR_NO_RANDOMIZE, which no capability guards: only the profile can refuse it) and one it
// allows like containerd (a read-only adjtimex), and prints what happened to each.
const seccompProbe = `linux64 -R true && echo personality=allowed || echo personality=refused
adjtimex >/dev/null && echo adjtimex=allowed || echo adjtimex=refused`

// TestSeccompProfiles runs the probe in busybox containers under RuntimeDefault (asked for, and
// given by config.toml's unset_seccomp_profile to a request that names no profile) and under
// Unconfined, through the real daemon and libseccomp; and a malformed Localhost profile.
func TestSeccompProfiles(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := StartWith(t, func(r *Runtime) {
		f, err := os.OpenFile(r.Config, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString("\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  unset_seccomp_profile = \"runtime/default\"\n"); err != nil {
			t.Fatal(err)
		}
	})
	r.MustCrictl("pull", busybox)
	podCfg := podConfig(t, r, "seccomp")
	pod := r.MustCrictl("runp", podCfg)
	for _, tc := range []struct {
		name    string
		profile map[string]any // the security context's seccomp; nil: none
		want    []string
	}{
		{"unset", nil, []string{"personality=refused", "Operation not permitted", "adjtimex=allowed"}},
		{"runtime-default", map[string]any{"profile_type": 0}, []string{"personality=refused", "Operation not permitted", "adjtimex=allowed"}},
		{"unconfined", map[string]any{"profile_type": 1}, []string{"personality=allowed", "adjtimex=allowed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			linux := map[string]any{}
			if tc.profile != nil {
				linux["security_context"] = map[string]any{"seccomp": tc.profile}
			}
			cfg := writeJSON(t, r.Dir, tc.name+"-ctr.json", map[string]any{
				"metadata": map[string]any{"name": tc.name},
				"image":    map[string]any{"image": busybox},
				"command":  []string{"/bin/sh", "-c", seccompProbe},
				"log_path": tc.name + ".log",
				"linux":    linux,
			})
			ctr := r.MustCrictl("create", pod, cfg, podCfg)
			r.MustCrictl("start", ctr)
			waitFor(t, "the probe to exit", 30*time.Second, func() bool {
				out, _ := r.Crictl("inspect", ctr)
				return strings.Contains(out, "CONTAINER_EXITED")
			})
			data, err := os.ReadFile(filepath.Join(r.Dir, "logs", "seccomp", tc.name+".log"))
			if err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(string(data), w) {
					t.Errorf("the probe's output lacks %q:\n%s", w, data)
				}
			}
		})
	}

	// A Localhost profile libcontainer could not load is refused at CreateContainer, as the
	// request's fault, naming the file and the mistake.
	bad := filepath.Join(r.Dir, "bad-profile.json")
	if err := os.WriteFile(bad, []byte(`{"defaultAction": "SCMP_ACT_DENY"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := writeJSON(t, r.Dir, "bad-profile-ctr.json", map[string]any{
		"metadata": map[string]any{"name": "bad-profile"},
		"image":    map[string]any{"image": busybox},
		"command":  []string{"true"},
		"linux":    map[string]any{"security_context": map[string]any{"seccomp": map[string]any{"profile_type": 2, "localhost_ref": bad}}},
	})
	_, err := r.Crictl("create", pod, cfg, podCfg)
	// crictl quotes the message, escaping the quotes around the action.
	want := "seccomp localhost profile " + bad + `: defaultAction: unknown action \"SCMP_ACT_DENY\"`
	if err == nil || !strings.Contains(err.Error(), "code = InvalidArgument") || !strings.Contains(err.Error(), want) {
		t.Errorf("create with a bad profile: %v\nwant InvalidArgument containing %q", err, want)
	}
}
