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

// goInstall builds pkg ("path@version") for arch ("" = the host's) into dir, through a throwaway
// module so the build uses cri-tools' own dependency versions and never touches ingot's go.mod.
func goInstall(ctx context.Context, dir, pkg, arch string) error {
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
	for _, step := range [][]string{
		{"go", "mod", "init", "ingot.dev/critools-build"},
		{"go", "get", "sigs.k8s.io/cri-tools@" + version},
		{"go", "build", "-trimpath", "-o", out, path},
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
