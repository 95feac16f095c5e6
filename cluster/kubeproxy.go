package cluster

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"

	"ingot.dev/ingot/init/kubelet"
)

// KubeProxyManifest is the file name of the kube-proxy static pod in every worker's
// staticPodPath.
const KubeProxyManifest = "kube-proxy.json"

// KubeProxyPod is the static pod that runs kube-proxy on a worker: image's kube-proxy in
// nftables mode on the node's network, told podCIDR so it can tell pod traffic from the rest.
//
// A static pod rather than a DaemonSet: the worker runs it as soon as its kubelet starts, with
// no scheduler or controller for DaemonSets in the control plane. It talks to the API server
// with the kubelet's own credentials (the kubeconfig TLS bootstrapping leaves in /var/lib/kubelet,
// read-only), which the system:nodes → system:node-proxier binding lets it use; so no service
// account token has to reach a pod before kube-proxy runs. It is privileged because it
// programs the node's nftables; its metrics and health endpoints stay on the node's loopback.
// The text is JSON, which the kubelet reads like YAML.
func KubeProxyPod(image, podCIDR string) (string, error) {
	if image == "" || strings.ContainsAny(image, " \t\n") {
		return "", fmt.Errorf("kube-proxy image %q: want an image reference", image)
	}
	if _, err := netip.ParsePrefix(podCIDR); err != nil {
		return "", fmt.Errorf("kube-proxy: pod CIDR: %w", err)
	}
	pod := map[string]any{
		"apiVersion": "v1",
		"kind":       "Pod",
		"metadata": map[string]any{
			"name":      "kube-proxy",
			"namespace": "kube-system",
			"labels":    map[string]string{"k8s-app": "kube-proxy"},
		},
		"spec": map[string]any{
			"hostNetwork":       true,
			"priorityClassName": "system-node-critical",
			"containers": []any{map[string]any{
				"name":  "kube-proxy",
				"image": image,
				"command": []string{
					"kube-proxy",
					"--proxy-mode=nftables",
					"--kubeconfig=" + kubelet.KubeconfigPath,
					"--cluster-cidr=" + podCIDR,
					// The node is registered under its hostname, which is what kube-proxy
					// looks itself up by.
					"--metrics-bind-address=127.0.0.1:10249",
					"--healthz-bind-address=127.0.0.1:10256",
					// Leave the kernel's conntrack table size as the node set it.
					"--conntrack-max-per-core=0",
				},
				"securityContext": map[string]any{"privileged": true},
				"volumeMounts": []any{
					map[string]any{"name": "kubelet", "mountPath": kubelet.Dir, "readOnly": true},
				},
			}},
			"volumes": []any{
				map[string]any{"name": "kubelet", "hostPath": map[string]any{"path": kubelet.Dir, "type": "Directory"}},
			},
		},
	}
	b, err := json.MarshalIndent(pod, "", "  ")
	if err != nil {
		return "", err
	}
	return string(b) + "\n", nil
}
