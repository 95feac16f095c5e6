package cluster

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"ingot.dev/ingot/profiles/nodeconfig"
)

func TestKubeProxyPod(t *testing.T) {
	text, err := KubeProxyPod(DefaultKubeProxyImage, PodCIDR)
	if err != nil {
		t.Fatal(err)
	}
	var pod struct {
		Kind     string
		Metadata struct{ Name, Namespace string }
		Spec     struct {
			HostNetwork bool
			Containers  []struct {
				Image           string
				Command         []string
				SecurityContext struct{ Privileged bool }
				VolumeMounts    []struct {
					MountPath string
					ReadOnly  bool
				}
			}
			Volumes []struct {
				HostPath struct{ Path string }
			}
		}
	}
	if err := json.Unmarshal([]byte(text), &pod); err != nil {
		t.Fatalf("the manifest is not JSON: %v\n%s", err, text)
	}
	if pod.Kind != "Pod" || pod.Metadata.Namespace != "kube-system" || !pod.Spec.HostNetwork || len(pod.Spec.Containers) != 1 {
		t.Fatalf("pod: %+v", pod)
	}
	c := pod.Spec.Containers[0]
	for _, want := range []string{"--proxy-mode=nftables", "--cluster-cidr=" + PodCIDR, "--kubeconfig=/var/lib/kubelet/kubeconfig"} {
		if !slices.Contains(c.Command, want) {
			t.Errorf("command %q lacks %s", c.Command, want)
		}
	}
	if c.Image != DefaultKubeProxyImage || !c.SecurityContext.Privileged {
		t.Errorf("container: %+v", c)
	}
	if len(c.VolumeMounts) != 1 || !c.VolumeMounts[0].ReadOnly || pod.Spec.Volumes[0].HostPath.Path != "/var/lib/kubelet" {
		t.Errorf("the kubelet's directory must be mounted read-only: %+v %+v", c.VolumeMounts, pod.Spec.Volumes)
	}
	// It reaches the node through its node config.
	nc, err := workerNodeConfig("worker-1", nil, map[string]string{KubeProxyManifest: text}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := nodeconfig.Parse("node.toml", nc)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Kubernetes.StaticPods[KubeProxyManifest] != text {
		t.Errorf("the manifest did not round-trip through the node config")
	}

	for _, bad := range []struct{ image, cidr, want string }{
		{"", PodCIDR, "want an image reference"},
		{"a b", PodCIDR, "want an image reference"},
		{DefaultKubeProxyImage, "10.88.0.0", "pod CIDR"},
	} {
		if _, err := KubeProxyPod(bad.image, bad.cidr); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("KubeProxyPod(%q, %q) = %v; want an error saying %q", bad.image, bad.cidr, err, bad.want)
		}
	}
}

func TestRebootWorkerRefuses(t *testing.T) {
	dir := t.TempDir()
	for name, want := range map[string]string{
		"../etc/x": "not a worker's name",
		"worker-0": "not a worker's name",
		"worker-1": "its VM is not running",
	} {
		if err := RebootWorker(dir, name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("RebootWorker(%q) = %v; want %q", name, err, want)
		}
	}
}
