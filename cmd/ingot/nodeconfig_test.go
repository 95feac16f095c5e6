package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"ingot.dev/ingot/image/configdrive"
)

// TestNodeConfigCLI runs the real CLI: `ingot node-config validate` prints one line naming
// file:line:key for each bad input and exits 1; `ingot node-config drive` writes an image that
// reads back (without mounting) as the same node.toml on a volume labelled INGOT-CONFIG.
func TestNodeConfigCLI(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "ingot")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build ingot: %v\n%s", err, out)
	}
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	run := func(args ...string) (stdout, stderr string, code int) {
		cmd := exec.Command(bin, args...)
		var o, e strings.Builder
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return o.String(), e.String(), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return o.String(), e.String(), 0
	}

	for _, tc := range []struct{ name, doc, want string }{
		{"unknown key", "hostname = \"a\"\n[node]\nlabel = {}\n", `unknown.toml:3: node: unknown key "label"`},
		{"wrong type", "hostname = \"a\"\nntp = 123\n", `wrong.toml:2: ntp: wrong type: want array of strings, got integer`},
		{"bad CA PEM", "[kubernetes]\nca = \"not a certificate\"\n", `ca.toml:2: kubernetes.ca: not PEM: want one or more -----BEGIN CERTIFICATE----- blocks`},
		{"non-https URL", "[kubernetes]\napi_server = \"http://k8s:6443\"\n", `url.toml:2: kubernetes.api_server: invalid URL "http://k8s:6443": want an https:// URL`},
		{"hostname with capitals", "\n\nhostname = \"Node-1\"\n", `host.toml:3: hostname: invalid value "Node-1"`},
		{"bad taint effect", "[node]\ntaints = [\"gpu=yes:NoSchedul\"]\n", `taint.toml:2: node.taints[0]: invalid taint "gpu=yes:NoSchedul": unknown effect "NoSchedul"`},
		{"token and kubeconfig", "[kubernetes]\nbootstrap_token = \"abcdef.0123456789abcdef\"\nkubeconfig = \"x\"\n", `both.toml:3: kubernetes.kubeconfig: set either bootstrap_token or kubeconfig, not both`},
		{"malformed bootstrap token", "[kubernetes]\nbootstrap_token = \"abc.def\"\n", `token.toml:2: kubernetes.bootstrap_token: malformed bootstrap token`},
	} {
		t.Run("validate "+tc.name, func(t *testing.T) {
			file := write(strings.SplitN(tc.want, ":", 2)[0], tc.doc)
			stdout, stderr, code := run("node-config", "validate", file)
			if code != 1 {
				t.Fatalf("exit %d, want 1; stdout %q stderr %q", code, stdout, stderr)
			}
			want := "ingot: " + dir + string(filepath.Separator) + tc.want
			if lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], want) {
				t.Errorf("stderr %q, want one line starting %q", stderr, want)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}

	good := write("node.toml", "hostname = \"worker-1\"\nntp = [\"pool.ntp.org\"]\n\n[node]\nlabels = { role = \"worker\" }\n")
	t.Run("validate good", func(t *testing.T) {
		stdout, stderr, code := run("node-config", "validate", good)
		if code != 0 || stdout != good+": ok\n" || stderr != "" {
			t.Errorf("exit %d, stdout %q, stderr %q; want 0, %q, nothing", code, stdout, stderr, good+": ok\n")
		}
	})
	for _, f := range []string{"vfat", "iso"} {
		t.Run("drive "+f, func(t *testing.T) {
			img := filepath.Join(dir, f+".img")
			if _, stderr, code := run("node-config", "drive", good, "--out", img, "--format", f); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			label, data, err := configdrive.Read(img)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(good)
			if !bytes.Equal(data, want) {
				t.Errorf("node.toml on the drive is %q, want %q", data, want)
			}
			// A FAT label holds 11 characters.
			if wantLabel := map[string]string{"vfat": "INGOT-CONFI", "iso": "INGOT-CONFIG"}[f]; label != wantLabel {
				t.Errorf("label %q, want %q", label, wantLabel)
			}
		})
	}
	t.Run("drive of a bad file", func(t *testing.T) {
		img := filepath.Join(dir, "bad.img")
		_, stderr, code := run("node-config", "drive", filepath.Join(dir, "url.toml"), "--out", img)
		if code != 1 || !strings.Contains(stderr, "url.toml:2: kubernetes.api_server") {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
		if _, err := os.Stat(img); !os.IsNotExist(err) {
			t.Errorf("image written for a bad file: %v", err)
		}
	})
	t.Run("drive with an unknown format", func(t *testing.T) {
		_, stderr, code := run("node-config", "drive", good, "--out", filepath.Join(dir, "x.img"), "--format", "ext4")
		if code != 1 || stderr != "ingot: node-config drive: unknown --format \"ext4\" (want vfat or iso)\n" {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
}
