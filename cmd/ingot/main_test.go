package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBuildBadInput runs the real CLI and requires each bad input to fail with exit status 1 and
// exactly one line on stderr that names the problem.
func TestBuildBadInput(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "ingot")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build ingot: %v\n%s", err, out)
	}
	fakeNode := filepath.Join(dir, "ingot-node-amd64")
	os.WriteFile(fakeNode, []byte("not used: the build fails first"), 0o755)
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := "name = \"t\"\n[kernel]\nmodules = [\"virtio_blk\"]\n"
	cases := []struct {
		name    string
		args    []string
		want    []string
		network bool // needs the Debian kernel (downloaded once into the cache)
	}{
		{name: "unknown key", args: []string{"--profile", write("unknown.toml", "name = \"t\"\nkernal = {}\n")},
			want: []string{"unknown.toml:2:", `unknown key "kernal"`}},
		{name: "wrong type", args: []string{"--profile", write("type.toml", "name = \"t\"\n\n[kernel]\nmodules = [\"virtio_blk\", 7]\n")},
			want: []string{"type.toml:4:", "kernel.modules", "wrong type"}},
		{name: "missing kernel", args: []string{"--profile", write("good.toml", good), "--kernel", filepath.Join(dir, "no-such-vmlinuz")},
			want: []string{"kernel", "no-such-vmlinuz", "no such file"}},
		{name: "missing kernel package", args: []string{"--profile", write("pkg.toml", "name = \"t\"\n[kernel]\npackage = \"linux-image-does-not-exist-{arch}\"\n")},
			want: []string{`"linux-image-does-not-exist-amd64"`, "does not exist"}, network: true},
		{name: "unknown module", args: []string{"--profile", write("mod.toml", "name = \"t\"\n[kernel]\nmodules = [\"virtio_blk\", \"no_such_module\"]\n")},
			want: []string{`kernel module "no_such_module" does not exist`}, network: true},
		{name: "unknown profile", args: []string{"--profile", "no-such-profile"},
			want: []string{`"no-such-profile"`, "neither a built-in"}},
		{name: "unknown arch", args: []string{"--arch", "mips"}, want: []string{`unknown architecture "mips"`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.network && testing.Short() {
				t.Skip("-short: needs the Debian kernel package")
			}
			args := append([]string{"build", "--arch", "amd64", "--node", fakeNode, "--out", filepath.Join(dir, "out")}, c.args...)
			cmd := exec.Command(bin, args...)
			var stderr strings.Builder
			cmd.Stderr = &stderr
			err := cmd.Run()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 1 {
				t.Fatalf("exit = %v, want status 1; stderr:\n%s", err, stderr.String())
			}
			// Progress lines go to stderr too when it is not a terminal; the error is the last line.
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			last := lines[len(lines)-1]
			for _, l := range lines[:len(lines)-1] {
				if !strings.HasPrefix(l, "ingot build: [") {
					t.Fatalf("more than one error line:\n%s", stderr.String())
				}
			}
			if !strings.HasPrefix(last, "ingot: ") {
				t.Fatalf("last line %q does not start with 'ingot: '", last)
			}
			for _, w := range c.want {
				if !strings.Contains(last, w) {
					t.Fatalf("error line %q does not mention %q", last, w)
				}
			}
		})
	}
}

func TestProfilesCommands(t *testing.T) {
	for _, args := range [][]string{{"list"}, {"show", "dev"}} {
		if err := cmdProfiles(args); err != nil {
			t.Fatalf("profiles %v: %v", args, err)
		}
	}
	if err := cmdProfiles([]string{"show", "nope"}); err == nil {
		t.Fatal("show of an unknown profile succeeded")
	}
	p := filepath.Join(t.TempDir(), "p.toml")
	os.WriteFile(p, []byte("name = \"x\"\nhostname = \"Bad_Host\"\n"), 0o644)
	err := cmdProfiles([]string{"validate", p})
	if err == nil || !strings.Contains(err.Error(), "p.toml:2: hostname") {
		t.Fatalf("validate bad profile: %v", err)
	}
}
