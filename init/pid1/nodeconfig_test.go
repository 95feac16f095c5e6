package pid1

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"ingot.dev/ingot/init/console"
	"ingot.dev/ingot/init/nodesource"
	"ingot.dev/ingot/profiles"
)

// nodeConfigRig is a fake sysfs with a fw_cfg entry, a kept directory and a console.
type nodeConfigRig struct {
	sys, kept string
	console   bytes.Buffer
}

func newRig(t *testing.T) *nodeConfigRig {
	root := t.TempDir()
	return &nodeConfigRig{sys: filepath.Join(root, "sys"), kept: filepath.Join(root, "var/lib/ingot/node")}
}

func (r *nodeConfigRig) fwcfg(t *testing.T, data string) {
	dir := filepath.Join(r.sys, "firmware/qemu_fw_cfg/by_name", nodesource.FwCfgName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if data == "" {
		os.RemoveAll(dir)
		return
	}
	os.WriteFile(filepath.Join(dir, "raw"), []byte(data), 0o444)
}

func (r *nodeConfigRig) boot(t *testing.T, cmdline string) *nodeSettings {
	t.Helper()
	r.console.Reset()
	out := &nodeSettings{}
	step := readNodeConfig{log: slog.New(console.NewHandler(&r.console, slog.LevelInfo)),
		reader: nodesource.Reader{Sys: r.sys, Dev: filepath.Join(r.sys, "nodev")}, cmdline: cmdline, keptDir: r.kept, out: out}
	if err := step.Do(context.Background()); err != nil {
		t.Fatalf("node-config step failed the boot: %v", err)
	}
	return out
}

func (r *nodeConfigRig) lines() []string {
	return strings.Split(strings.TrimSpace(r.console.String()), "\n")
}

func TestNodeConfigBoots(t *testing.T) {
	r := newRig(t)
	prof, _, err := profiles.Builtin("dev")
	if err != nil {
		t.Fatal(err)
	}

	// No source, nothing kept: one info line, the profile as built.
	s := r.boot(t, "console=ttyS0")
	if s.Config != nil || len(r.lines()) != 1 || !strings.Contains(r.lines()[0], "no node config source") {
		t.Errorf("no source: config %+v, console %q", s.Config, r.console.String())
	}
	if got := s.effective(prof); got.Hostname != "ingot-dev" || s.namesNode() {
		t.Errorf("no source: hostname %q, names the node %v (want the profile's, DHCP may rename it)", got.Hostname, s.namesNode())
	}

	// A good config through fw_cfg: applied and kept 0600.
	good := "hostname = \"node-a\"\nntp = [\"time.example.org\"]\n[sysctls]\n\"vm.swappiness\" = \"10\"\n" +
		"[[network.interface]]\nname = \"eth0\"\naddresses = [\"10.0.2.50/24\"]\n"
	r.fwcfg(t, good)
	s = r.boot(t, "")
	eff := s.effective(prof)
	if eff.Hostname != "node-a" || eff.Sysctls["vm.swappiness"] != "10" || eff.Sysctls["net.ipv4.ip_forward"] != "1" ||
		len(eff.Network.Interfaces) != 1 || eff.Network.Interfaces[0].DHCP || eff.Network.Interfaces[0].Addresses[0] != "10.0.2.50/24" {
		t.Errorf("fw_cfg config not applied: %+v", eff)
	}
	if prof.Hostname != "ingot-dev" || prof.Sysctls["vm.swappiness"] != "" {
		t.Errorf("the profile itself was changed: %+v", prof)
	}
	if !s.namesNode() {
		t.Errorf("a node config with a hostname does not name the node: a DHCP lease would rename it")
	}
	if got := s.NTP(); len(got) != 1 || got[0] != "time.example.org" {
		t.Errorf("NTP seam = %q", got)
	}
	kept, err := os.ReadFile(filepath.Join(r.kept, "node.toml"))
	st, _ := os.Stat(filepath.Join(r.kept, "node.toml"))
	if err != nil || string(kept) != good || st.Mode() != 0o600 {
		t.Errorf("kept copy %q mode %v err %v", kept, st.Mode(), err)
	}

	// Reboot without the source: the kept config.
	r.fwcfg(t, "")
	s = r.boot(t, "")
	if s.Config == nil || s.Config.Hostname != "node-a" || !strings.Contains(r.console.String(), "node config kept from an earlier boot") {
		t.Errorf("reboot without source: config %+v, console %q", s.Config, r.console.String())
	}

	// A bad key: ONE warning naming the source and file:line:key, the kept config stays, and the
	// bad file does not replace it.
	r.fwcfg(t, "hostname = \"node-b\"\n\nhostnme = \"typo\"\n")
	s = r.boot(t, "")
	var warns []string
	for _, l := range r.lines() {
		if strings.Contains(l, "WARN") || strings.Contains(l, "rejected") {
			warns = append(warns, l)
		}
	}
	if len(warns) != 1 || !strings.Contains(warns[0], "source=fwcfg") || !strings.Contains(warns[0], "fw_cfg:opt/ingot/node.toml:3") || !strings.Contains(warns[0], "hostnme") {
		t.Errorf("bad key: warnings %q, want one naming fw_cfg:opt/ingot/node.toml:3 and hostnme\n%s", warns, r.console.String())
	}
	if s.Config == nil || s.Config.Hostname != "node-a" {
		t.Errorf("bad key: config %+v, want the kept node-a", s.Config)
	}
	if kept2, _ := os.ReadFile(filepath.Join(r.kept, "node.toml")); string(kept2) != good {
		t.Errorf("a bad config replaced the kept one: %q", kept2)
	}

	// ingot.node=none ignores fw_cfg.
	r.fwcfg(t, "hostname = \"node-c\"\n")
	if s = r.boot(t, "ingot.node=none"); s.Config.Hostname != "node-a" {
		t.Errorf("ingot.node=none: hostname %q, want the kept node-a", s.Config.Hostname)
	}
}

func TestNodeConfigSecretsNotLogged(t *testing.T) {
	r := newRig(t)
	r.fwcfg(t, "[kubernetes]\nkubeconfig = \"s3cr3t-kubeconfig\"\nbogus = 1\n")
	r.boot(t, "")
	if strings.Contains(r.console.String(), "s3cr3t") {
		t.Errorf("console shows a secret:\n%s", r.console.String())
	}
}

func TestParseSourceCidata(t *testing.T) {
	c, err := parseSource(nodesource.Config{Source: nodesource.Cidata, Name: "/dev/vdc:node.toml", Meta: nodesource.MetaData{LocalHostname: "Web-1", InstanceID: "i-1"}})
	if err != nil || c.Hostname != "web-1" {
		t.Errorf("cidata meta-data only: %+v, %v", c, err)
	}
	c, err = parseSource(nodesource.Config{Source: nodesource.Cidata, Name: "/dev/vdc:node.toml", TOML: []byte("hostname = \"from-toml\"\n"), Meta: nodesource.MetaData{LocalHostname: "web-1"}})
	if err != nil || c.Hostname != "from-toml" {
		t.Errorf("node.toml beside meta-data wins: %+v, %v", c, err)
	}
	_, err = parseSource(nodesource.Config{Source: nodesource.Cidata, Name: "/dev/vdc:node.toml", Meta: nodesource.MetaData{LocalHostname: "web_1.example"}})
	if want := `/dev/vdc:node.toml: meta-data: local-hostname: "web_1.example" is not a hostname (RFC 1123, lowercase)`; err == nil || err.Error() != want {
		t.Errorf("bad local-hostname: %v, want %q", err, want)
	}
}
