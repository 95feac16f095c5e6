// Package kubelet prepares the kubelet that PID 1 runs on a node: the KubeletConfiguration it
// writes from the profile and the node config, the kubeconfig it joins the cluster with (a
// bootstrap kubeconfig with a token, for TLS bootstrapping, or a kubeconfig the node config gives),
// and the command line. The kubelet itself is Kubernetes' own, unmodified.
//
// Everything the kubelet keeps lives under /var/lib/kubelet on the state partition: its client
// certificate (the outcome of TLS bootstrapping) survives reboots, so a node joins once.
package kubelet

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"ingot.dev/ingot/profiles"
	"ingot.dev/ingot/profiles/nodeconfig"
)

// Paths on the node.
const (
	Dir                  = "/var/lib/kubelet"
	ConfigPath           = Dir + "/config.json"
	KubeconfigPath       = Dir + "/kubeconfig"
	BootstrapPath        = Dir + "/bootstrap-kubeconfig"
	CertDir              = Dir + "/pki"
	ClientCAPath         = CertDir + "/ca.crt"
	StaticPodPath        = "/etc/kubernetes/manifests"
	VolumePluginDir      = Dir + "/volumeplugins"
	LogPath              = "/var/log/kubelet.log"
	RuntimeEndpoint      = "unix:///run/ingot/ingot.sock"
	DefaultResolvConf    = "/etc/resolv.conf"
	kubeletConfigAPI     = "kubelet.config.k8s.io/v1beta1"
	kubeconfigAPI        = "v1"
	bootstrapUser        = "kubelet-bootstrap"
	defaultClusterName   = "cluster"
	defaultContextName   = "kubelet"
	containerLogMaxSize  = "10Mi"
	containerLogMaxFiles = 5
	evictionMinReclaim   = "5%"
	imageGCHighPercent   = 80
	imageGCLowPercent    = 70
	nodeStatusFrequency  = "10s"
)

// Mode is how the kubelet joins a cluster.
type Mode string

const (
	// Standalone: no cluster; the kubelet runs the static pods of StaticPodPath.
	Standalone Mode = "standalone"
	// Bootstrap: TLS bootstrapping with a bootstrap token; the signed client certificate is kept
	// in CertDir and used from then on.
	Bootstrap Mode = "bootstrap token"
	// Kubeconfig: the node config gives a ready kubeconfig.
	Kubeconfig Mode = "kubeconfig"
)

// Setup is what the kubelet of one node runs with.
type Setup struct {
	Mode  Mode
	Files []File   // written before the kubelet starts
	Args  []string // its command line, without argv[0]
	// APIServer and CA are the cluster the node joins (Bootstrap; for Kubeconfig, what its
	// kubeconfig says is not parsed here): for the connection probe's messages.
	APIServer string
	CA        string
	Token     nodeconfig.Secret
}

// File is one file the kubelet needs.
type File struct {
	Path string
	Data []byte
	Mode os.FileMode
	// Keep leaves an existing file alone: the kubelet rewrites it (its kubeconfig after TLS
	// bootstrapping points at the rotated certificate).
	Keep bool
}

