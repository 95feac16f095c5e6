package debpkg

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteSources: Debian archives gain non-free-firmware in both formats; other repositories,
// deb-src lines, comments and an entry that has it already are left as they are.
func TestWriteSources(t *testing.T) {
	etc := t.TempDir()
	os.MkdirAll(filepath.Join(etc, "sources.list.d"), 0o755)
	os.WriteFile(filepath.Join(etc, "sources.list"), []byte(
		"deb http://deb.debian.org/debian bookworm main\n"+
			"deb [signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n"+
			"deb-src http://deb.debian.org/debian bookworm main\n"+
			"# deb http://deb.debian.org/debian sid main\n"+
			"deb http://deb.debian.org/debian-security bookworm-security main non-free-firmware\n"), 0o644)
	os.WriteFile(filepath.Join(etc, "sources.list.d", "debian.sources"), []byte(
		"Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"+
			"Types: deb\nURIs: https://packages.cloud.google.com/apt\nSuites: cloud-sdk-bookworm\nComponents: main\n"), 0o644)
	os.WriteFile(filepath.Join(etc, "sources.list.d", "notes.txt"), []byte("ignored"), 0o644)
	dst := filepath.Join(t.TempDir(), "sources")
	sum1, err := writeSources(etc, dst)
	if err != nil {
		t.Fatal(err)
	}
	list, _ := os.ReadFile(filepath.Join(dst, "sources.list"))
	for _, want := range []string{
		"deb http://deb.debian.org/debian bookworm main non-free-firmware\n",
		"deb [signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib non-free-firmware\n",
		"deb-src http://deb.debian.org/debian bookworm main\n",
		"# deb http://deb.debian.org/debian sid main\n",
		"deb http://deb.debian.org/debian-security bookworm-security main non-free-firmware\n",
	} {
		if !strings.Contains(string(list), want) {
			t.Errorf("sources.list lacks %q:\n%s", want, list)
		}
	}
	d822, _ := os.ReadFile(filepath.Join(dst, "sources.list.d", "debian.sources"))
	if !strings.Contains(string(d822), "Components: main non-free-firmware\nSigned-By") || !strings.Contains(string(d822), "cloud-sdk-bookworm\nComponents: main\n") {
		t.Errorf("debian.sources:\n%s", d822)
	}
	if _, err := os.Stat(filepath.Join(dst, "sources.list.d", "notes.txt")); err == nil {
		t.Error("a file apt does not read was copied")
	}
	sum2, _ := writeSources(etc, dst)
	os.WriteFile(filepath.Join(etc, "sources.list"), []byte("deb http://deb.debian.org/debian trixie main\n"), 0o644)
	sum3, _ := writeSources(etc, dst)
	if sum1 != sum2 || sum1 == sum3 {
		t.Errorf("digests %s %s %s: want the same for the same sources, another for changed ones", sum1, sum2, sum3)
	}
}
