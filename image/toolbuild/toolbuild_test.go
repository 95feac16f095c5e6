package toolbuild

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// A cached build is reused only while its recipe is the same; directories from before recipes
// were recorded are reused unless the recipe gained linker flags.
func TestCached(t *testing.T) {
	dir := t.TempDir()
	b := Build{Module: "example.com/m", Version: "v1.0.0", Pkgs: []string{"example.com/m/cmd/tool"}}
	bins := []string{filepath.Join(dir, "tool")}
	if b.cached(dir, bins) {
		t.Fatal("cached with no binary")
	}
	if err := os.WriteFile(bins[0], []byte("bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if !b.cached(dir, bins) {
		t.Error("a binary from before recipes were recorded, no linker flags: not cached")
	}
	stamped := b
	stamped.Ldflags = []string{"-X", "example.com/m/version.v=v1.0.0"}
	if stamped.cached(dir, bins) {
		t.Error("a binary from before recipes were recorded counts as built with linker flags")
	}
	if err := os.WriteFile(filepath.Join(dir, recipeFile), []byte(stamped.recipe()), 0o644); err != nil {
		t.Fatal(err)
	}
	if !stamped.cached(dir, bins) {
		t.Error("same recipe: not cached")
	}
	if b.cached(dir, bins) {
		t.Error("a recipe without the linker flags counts as cached")
	}
	withCgo := stamped
	withCgo.Cgo = true
	if withCgo.cached(dir, bins) {
		t.Error("a binary built with cgo off counts as built with cgo on")
	}
}

func TestCgoIsHostOnly(t *testing.T) {
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	b := Build{Module: "example.com/m", Version: "v1.0.0", Pkgs: []string{"example.com/m/cmd/tool"}, Arch: other, Cgo: true}
	if _, err := b.Run(context.Background(), t.TempDir()); err == nil || !strings.Contains(err.Error(), "host arch only") {
		t.Errorf("a cgo build for %s: %v, want refused", other, err)
	}
}
