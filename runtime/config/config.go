// Package config reads the runtime's configuration: a containerd config.toml
// (version 2 or 3), accepted as is, and containerd's certs.d/<host>/hosts.toml
// registry files.
//
// Parse turns either config layout into one normalized Config with ingot's
// defaults filled in. Every key containerd documents is either honoured (it
// lands in Config) or accepted with a Warning saying why it means nothing on
// ingot; an unknown key is a Warning naming it; a bad value is an *Error naming
// file, line and key. `ingot build` runs Parse so that no bad config reaches a
// node.
//
// The package only reads and checks files: it must never create directories,
// open sockets or contact a registry.
package config

import (
	"fmt"
	"log/slog"
	"os"
	"time"
)

// Config is the runtime's configuration. A zero field means what its comment
// says; Default and Parse fill in ingot's defaults.
type Config struct {
	Version int // 2 or 3: the layout the file was written in (Default: 3)

	RootDir  string // root: persistent data (content, snapshots, metadata)
	StateDir string // state: runtime state, gone at reboot (sockets, shim state)
	OOMScore int    // oom_score: the runtime daemon's oom_score_adj; 0 leaves it alone

	GRPC    GRPC
	Log     Log     // [debug]
	Metrics Metrics // [metrics]
	Stream  Stream  // CRI streaming server (exec, attach, port-forward)

	// SandboxImage is the pause image configured for kubelet's benefit. ingot's
	// sandbox is its built-in pause process, so this image is never pulled; the
	// runtime reports it as the pinned sandbox image if it is present.
	SandboxImage string
	// MaxContainerLogLineSize splits longer container log lines into partial
	// (P) CRI log entries; 0 means no limit (containerd's -1).
	MaxContainerLogLineSize int
	// CgroupDriver is always CgroupDriverCgroupfs: ingot has no systemd.
	CgroupDriver string
	// DefaultRuntime names the entry of Runtimes used when a pod names no
	// runtime handler.
	DefaultRuntime string
	// Runtimes are the CRI runtime handlers ingot can serve, by name. Only
	// runc-compatible entries appear; others were dropped with a warning.
	Runtimes map[string]Runtime
	// DrainExecSyncIOTimeout bounds how long ExecSync waits for output after
	// the exec'd process exits; 0 waits for EOF.
	DrainExecSyncIOTimeout time.Duration

	Images     Images
	Unpack     Unpack // [plugins."dev.ingot.v1.unpack"]
	CNI        CNI
	Registry   Registry
	Containers ContainerPolicy
}

// GRPC is where the CRI gRPC server listens.
type GRPC struct {
	Address            string // unix socket path
	UID, GID           int    // owner of the socket
	MaxRecvMessageSize int    // bytes
	MaxSendMessageSize int    // bytes
	// TCPAddress, if set, also serves CRI on TCP (host:port), with TLS when
	// TCPTLSCert and TCPTLSKey are set and client certificates checked
	// against TCPTLSCA when that is set. Empty unless disable_tcp_service =
	// false: ingot serves nothing but CRI.
	TCPAddress                      string
	TCPTLSCA, TCPTLSCert, TCPTLSKey string
}

// Log configures the runtime's slog output.
type Log struct {
	Level  slog.Level // containerd's "trace" is LevelDebug-4
	Format string     // LogFormatText or LogFormatJSON
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Address string // host:port serving /metrics; "" = off
	// GRPCHistogram adds a latency histogram per CRI method (grpc_histogram), as containerd
	// does: off by default because it multiplies the series a scrape returns.
	GRPCHistogram bool
}

// Stream configures the CRI streaming server.
type Stream struct {
	Address     string        // IP to listen on
	Port        string        // port, "0" = any free port
	IdleTimeout time.Duration // close idle streams after this long
	TLS         bool          // serve with TLS; self-signed unless TLSCertFile/TLSKeyFile
	TLSCertFile string
	TLSKeyFile  string
}

// Images configures pulling and unpacking.
type Images struct {
	Snapshotter string // SnapshotterOverlayfs or SnapshotterNative
	// MaxConcurrentDownloads bounds the layer fetches of one image pull;
	// 0 means no limit.
	MaxConcurrentDownloads int
	// PullProgressTimeout cancels a pull that has read no byte for this long;
	// 0 means never.
	PullProgressTimeout time.Duration
	// DiscardUnpackedLayers drops compressed layer blobs once unpacked.
	DiscardUnpackedLayers bool
	// PullWithSyncFS syncs the filesystem after unpacking each layer.
	PullWithSyncFS bool
}

