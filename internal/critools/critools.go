// Package critools builds the unmodified cri-tools binaries (crictl, critest) at a pinned version
// from the Go module proxy into ingot's cache, outside the repository, once.
package critools

import (
	"context"
	"path/filepath"

	"ingot.dev/ingot/internal/toolbuild"
)

// Version is the cri-tools release ingot is tested with.
const Version = "v1.37.0"

const module = "sigs.k8s.io/cri-tools"

// Crictl returns the path of crictl for the host, building it into cache if needed.
func Crictl(ctx context.Context, cache string) (string, error) {
	return one(ctx, filepath.Join(cache, "tools", "crictl-"+Version), toolbuild.Build{
		Module: module, Version: Version, Pkgs: []string{module + "/cmd/crictl"}})
}

// CrictlFor builds crictl for another architecture (for node images); pure Go, no cgo.
func CrictlFor(ctx context.Context, cache, arch string) (string, error) {
	return one(ctx, filepath.Join(cache, "tools", "crictl-"+Version+"-"+arch), toolbuild.Build{
		Module: module, Version: Version, Pkgs: []string{module + "/cmd/crictl"}, Arch: arch})
}

// Critest returns the path of critest, building it into cache if needed. critest is not a main
// package but cri-tools' test binary (cmd/critest holds only a _test.go file), so it is compiled
// with `go test -c`, the way cri-tools' own Makefile builds it. It takes a few minutes cold.
func Critest(ctx context.Context, cache string) (string, error) {
	return one(ctx, filepath.Join(cache, "tools", "critest-"+Version), toolbuild.Build{
		Module: module, Version: Version, Pkgs: []string{module + "/cmd/critest"}, Test: true})
}

func one(ctx context.Context, dir string, b toolbuild.Build) (string, error) {
	bins, err := b.Run(ctx, dir)
	if err != nil {
		return filepath.Join(dir, filepath.Base(b.Pkgs[0])), err
	}
	return bins[0], nil
}
