package build

import (
	"os"
	"path/filepath"
	"testing"
)

// TestFirmwareFile finds firmware files in an unpacked package under either prefix, through the
// package's relative and absolute symlinks, and never outside the package.
func TestFirmwareFile(t *testing.T) {
	root := t.TempDir()
	mk := func(p, data string) {
		os.MkdirAll(filepath.Dir(filepath.Join(root, p)), 0o755)
		os.WriteFile(filepath.Join(root, p), []byte(data), 0o644)
	}
	mk("lib/firmware/rtl_nic/rtl8168h-2.fw", "h2")
	mk("usr/lib/firmware/intel/ice/ddp/ice-1.3.30.0.pkg", "ddp")
	os.Symlink("ice-1.3.30.0.pkg", filepath.Join(root, "usr/lib/firmware/intel/ice/ddp/ice.pkg"))
	os.Symlink("/lib/firmware/rtl_nic/rtl8168h-2.fw", filepath.Join(root, "lib/firmware/rtl_nic/alias.fw"))
	os.Symlink("/etc/passwd", filepath.Join(root, "lib/firmware/escape.fw"))
	os.Symlink("../../../../../../etc/passwd", filepath.Join(root, "lib/firmware/escape2.fw"))
	for rel, want := range map[string]string{
		"rtl_nic/rtl8168h-2.fw": "h2", "intel/ice/ddp/ice.pkg": "ddp", "rtl_nic/alias.fw": "h2",
		"escape.fw": "", "escape2.fw": "", "missing.fw": "",
	} {
		p, ok := firmwareFile(root, rel)
		got := ""
		if ok {
			b, _ := os.ReadFile(p)
			got = string(b)
		}
		if got != want {
			t.Errorf("firmwareFile(%s) = %q (%v), want %q", rel, got, ok, want)
		}
	}
}