// Plan works out the kubelet's files and command line for a node named hostname whose address
// is nodeIP ("" lets the kubelet choose) from the profile's [kubelet] table and the node config
// (nil: none). The node config is validated already; Plan only assembles.
func Plan(p profiles.Kubelet, hostname, nodeIP string, nc *nodeconfig.Config) (*Setup, error) {
	if nc == nil {
		nc = &nodeconfig.Config{}
	}
	k := nc.Kubernetes
	s := &Setup{Mode: Standalone, APIServer: k.APIServer, CA: k.CA, Token: k.BootstrapToken}
	cfg := configuration(p, nc)
	args := []string{
		"--config=" + ConfigPath,
		"--hostname-override=" + hostname,
		"--cert-dir=" + CertDir,
	}
	if nodeIP != "" {
		// Without it a node with no default route reports every address, IPv6 link and
		// site-local ones first, and the API server may reach for one of those.
		args = append(args, "--node-ip="+nodeIP)
	}
	switch {
	case k.Kubeconfig != "":
		s.Mode = Kubeconfig
		s.Files = append(s.Files, File{Path: KubeconfigPath, Data: []byte(k.Kubeconfig), Mode: 0o600})
		args = append(args, "--kubeconfig="+KubeconfigPath)
	case k.BootstrapToken != "":
		s.Mode = Bootstrap
		boot, err := bootstrapKubeconfig(k.APIServer, k.CA, string(k.BootstrapToken))
		if err != nil {
			return nil, err
		}
		s.Files = append(s.Files, File{Path: BootstrapPath, Data: boot, Mode: 0o600})
		// The kubelet writes KubeconfigPath itself once its certificate is signed, and uses it
		// from then on; the bootstrap one is read only while that file is missing.
		args = append(args, "--bootstrap-kubeconfig="+BootstrapPath, "--kubeconfig="+KubeconfigPath)
	}
	if k.CA != "" {
		// Clients of the kubelet's own API (the API server's kubelet-client certificate) are
		// authenticated against the cluster CA.
		s.Files = append(s.Files, File{Path: ClientCAPath, Data: []byte(k.CA), Mode: 0o644})
		cfg.Authentication.X509.ClientCAFile = ClientCAPath
	}
	if s.Mode == Standalone {
		// No API server to ask: the kubelet authorizes everything its local clients ask, and
		// listens on loopback only (see configuration).
		cfg.Authentication.Webhook.Enabled = false
		cfg.Authentication.Anonymous.Enabled = false
		cfg.Authorization.Mode = "AlwaysAllow"
		cfg.Address = "127.0.0.1"
	}
	if labels := nc.Node.Labels; len(labels) > 0 {
		var l []string
		for _, key := range slices.Sorted(maps.Keys(labels)) {
			l = append(l, key+"="+labels[key])
		}
		args = append(args, "--node-labels="+strings.Join(l, ","))
	}
	for _, name := range slices.Sorted(maps.Keys(k.StaticPods)) {
		s.Files = append(s.Files, File{Path: filepath.Join(StaticPodPath, name), Data: []byte(k.StaticPods[name]), Mode: 0o644})
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	s.Files = append(s.Files, File{Path: ConfigPath, Data: append(data, '\n'), Mode: 0o644})
	s.Args = args
	return s, nil
}

// kubeletConfiguration is the part of KubeletConfiguration (kubelet.config.k8s.io/v1beta1) ingot
// sets; the kubelet defaults the rest.
type kubeletConfiguration struct {
	APIVersion                    string            `json:"apiVersion"`
	Kind                          string            `json:"kind"`
	Address                       string            `json:"address,omitempty"`
	ContainerRuntimeEndpoint      string            `json:"containerRuntimeEndpoint"`
	ImageServiceEndpoint          string            `json:"imageServiceEndpoint"`
	CgroupDriver                  string            `json:"cgroupDriver"`
	StaticPodPath                 string            `json:"staticPodPath"`
	ResolvConf                    string            `json:"resolvConf"`
	ClusterDNS                    []string          `json:"clusterDNS,omitempty"`
	ClusterDomain                 string            `json:"clusterDomain,omitempty"`
	MaxPods                       int               `json:"maxPods"`
	RotateCertificates            bool              `json:"rotateCertificates"`
	ServerTLSBootstrap            bool              `json:"serverTLSBootstrap"`
	Authentication                authentication    `json:"authentication"`
	Authorization                 authorization     `json:"authorization"`
	RegisterWithTaints            []taint           `json:"registerWithTaints,omitempty"`
	EvictionHard                  map[string]string `json:"evictionHard"`
	EvictionMinimumReclaim        map[string]string `json:"evictionMinimumReclaim"`
	ImageGCHighThresholdPercent   int               `json:"imageGCHighThresholdPercent"`
	ImageGCLowThresholdPercent    int               `json:"imageGCLowThresholdPercent"`
	ContainerLogMaxSize           string            `json:"containerLogMaxSize"`
	ContainerLogMaxFiles          int               `json:"containerLogMaxFiles"`
	FailSwapOn                    bool              `json:"failSwapOn"`
	NodeStatusUpdateFrequency     string            `json:"nodeStatusUpdateFrequency"`
	ProtectKernelDefaults         bool              `json:"protectKernelDefaults"`
	MakeIPTablesUtilChains        *bool             `json:"makeIPTablesUtilChains,omitempty"`
	KernelMemcgNotification       bool              `json:"kernelMemcgNotification"`
	LocalStorageCapacityIsolation bool              `json:"localStorageCapacityIsolation"`
	EnableControllerAttachDetach  bool              `json:"enableControllerAttachDetach"`
	ReadOnlyPort                  int               `json:"readOnlyPort"`
	VolumePluginDir               string            `json:"volumePluginDir"`
}

type authentication struct {
	X509 struct {
		ClientCAFile string `json:"clientCAFile,omitempty"`
	} `json:"x509"`
	Webhook struct {
		Enabled bool `json:"enabled"`
	} `json:"webhook"`
	Anonymous struct {
		Enabled bool `json:"enabled"`
	} `json:"anonymous"`
}

type authorization struct {
	Mode string `json:"mode"`
}

type taint struct {
	Key    string `json:"key"`
	Value  string `json:"value,omitempty"`
	Effect string `json:"effect"`
}

// configuration is the node's KubeletConfiguration before the join mode adjusts it.
func configuration(p profiles.Kubelet, nc *nodeconfig.Config) *kubeletConfiguration {
	no := false
	c := &kubeletConfiguration{
		APIVersion:               kubeletConfigAPI,
		Kind:                     "KubeletConfiguration",
		ContainerRuntimeEndpoint: RuntimeEndpoint,
		ImageServiceEndpoint:     RuntimeEndpoint,
		// ingot has no systemd: pods' cgroups are plain directories under the kubelet's root.
		CgroupDriver:       "cgroupfs",
		StaticPodPath:      StaticPodPath,
		ResolvConf:         DefaultResolvConf,
		ClusterDNS:         p.ClusterDNS,
		ClusterDomain:      p.ClusterDomain,
		MaxPods:            p.MaxPods,
		RotateCertificates: true,
		// The kubelet serves with a certificate it signs itself: an API server does not check a
		// kubelet's serving certificate unless told a CA, and nothing has to approve a serving
		// CSR for exec, logs and port-forward to work.
		ServerTLSBootstrap: false,
		Authorization:      authorization{Mode: "Webhook"},
		// The state partition holds images, layers and logs together: evict before it is full,
		// and collect unused images before eviction has to.
		EvictionHard: map[string]string{
			"memory.available":  "100Mi",
			"nodefs.available":  "10%",
			"nodefs.inodesFree": "5%",
			"imagefs.available": "15%",
		},
		EvictionMinimumReclaim: map[string]string{
			"nodefs.available":  evictionMinReclaim,
			"imagefs.available": evictionMinReclaim,
		},
		ImageGCHighThresholdPercent:   imageGCHighPercent,
		ImageGCLowThresholdPercent:    imageGCLowPercent,
		ContainerLogMaxSize:           containerLogMaxSize,
		ContainerLogMaxFiles:          containerLogMaxFiles,
		FailSwapOn:                    true,
		NodeStatusUpdateFrequency:     nodeStatusFrequency,
		MakeIPTablesUtilChains:        &no, // kube-proxy in nftables mode needs none of them
		KernelMemcgNotification:       false,
		LocalStorageCapacityIsolation: true,
		EnableControllerAttachDetach:  true,
		ReadOnlyPort:                  0,
		// The default, /usr/libexec/kubernetes/…, is on the read-only root.
		VolumePluginDir: VolumePluginDir,
	}
	c.Authentication.Webhook.Enabled = true
	c.Authentication.Anonymous.Enabled = false
	for _, t := range nc.Node.Taints {
		kv, effect, _ := strings.Cut(t, ":")
		k, v, _ := strings.Cut(kv, "=")
		c.RegisterWithTaints = append(c.RegisterWithTaints, taint{Key: k, Value: v, Effect: effect})
	}
	return c
}

// bootstrapKubeconfig is the kubeconfig TLS bootstrapping starts from: the API server, its CA
// and the token.
func bootstrapKubeconfig(server, ca, token string) ([]byte, error) {
	if server == "" || ca == "" {
		return nil, fmt.Errorf("kubelet: a bootstrap token needs [kubernetes] api_server and ca")
	}
	kc := map[string]any{
		"apiVersion": kubeconfigAPI,
		"kind":       "Config",
		"clusters": []any{map[string]any{"name": defaultClusterName, "cluster": map[string]any{
			"server": server, "certificate-authority-data": base64.StdEncoding.EncodeToString([]byte(ca)),
		}}},
		"users":           []any{map[string]any{"name": bootstrapUser, "user": map[string]any{"token": token}}},
		"contexts":        []any{map[string]any{"name": defaultContextName, "context": map[string]any{"cluster": defaultClusterName, "user": bootstrapUser}}},
		"current-context": defaultContextName,
	}
	return json.MarshalIndent(kc, "", "  ")
}

// Write writes the setup's files, creating their directories (0700 for the kubelet's own).
func (s *Setup) Write(root string) error {
	for _, dir := range []string{Dir, CertDir, StaticPodPath, filepath.Dir(LogPath)} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o700); err != nil {
			return fmt.Errorf("kubelet: %w", err)
		}
	}
	for _, f := range s.Files {
		p := filepath.Join(root, f.Path)
		if f.Keep {
			if _, err := os.Stat(p); err == nil {
				continue
			}
		}
		tmp := p + ".tmp"
		if err := os.WriteFile(tmp, f.Data, f.Mode); err != nil {
			return fmt.Errorf("kubelet: write %s: %w", f.Path, err)
		}
		if err := os.Chmod(tmp, f.Mode); err != nil {
			return fmt.Errorf("kubelet: write %s: %w", f.Path, err)
		}
		if err := os.Rename(tmp, p); err != nil {
			return fmt.Errorf("kubelet: write %s: %w", f.Path, err)
		}
	}
	return nil
}

// Iface is a network interface as NodeIP sees it.
type Iface struct {
	Name  string
	Addrs []netip.Prefix
}

// NodeIP picks the node's address for the kubelet: the first global unicast IPv4 address of an
// interface that is the node's own (not loopback, not the pod network's bridge or veths), else
// the first such IPv6 one; "" when there is none.
func NodeIP(ifaces []Iface) string {
	pod := func(name string) bool {
		return name == "lo" || strings.HasPrefix(name, "cni") || strings.HasPrefix(name, "veth")
	}
	for _, want4 := range []bool{true, false} {
		for _, ifc := range ifaces {
			if pod(ifc.Name) {
				continue
			}
			for _, a := range ifc.Addrs {
				ip := a.Addr()
				if ip.Is4() == want4 && ip.IsGlobalUnicast() && !(ip.Is6() && isSiteLocal(ip)) {
					return ip.String()
				}
			}
		}
	}
	return ""
}

// isSiteLocal: fec0::/10, deprecated, but what QEMU's user network hands out over SLAAC.
func isSiteLocal(ip netip.Addr) bool {
	b := ip.As16()
	return b[0] == 0xfe && b[1]&0xc0 == 0xc0
}
