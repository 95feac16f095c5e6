package bundle

import (
	"context"
	"debug/elf"
	"runtime"
	"testing"

	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
)

// The reference plugins build from the module proxy for the host and as arm64 ELF files.
func TestBuild(t *testing.T) {
	testgate.Short(t, "building the CNI reference plugins")
	for _, arch := range []string{runtime.GOARCH, "arm64"} {
		bins, err := CNIPlugins(context.Background(), cachedir.Default(), arch)
		if err != nil {
			testgate.Skip(t, "cannot build the CNI plugins: "+err.Error())
		}
		if len(bins) != len(cniPlugins) {
			t.Fatalf("%d binaries", len(bins))
		}
		f, err := elf.Open(bins[0])
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
		if f.Machine != want {
			t.Fatalf("%s is %v, want %v", bins[0], f.Machine, want)
		}
		f.Close()
	}
}
