// Package cniplugins builds the CNI reference plugins (containernetworking/plugins) that a profile
// can bundle into /opt/cni/bin, for conflists that name plugin types ingot does not implement
// itself, and for comparing ingot's built-in network with them.
package cniplugins

import (
	"context"
	"path/filepath"

	"ingot.dev/ingot/internal/toolbuild"
)

// Version is the containernetworking/plugins release bundled.
const Version = "v1.10.0"

// Plugins are the reference plugins bundled.
var Plugins = []string{"bridge", "host-local", "loopback", "portmap", "tuning"}

// Build returns the plugin binaries for arch, building them into cache if needed.
func Build(ctx context.Context, cache, arch string) ([]string, error) {
	const module = "github.com/containernetworking/plugins"
	pkgs := map[string]string{"bridge": "main/bridge", "host-local": "ipam/host-local", "loopback": "main/loopback",
		"portmap": "meta/portmap", "tuning": "meta/tuning"}
	var paths []string
	for _, p := range Plugins {
		paths = append(paths, module+"/plugins/"+pkgs[p])
	}
	return toolbuild.Build{Module: module, Version: Version, Pkgs: paths, Arch: arch}.Run(ctx,
		filepath.Join(cache, "tools", "cni-plugins-"+Version+"-"+arch))
}
