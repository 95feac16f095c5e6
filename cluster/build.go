package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"ingot.dev/ingot/image/bundle"
	"ingot.dev/ingot/image/toolbuild"
)

// EtcdVersion is the etcd release the control plane runs.
const EtcdVersion = "v3.7.3"

// EtcdModule holds etcd's main package at its root (server/main.go, a wrapper of etcdmain).
// Fetched from the proxy its go.mod's replace lines (../api, ../client) do not apply; it requires
// the api, client and pkg modules of the same release, so nothing needs pinning.
const EtcdModule = "go.etcd.io/etcd/server/v3"

// Binaries are the paths of the control plane's programs.
type Binaries struct {
	Etcd, APIServer, ControllerManager string
	// Kubectl is for the people and tests using the cluster; the control plane does not run it.
	Kubectl string
}

// Build returns the control plane's programs for the host, building them into cache's tools/
// directory if needed: etcd from EtcdModule, kube-apiserver and kube-controller-manager from
// bundle.KubernetesBuild, and kubectl beside them (minutes on two cores; cached by version and
// arch after that).
func Build(ctx context.Context, cache string) (Binaries, error) {
	arch := runtime.GOARCH
	etcdDir := filepath.Join(cache, "tools", "etcd-"+EtcdVersion+"-"+arch)
	bins, err := toolbuild.Build{Module: EtcdModule, Version: EtcdVersion, Pkgs: []string{EtcdModule}, Arch: arch}.Run(ctx, etcdDir)
	if err != nil {
		return Binaries{}, err
	}
	// toolbuild names a binary after its package's last element, "v3" here; a link named etcd
	// makes ps and the logs say what runs.
	etcd := filepath.Join(etcdDir, "etcd")
	if _, err := os.Lstat(etcd); err != nil {
		if err := os.Symlink(filepath.Base(bins[0]), etcd); err != nil && !os.IsExist(err) {
			return Binaries{}, fmt.Errorf("link %s: %w", etcd, err)
		}
	}
	kube, err := bundle.KubernetesBuild(arch, "kube-apiserver", "kube-controller-manager").Run(ctx,
		filepath.Join(cache, "tools", "control-plane-"+bundle.KubernetesVersion+"-"+arch))
	if err != nil {
		return Binaries{}, err
	}
	// kubectl in a directory of its own, so adding it did not invalidate the control plane's.
	kubectl, err := bundle.KubernetesBuild(arch, "kubectl").Run(ctx,
		filepath.Join(cache, "tools", "kubectl-"+bundle.KubernetesVersion+"-"+arch))
	if err != nil {
		return Binaries{}, err
	}
	return Binaries{Etcd: etcd, APIServer: kube[0], ControllerManager: kube[1], Kubectl: kubectl[0]}, nil
}
