// Package bundle builds the unmodified third-party programs a profile can put into an image —
// cri-tools' crictl and the CNI reference plugins — at pinned versions from the Go module proxy
// into ingot's cache (see image/toolbuild). The builder copies them into the image and records
// them in the manifest; tests use the host builds of the same pins, so what is tested is what ships.
package bundle

import (
	"context"
	"path/filepath"
	"runtime"
	"strings"

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

// KubernetesVersion is the Kubernetes release whose kubelet a worker image ships (and whose
// control plane `ingot cluster` runs).
const KubernetesVersion = "v1.37.2"

// KubernetesModule is the module of kubelet, kube-proxy, kube-apiserver and
// kube-controller-manager.
const KubernetesModule = "k8s.io/kubernetes"

// kubernetesStaging are the modules k8s.io/kubernetes's go.mod replaces with its staging/
// directories. Fetched from the proxy it carries no such directories, so a build pins each to
// the release published with it (v0.X.Y for v1.X.Y). A new Kubernetes release may add one:
// the build then fails naming the missing module.
var kubernetesStaging = []string{
	"api", "apiextensions-apiserver", "apimachinery", "apiserver", "cli-runtime", "client-go",
	"cloud-provider", "cluster-bootstrap", "code-generator", "component-base", "component-helpers",
	"controller-manager", "cri-api", "cri-client", "cri-streaming", "csi-translation-lib",
	"dynamic-resource-allocation", "endpointslice", "externaljwt", "kms", "kube-aggregator",
	"kube-controller-manager", "kube-proxy", "kube-scheduler", "kubectl", "kubelet", "metrics",
	"mount-utils", "pod-security-admission", "sample-apiserver", "sample-cli-plugin",
	"sample-controller", "streaming",
}

// KubernetesBuild is the build of cmds (e.g. "kubelet", "kube-proxy": directories under the
// module's cmd/) at KubernetesVersion for arch.
func KubernetesBuild(arch string, cmds ...string) toolbuild.Build {
	staging := "v0" + strings.TrimPrefix(KubernetesVersion, "v1")
	var replace []string
	for _, m := range kubernetesStaging {
		replace = append(replace, "k8s.io/"+m+"=k8s.io/"+m+"@"+staging)
	}
	var pkgs []string
	for _, c := range cmds {
		pkgs = append(pkgs, KubernetesModule+"/cmd/"+c)
	}
	return toolbuild.Build{Module: KubernetesModule, Version: KubernetesVersion, Pkgs: pkgs, Arch: arch, Replace: replace,
		Ldflags: kubernetesVersionStamp()}
}

// kubernetesVersionStamp is what Kubernetes' own build (hack/lib/version.sh) stamps into its
// programs; without it they report v0.0.0-master, which kubectl get node shows and version
// skew checks read. The commit and build date stay unset, so the build stays reproducible.
func kubernetesVersionStamp() []string {
	major, rest, _ := strings.Cut(strings.TrimPrefix(KubernetesVersion, "v"), ".")
	minor, _, _ := strings.Cut(rest, ".")
	var flags []string
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		flags = append(flags, "-X", pkg+".gitVersion="+KubernetesVersion, "-X", pkg+".gitMajor="+major,
			"-X", pkg+".gitMinor="+minor, "-X", pkg+".gitTreeState=clean")
	}
	return flags
}

// Kubelet returns the path of kubelet for arch (a GOARCH), building it into cache if needed
// (a few minutes on two cores; cached after that).
func Kubelet(ctx context.Context, cache, arch string) (string, error) {
	bins, err := KubernetesBuild(arch, "kubelet").Run(ctx, filepath.Join(cache, "tools", "kubelet-"+KubernetesVersion+"-"+arch))
	if err != nil {
		return "", err
	}
	return bins[0], nil
}

// ContainerdVersion and RuncVersion are the containerd and runc releases `make bench` compares
// ingot's runtime with. They are built only for that comparison and never go into an image.
const (
	ContainerdVersion = "v2.4.2"
	RuncVersion       = "v1.5.3"
)

// Containerd returns the directories holding containerd and containerd-shim-runc-v2, and runc,
// for the host arch, building them into cache if needed. containerd is built with cgo off (no
// btrfs snapshotter, which the comparison does not use); runc needs cgo for its nsenter and is
// built without the seccomp build tag, as libseccomp's headers are not on a fresh machine, so
// the comparison's pods run without a seccomp filter on containerd's side.
func Containerd(ctx context.Context, cache string) (containerdDir, runcDir string, err error) {
	const module = "github.com/containerd/containerd/v2"
	containerdDir = filepath.Join(cache, "tools", "containerd-"+ContainerdVersion+"-"+runtime.GOARCH)
	_, err = toolbuild.Build{Module: module, Version: ContainerdVersion,
		Pkgs:    []string{module + "/cmd/containerd", module + "/cmd/containerd-shim-runc-v2"},
		Ldflags: []string{"-X", module + "/version.Version=" + ContainerdVersion}}.Run(ctx, containerdDir)
	if err != nil {
		return "", "", err
	}
	const runc = "github.com/opencontainers/runc"
	runcDir = filepath.Join(cache, "tools", "runc-"+RuncVersion+"-"+runtime.GOARCH)
	_, err = toolbuild.Build{Module: runc, Version: RuncVersion, Pkgs: []string{runc}, Cgo: true,
		Ldflags: []string{"-X", "main.version=" + strings.TrimPrefix(RuncVersion, "v")}}.Run(ctx, runcDir)
	if err != nil {
		return "", "", err
	}
	return containerdDir, runcDir, nil
}
