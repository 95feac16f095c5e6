package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPKIAndCtlCLI runs the real CLI: the PKI commands make a directory whose node-toml a node
// config accepts, and bad input to pki, build and ctl fails with one line naming the problem.
func TestPKIAndCtlCLI(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "ingot")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build ingot: %v\n%s", err, out)
	}
	run := func(args ...string) (string, error) {
		out, err := exec.Command(bin, args...).CombinedOutput()
		return string(out), err
	}
	p := filepath.Join(dir, "pki")
	for _, args := range [][]string{
		{"pki", "init", "--dir", p},
		{"pki", "node", "n1", "--ip", "10.0.0.5", "--dns", "n1.example", "--dir", p},
		{"pki", "client", "ops", "--role", "reader", "--dir", p},
	} {
		if out, err := run(args...); err != nil {
			t.Fatalf("ingot %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	table, err := run("pki", "node-toml", "n1", "--dir", p, "--port", "50001")
	if err != nil {
		t.Fatalf("node-toml: %v\n%s", err, table)
	}
	nodeToml := filepath.Join(dir, "node.toml")
	os.WriteFile(nodeToml, []byte(table), 0o600)
	if out, err := run("node-config", "validate", nodeToml); err != nil || !strings.Contains(out, "ok") {
		t.Fatalf("the [api] table node-toml printed does not validate: %v\n%s", err, out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"pki", "init", "--dir", p}, "already holds a CA"},
		{[]string{"pki", "node", "n2", "--ip", "nonsense", "--dir", p}, `--ip "nonsense" is not an IP address`},
		{[]string{"pki", "client", "x", "--role", "root", "--dir", p}, `role "root": want admin or reader`},
		{[]string{"pki", "node-toml", "nobody", "--dir", p}, "ingot pki node nobody makes"},
		{[]string{"ctl", "status"}, "--node ADDR is required"},
		{[]string{"ctl", "--node", "127.0.0.1", "--pki", filepath.Join(dir, "none"), "status"}, "no client certificates"},
		{[]string{"ctl", "--node", "127.0.0.1", "--pki", p, "-o", "yaml", "status"}, `-o "yaml": want table or json`},
		{[]string{"build", "--version", "Not A Version"}, `version "Not A Version"`},
	} {
		out, err := run(c.args...)
		if err == nil || !strings.Contains(out, c.want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("ingot %s: %v\n%s\nwant one line saying %q", strings.Join(c.args, " "), err, out, c.want)
		}
	}
}
