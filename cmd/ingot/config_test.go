package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigValidate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.toml", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n  SystemdCgroup = true\n  Colour = \"blue\"\n")
	bad := write("bad.toml", "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  max_container_log_line_size = \"big\"\n")
	cases := []struct {
		name           string
		args           []string
		stdout, stderr []string // lines
		err            string
	}{
		{name: "ok with warnings", args: []string{"validate", good},
			stdout: []string{good + ": ok"},
			stderr: []string{
				"warning: " + good + `:3: plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options.SystemdCgroup: ingot has no systemd: cgroups are managed directly (cgroupfs driver); set cgroupDriver: cgroupfs in the kubelet config`,
				"warning: " + good + `:4: plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options.Colour: unknown key; ignored`,
			}},
		{name: "bad value", args: []string{"validate", bad},
			err: bad + `:3: plugins."io.containerd.grpc.v1.cri".max_container_log_line_size: want an integer, got string`},
		{name: "missing file", args: []string{"validate", filepath.Join(dir, "none.toml")}, err: "no such file"},
		{name: "no file", args: []string{"validate"}, err: "config validate: want one file"},
		{name: "no subcommand", args: nil, err: "config: want validate FILE"},
		{name: "unknown subcommand", args: []string{"check", good}, err: `config: unknown subcommand "check" (want validate)`},
	}
	lines := func(s string) []string {
		if s == "" {
			return nil
		}
		return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			err := runConfig(&stdout, &stderr, c.args)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Errorf("error %v, want one containing %q", err, c.err)
				}
			} else if err != nil {
				t.Errorf("error: %v", err)
			}
			if got := lines(stdout.String()); strings.Join(got, "\n") != strings.Join(c.stdout, "\n") {
				t.Errorf("stdout:\n%s\nwant:\n%s", stdout.String(), strings.Join(c.stdout, "\n"))
			}
			if got := lines(stderr.String()); strings.Join(got, "\n") != strings.Join(c.stderr, "\n") {
				t.Errorf("stderr:\n%s\nwant:\n%s", stderr.String(), strings.Join(c.stderr, "\n"))
			}
		})
	}
}
