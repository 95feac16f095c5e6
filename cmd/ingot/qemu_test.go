package main

import (
	"os"
	"path/filepath"
	"testing"

	"ingot.dev/ingot/image/configdrive"
	"ingot.dev/ingot/qemu"
)

// --node-config reaches QEMU as an fw_cfg file or as a config drive holding the same bytes.
func TestAttachNodeConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "node.toml")
	body := []byte("hostname = \"node-1\"\n")
	if err := os.WriteFile(file, body, 0o600); err != nil {
		t.Fatal(err)
	}

	var cfg qemu.Config
	cfg.RunDir = t.TempDir()
	if err := attachNodeConfig(&cfg, file, "fw_cfg"); err != nil {
		t.Fatal(err)
	}
	if got := cfg.FwCfg["opt/ingot/node.toml"]; got != file || len(cfg.Drives) != 0 {
		t.Fatalf("fw_cfg: FwCfg %v, Drives %v; want opt/ingot/node.toml=%s and no drive", cfg.FwCfg, cfg.Drives, file)
	}

	cfg = qemu.Config{RunDir: t.TempDir()}
	if err := attachNodeConfig(&cfg, file, "drive"); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Drives) != 1 || len(cfg.FwCfg) != 0 {
		t.Fatalf("drive: Drives %v, FwCfg %v; want one drive", cfg.Drives, cfg.FwCfg)
	}
	label, data, err := configdrive.Read(cfg.Drives[0])
	if err != nil || string(data) != string(body) {
		t.Fatalf("config drive %s: label %q, node.toml %q, %v; want %q", cfg.Drives[0], label, data, err, body)
	}

	for via, want := range map[string]string{
		"cdrom": `qemu: --node-config-via "cdrom": want fw_cfg or drive`,
	} {
		if err := attachNodeConfig(&qemu.Config{RunDir: t.TempDir()}, file, via); err == nil || err.Error() != want {
			t.Errorf("via %s: %v; want %q", via, err, want)
		}
	}
	missing := filepath.Join(dir, "nope.toml")
	if err := attachNodeConfig(&qemu.Config{RunDir: t.TempDir()}, missing, "fw_cfg"); err == nil || err.Error() != "qemu: --node-config: open "+missing+": no such file or directory" {
		t.Errorf("missing file: %v", err)
	}
}
