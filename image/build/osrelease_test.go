package build

import (
	"strings"
	"testing"

	"ingot.dev/ingot/image/manifest"
)

// The image's os-release names the OS, its version and the build; the build id changes with any
// input and with the architecture, and nothing else.
func TestOSRelease(t *testing.T) {
	inputs := []manifest.Input{{Name: "ingot-node", SHA256: "aa"}, {Name: "deb:busybox-static", Version: "1:1.35.0-4", SHA256: "bb"}}
	osrel, id := osRelease("dev", "amd64", "0", inputs)
	if len(id) != 64 || strings.Trim(id, "0123456789abcdef") != "" {
		t.Fatalf("build id %q is not a sha256", id)
	}
	want := "BUILD_ID=" + id + "\nID=ingot\nIMAGE_ID=dev\nNAME=\"ingot\"\nPRETTY_NAME=\"ingot dev 0 (amd64, build " + id[:12] + ")\"\nVERSION_ID=0\n"
	if string(osrel) != want {
		t.Errorf("os-release:\n%s\nwant:\n%s", osrel, want)
	}
	if _, again := osRelease("dev", "amd64", "0", inputs); again != id {
		t.Errorf("same inputs, different build ids %s and %s", id, again)
	}
	changed := append([]manifest.Input(nil), inputs...)
	changed[1].Version = "1:1.35.0-5"
	for what, other := range map[string]string{
		"an input's version": second(osRelease("dev", "amd64", "0", changed)),
		"the architecture":   second(osRelease("dev", "arm64", "0", inputs)),
		"one input fewer":    second(osRelease("dev", "amd64", "0", inputs[:1])),
		"the version":        second(osRelease("dev", "amd64", "1.1", inputs)),
	} {
		if other == id {
			t.Errorf("%s changed but the build id did not", what)
		}
	}
}

func second(_ []byte, s string) string { return s }