// Unpack bounds what unpacking one image layer may cost, so that a small
// hostile layer cannot take minutes of CPU, the node's memory or all its
// inodes. containerd has no such limits; ingot reads them from a table of its
// own, which containerd ignores like any plugin it does not have:
//
//	[plugins."dev.ingot.v1.unpack"]
//	  max_path_length = 4096               # bytes of a path in the layer
//	  max_path_depth = 256                 # components of a path
//	  max_entries = 1048576                # tar entries of one layer
//	  max_uncompressed_bytes = 68719476736 # 64 GiB of uncompressed tar
//
// Every value must be positive; the defaults (shown) are above anything a
// real image has: PATH_MAX; a depth no real tree nears (one this deep needs
// components of 16 bytes or less to fit in PATH_MAX); a million entries, the
// inodes of a whole 16 GiB ext4 filesystem; and more than the largest layer a
// major registry accepts (ECR's 52,000 MiB). A layer over a limit fails the
// pull with an error naming the key and the layer, and nothing of it is kept.
type Unpack struct {
	MaxPathLength        int // max_path_length
	MaxPathDepth         int // max_path_depth
	MaxEntries           int // max_entries
	MaxUncompressedBytes int // max_uncompressed_bytes
}

// Runtime is one CRI runtime handler. ingot runs every container with its
// built-in libcontainer, so these are the runc options it can honour.
type Runtime struct {
	Type string // RuntimeRuncV2 (io.containerd.runc.v1 is read as v2)
	// PodAnnotations and ContainerAnnotations are path.Match patterns of
	// annotations copied into the OCI spec (pod ones into both sandbox and
	// containers).
	PodAnnotations       []string
	ContainerAnnotations []string
	// PrivilegedWithoutHostDevices keeps host devices out of privileged
	// containers; ...AllDevicesAllowed still allows all in the device cgroup.
	PrivilegedWithoutHostDevices                  bool
	PrivilegedWithoutHostDevicesAllDevicesAllowed bool
	NoPivotRoot                                   bool // options.NoPivotRoot
	NoNewKeyring                                  bool // options.NoNewKeyring
}

// CNI locates the CNI plugins and their network configuration.
type CNI struct {
	BinDirs []string // searched in order for plugin binaries
	ConfDir string
	// MaxConfNum is how many config files of ConfDir (in lexical order) are
	// loaded; 0 means all.
	MaxConfNum int
	// IPPref picks the pod IP reported to kubelet: "ipv4" (first IPv4),
	// "ipv6" (first IPv6) or "cni" (first in the CNI result).
	IPPref string
}

// Registry holds the registry settings of config.toml. Resolve a host with
// Hosts, which also reads hosts.toml under ConfigPath.
type Registry struct {
	ConfigPath string                    // directory of <host>/hosts.toml files; "" = none
	Mirrors    map[string][]string       // host (or "*") -> endpoint URLs, tried in order before the host itself
	Configs    map[string]RegistryConfig // registry host (host[:port]) -> TLS and credentials
	Headers    map[string][]string       // HTTP headers sent to every registry
}

// RegistryConfig is registry.configs."<host>".
type RegistryConfig struct {
	TLS  *TLS  // nil if not configured
	Auth *Auth // nil if not configured
}

// TLS is how to talk TLS to a registry. Paths are as written in the file.
type TLS struct {
	CAFile             string
	CertFile, KeyFile  string
	InsecureSkipVerify bool
}

// Auth is a registry credential. Auth, if set, is base64("user:password")
// and has been checked to decode; IdentityToken is an OAuth refresh token.
type Auth struct {
	Username, Password string
	Auth               string
	IdentityToken      string
}

// ContainerPolicy is how CRI requests turn into OCI specs.
type ContainerPolicy struct {
	DisableAppArmor bool // ignore AppArmor profiles in requests
	// UnsetSeccompProfile applies when a request names no seccomp profile:
	// "" (unconfined), "unconfined", "runtime/default" or "localhost/<path>".
	UnsetSeccompProfile                string
	RestrictOOMScoreAdj                bool // never set oom_score_adj below the runtime's own
	DisableProcMount                   bool // ignore ProcMount (Kubernetes <= 1.11)
	DeviceOwnershipFromSecurityContext bool // devices owned by RunAsUser/RunAsGroup
	IgnoreImageDefinedVolumes          bool // no volumes for the image's VOLUME list
	EnableUnprivilegedPorts            bool // net.ipv4.ip_unprivileged_port_start=0 in pod netns
	EnableUnprivilegedICMP             bool // net.ipv4.ping_group_range="0 2147483647" in pod netns
	TolerateMissingHugetlbController   bool // hugepage limits without the controller are dropped, not errors
	DisableHugetlbController           bool // never set hugepage limits
}

