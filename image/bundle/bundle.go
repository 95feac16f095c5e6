// Package bundle builds the unmodified third-party programs a profile can put into an image —
// cri-tools' crictl and the CNI reference plugins — at pinned versions from the Go module proxy
// into ingot's cache (see image/toolbuild). The builder copies them into the image and records
// them in the manifest; tests use the host builds of the same pins, so what is tested is what ships.
package bundle

import (
	"context"
	"path/filepath"

	"ingot.dev/ingot/image/toolbuild"
)

// CriToolsVersion is the cri-tools release whose crictl is bundled (and whose critest the
// conformance tier runs).
const CriToolsVersion = "v1.37.0"

// CriToolsModule is cri-tools' module path.
const CriToolsModule = "sigs.k8s.io/cri-tools"

// CNIPluginsVersion is the containernetworking/plugins release bundled.
const CNIPluginsVersion = "v1.10.0"

// cniPlugins are the reference plugins bundled, with their package paths in the module.
var cniPlugins = []struct{ name, pkg string }{
	{"bridge", "main/bridge"},
	{"host-local", "ipam/host-local"},
	{"loopback", "main/loopback"},
	{"portmap", "meta/portmap"},
	{"tuning", "meta/tuning"},
}

// CNIPluginNames are the names of the bundled reference plugins, in build order.
func CNIPluginNames() []string {
	names := make([]string, len(cniPlugins))
	for i, p := range cniPlugins {
		names[i] = p.name
	}
	return names
}

// Crictl returns the path of crictl for arch ("" is the host's), building it into cache if
// needed. crictl is pure Go, so no cross compiler is needed.
func Crictl(ctx context.Context, cache, arch string) (string, error) {
	dir := "crictl-" + CriToolsVersion
	if arch != "" {
		dir += "-" + arch
	}
	b := toolbuild.Build{Module: CriToolsModule, Version: CriToolsVersion, Pkgs: []string{CriToolsModule + "/cmd/crictl"}, Arch: arch}
	bins, err := b.Run(ctx, filepath.Join(cache, "tools", dir))
	if err != nil {
		return "", err
	}
	return bins[0], nil
}

// CNIPlugins returns the reference plugin binaries for arch (a GOARCH), building them into cache
// if needed.
func CNIPlugins(ctx context.Context, cache, arch string) ([]string, error) {
	const module = "github.com/containernetworking/plugins"
	var pkgs []string
	for _, p := range cniPlugins {
		pkgs = append(pkgs, module+"/plugins/"+p.pkg)
	}
	return toolbuild.Build{Module: module, Version: CNIPluginsVersion, Pkgs: pkgs, Arch: arch}.Run(ctx,
		filepath.Join(cache, "tools", "cni-plugins-"+CNIPluginsVersion+"-"+arch))
}
