// Package toolbuild builds unmodified third-party Go programs (cri-tools, the CNI reference
// plugins) at pinned versions from the Go module proxy into ingot's cache, outside the
// repository, once per version and architecture. Each build runs in a throwaway module, so it
// uses the program's own dependency versions and never touches ingot's go.mod.
package toolbuild

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Build describes programs of one module to build.
type Build struct {
	Module  string   // e.g. github.com/containernetworking/plugins
	Version string   // e.g. v1.10.0
	Pkgs    []string // import paths of main packages (or, with Test, of a test package)
	Arch    string   // GOARCH; "" is the host's
	Test    bool     // compile the package's tests (go test -c) instead of a main package
	// Replace pins modules the program's own go.mod replaces with local directories, which a
	// module fetched from the proxy does not carry: "path=path@version" each (go mod edit's
	// -replace syntax). Kubernetes' staging modules are the case (see bundle.KubernetesBuild).
	Replace []string
	// Ldflags are extra linker flags, e.g. -X stamps of the version a program reports.
	Ldflags []string
	// Cgo builds with cgo on, against the host's C toolchain (host arch only): runc's nsenter
	// is C. Every other program is built with cgo off, so it is static.
	Cgo bool
}

// recipeFile, in a build's directory, records what was built there, so a changed recipe (new
// linker flags) is rebuilt rather than served from the cache.
const recipeFile = ".recipe"

func (b Build) recipe() string {
	r := fmt.Sprintf("module %s@%s\npkgs %s\narch %s\ntest %t\nreplace %s\nldflags %s\n",
		b.Module, b.Version, strings.Join(b.Pkgs, " "), b.Arch, b.Test, strings.Join(b.Replace, " "), strings.Join(b.Ldflags, " "))
	if b.Cgo {
		r += "cgo true\n" // only when set, so the recipes of builds from before the field still match
	}
	return r
}

// cached reports whether dir holds bins built from this recipe. A directory from before recipes
// were recorded counts as built from it unless the recipe has linker flags, which it could not
// have had.
func (b Build) cached(dir string, bins []string) bool {
	for _, bin := range bins {
		if _, err := os.Stat(bin); err != nil {
			return false
		}
	}
	got, err := os.ReadFile(filepath.Join(dir, recipeFile))
	if err != nil {
		return os.IsNotExist(err) && len(b.Ldflags) == 0
	}
	return string(got) == b.recipe()
}

// Run builds every package into dir (one binary per package, named after its last path
// element) unless they are all there already, and returns their paths in Pkgs order. The
// binaries are built in a temporary directory and moved into dir only when all succeeded.
func (b Build) Run(ctx context.Context, dir string) ([]string, error) {
	if b.Cgo && b.Arch != "" && b.Arch != runtime.GOARCH {
		return nil, fmt.Errorf("build %s@%s: cgo builds are for the host arch only, not %s", b.Module, b.Version, b.Arch)
	}
	var bins []string
	for _, p := range b.Pkgs {
		bins = append(bins, filepath.Join(dir, filepath.Base(p)))
	}
	if b.cached(dir, bins) {
		return bins, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(filepath.Dir(dir), ".build-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	steps := [][]string{{"go", "mod", "init", "ingot.dev/toolbuild"}}
	for _, r := range b.Replace {
		steps = append(steps, []string{"go", "mod", "edit", "-replace", r})
	}
	steps = append(steps, []string{"go", "get", b.Module + "@" + b.Version})
	for _, p := range b.Pkgs {
		out := filepath.Join(work, "out", filepath.Base(p))
		if b.Test {
			steps = append(steps, []string{"go", "test", "-c", "-trimpath", "-o", out, p})
		} else {
			steps = append(steps, []string{"go", "build", "-trimpath", "-ldflags=" + strings.Join(append([]string{"-s", "-w"}, b.Ldflags...), " "), "-o", out, p})
		}
	}
	for _, step := range steps {
		c := exec.CommandContext(ctx, step[0], step[1:]...)
		c.Dir = work
		c.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
		if b.Cgo {
			c.Env = append(c.Env, "CGO_ENABLED=1")
		}
		if b.Arch != "" {
			c.Env = append(c.Env, "GOARCH="+b.Arch)
		}
		if out, err := c.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("build %s@%s: %s: %w\n%s", b.Module, b.Version, strings.Join(step, " "), err, out)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	for i, p := range b.Pkgs {
		if err := os.Rename(filepath.Join(work, "out", filepath.Base(p)), bins[i]); err != nil {
			return nil, fmt.Errorf("build %s: %w", p, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, recipeFile), []byte(b.recipe()), 0o644); err != nil {
		return nil, err
	}
	return bins, nil
}