// Defaults and accepted values.
const (
	DefaultRootDir        = "/var/lib/ingot"
	DefaultStateDir       = "/run/ingot"
	DefaultSocket         = "/run/ingot/ingot.sock"
	DefaultMaxMessageSize = 16 << 20
	DefaultMaxLogLineSize = 16384
	DefaultMaxDownloads   = 3
	DefaultPullProgress   = 5 * time.Minute
	DefaultStreamAddress  = "127.0.0.1"
	DefaultStreamPort     = "0"
	DefaultStreamIdle     = 4 * time.Hour
	DefaultCNIBinDir      = "/opt/cni/bin"
	DefaultCNIConfDir     = "/etc/cni/net.d"
	DefaultRuntimeName    = "runc"
	DefaultSandboxImage   = "registry.k8s.io/pause:3.10"
	RuntimeRuncV2         = "io.containerd.runc.v2"
	SnapshotterOverlayfs  = "overlayfs"
	SnapshotterNative     = "native" // plain copies; for roots where overlayfs cannot stack
	CgroupDriverCgroupfs  = "cgroupfs"
	LogFormatText         = "text"
	LogFormatJSON         = "json"
	DefaultCNIMaxConfNum  = 1
	DefaultCNIIPPref      = "ipv4"

	DefaultUnpackMaxPathLength = 4096
	DefaultUnpackMaxPathDepth  = 256
	DefaultUnpackMaxEntries    = 1 << 20
	DefaultUnpackMaxBytes      = 64 << 30
)

// Default returns the configuration of a node without a config.toml.
func Default() *Config {
	return &Config{
		Version:  3,
		RootDir:  DefaultRootDir,
		StateDir: DefaultStateDir,
		GRPC: GRPC{
			Address:            DefaultSocket,
			MaxRecvMessageSize: DefaultMaxMessageSize,
			MaxSendMessageSize: DefaultMaxMessageSize,
		},
		Log: Log{Level: slog.LevelInfo, Format: LogFormatText},
		Stream: Stream{
			Address:     DefaultStreamAddress,
			Port:        DefaultStreamPort,
			IdleTimeout: DefaultStreamIdle,
		},
		SandboxImage:            DefaultSandboxImage,
		MaxContainerLogLineSize: DefaultMaxLogLineSize,
		CgroupDriver:            CgroupDriverCgroupfs,
		DefaultRuntime:          DefaultRuntimeName,
		Runtimes:                map[string]Runtime{DefaultRuntimeName: {Type: RuntimeRuncV2}},
		Images: Images{
			Snapshotter:            SnapshotterOverlayfs,
			MaxConcurrentDownloads: DefaultMaxDownloads,
			PullProgressTimeout:    DefaultPullProgress,
		},
		Unpack: Unpack{
			MaxPathLength:        DefaultUnpackMaxPathLength,
			MaxPathDepth:         DefaultUnpackMaxPathDepth,
			MaxEntries:           DefaultUnpackMaxEntries,
			MaxUncompressedBytes: DefaultUnpackMaxBytes,
		},
		CNI: CNI{
			BinDirs:    []string{DefaultCNIBinDir},
			ConfDir:    DefaultCNIConfDir,
			MaxConfNum: DefaultCNIMaxConfNum,
			IPPref:     DefaultCNIIPPref,
		},
		Registry: Registry{
			Mirrors: map[string][]string{},
			Configs: map[string]RegistryConfig{},
			Headers: map[string][]string{},
		},
		Containers: ContainerPolicy{
			EnableUnprivilegedPorts:          true,
			EnableUnprivilegedICMP:           true,
			TolerateMissingHugetlbController: true,
			DisableHugetlbController:         true,
		},
	}
}

// Load reads and parses the config.toml at path; see Parse.
func Load(path string) (*Config, []Warning, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read runtime config: %w", err)
	}
	return Parse(path, data)
}

// Parse reads a containerd config.toml, version 2 or 3. filename is used only
// in messages. The error, if any, is an *Error or several joined with
// errors.Join, in file order; warnings come in file order too.
func Parse(filename string, data []byte) (*Config, []Warning, error) {
	d, err := readDoc(filename, data)
	if err != nil {
		return nil, nil, err
	}
	c := Default()
	decode(d, c)
	if err := d.err(); err != nil {
		return nil, d.warnings(), err
	}
	return c, d.warnings(), nil
}
