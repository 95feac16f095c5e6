// Package critools builds the unmodified cri-tools binaries (crictl, critest) at a pinned version
// from the Go module proxy into ingot's cache, outside the repository, once.
package critools

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Version is the cri-tools release ingot is tested with.
const Version = "v1.37.0"

// Crictl returns the path of crictl, building it into cache if needed.
func Crictl(ctx context.Context, cache string) (string, error) {
	dir := filepath.Join(cache, "tools", "crictl-"+Version)
	bin := filepath.Join(dir, "crictl")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	return bin, goInstall(ctx, dir, "sigs.k8s.io/cri-tools/cmd/crictl@"+Version, "")
}

// CrictlFor builds crictl for another architecture (for node images); pure Go, no cgo.
func CrictlFor(ctx context.Context, cache, arch string) (string, error) {
	dir := filepath.Join(cache, "tools", "crictl-"+Version+"-"+arch)
	bin := filepath.Join(dir, "crictl")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	return bin, goInstall(ctx, dir, "sigs.k8s.io/cri-tools/cmd/crictl@"+Version, arch)
}

// Critest returns the path of critest, building it into cache if needed. critest is not a main
// package but cri-tools' test binary (cmd/critest holds only a _test.go file), so it is compiled
// with `go test -c`, the way cri-tools' own Makefile builds it. It takes a few minutes cold.
func Critest(ctx context.Context, cache string) (string, error) {
	dir := filepath.Join(cache, "tools", "critest-"+Version)
	bin := filepath.Join(dir, "critest")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	return bin, goBuild(ctx, dir, "sigs.k8s.io/cri-tools/cmd/critest@"+Version, "", true)
}

// goInstall builds pkg ("path@version") for arch ("" = the host's) into dir, through a throwaway
// module so the build uses cri-tools' own dependency versions and never touches ingot's go.mod.
func goInstall(ctx context.Context, dir, pkg, arch string) error {
	return goBuild(ctx, dir, pkg, arch, false)
}

// goBuild is goInstall; testBinary compiles the package's tests (go test -c) instead.
func goBuild(ctx context.Context, dir, pkg, arch string, testBinary bool) error {
	path, version, ok := strings.Cut(pkg, "@")
	if !ok {
		return fmt.Errorf("build %s: no version", pkg)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp(filepath.Dir(dir), ".build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	out := filepath.Join(work, filepath.Base(path))
	build := []string{"go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, path}
	if testBinary {
		build = []string{"go", "test", "-c", "-trimpath", "-o", out, path}
	}
	for _, step := range [][]string{
		{"go", "mod", "init", "ingot.dev/critools-build"},
		{"go", "get", "sigs.k8s.io/cri-tools@" + version},
		build,
	} {
		c := exec.CommandContext(ctx, step[0], step[1:]...)
		c.Dir = work
		c.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-mod=mod")
		if arch != "" {
			c.Env = append(c.Env, "GOARCH="+arch)
		}
		if b, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %s: %w\n%s", pkg, strings.Join(step, " "), err, b)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.Rename(out, filepath.Join(dir, filepath.Base(path)))
}
