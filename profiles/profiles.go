// Package profiles reads image profiles: TOML files that say what goes into
// an ingot node image (kernel package and modules, sysctls, extra payloads,
// disk layout and the services init supervises).
//
// Parsing is strict — an unknown or misspelt key is an error, not something
// silently ignored — and every error is one line naming the file, the line and
// the key, so `ingot profiles validate` output can be acted on directly.
//
// The package only describes images; it must never read the host, download
// anything or build anything.
package profiles

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"ingot.dev/ingot/internal/tomlpos"
)

// Profile is the parsed, defaulted and validated content of a profile file.
type Profile struct {
	Name        string            `toml:"name"`        // required, [a-z0-9-]+
	Description string            `toml:"description"` // one line for `ingot profiles list`
	Hostname    string            `toml:"hostname"`    // RFC 1123 hostname; default "ingot"
	Kernel      Kernel            `toml:"kernel"`
	Sysctls     map[string]string `toml:"sysctls"` // e.g. "net.ipv4.ip_forward" = "1"
	Bundles     []string          `toml:"bundles"` // extra payloads, see BundleBusybox
	Disk        Disk              `toml:"disk"`
	Runtime     Runtime           `toml:"runtime"`
	Kubelet     Kubelet           `toml:"kubelet"`
	Network     Network           `toml:"network"`
	Upgrade     Upgrade           `toml:"upgrade"`
	// NTP names the time servers init keeps the clock in sync with when neither the node config
	// nor DHCP names any: host names or addresses, each optionally with :port. Empty: none.
	NTP      []string  `toml:"ntp"`
	Services []Service `toml:"service"` // [[service]] tables
}

// Runtime configures ingot's CRI runtime, which init starts and supervises.
type Runtime struct {
	// Enabled starts the runtime at boot; the node is ready once its socket answers. Default true.
	Enabled bool `toml:"enabled"`
	// Config is a containerd config.toml (version 2 or 3), written to /etc/ingot/config.toml.
	// It is validated at build time, so a bad config never reaches a node. Empty: defaults.
	Config string `toml:"config"`
	// Echo copies the runtime's log to the console as well. Off by default: its log is kept in
	// /run/ingot/services/runtime.log (`ingot-node logs runtime`) and a console shell stays clean.
	Echo bool `toml:"echo"`
}

// Kubelet configures the kubelet that init starts once the runtime answers (see BundleKubelet).
// Its join settings, labels and taints come from the node config; a node without join settings
// runs it standalone (static pods only).
type Kubelet struct {
	// Enabled starts the kubelet; it needs the runtime and the kubelet bundle (or Binary).
	Enabled bool `toml:"enabled"`
	// Binary is a kubelet on the build host shipped instead of the bundled build (an absolute
	// path); it must be for the image's architecture.
	Binary string `toml:"binary"`
	// ClusterDNS are the cluster DNS service's addresses pods resolve names with; empty: pods
	// get the node's resolv.conf. ClusterDomain is the cluster's DNS domain.
	ClusterDNS    []string `toml:"cluster_dns"`
	ClusterDomain string   `toml:"cluster_domain"`
	// MaxPods is the most pods the node runs (the kubelet's maxPods).
	MaxPods int `toml:"max_pods"`
	// Echo copies the kubelet's log to the console too (it is always in
	// /run/ingot/services/kubelet.log and /var/log/kubelet.log).
	Echo bool `toml:"echo"`
}

// Network is the node's network configuration, applied by init before services start, and the
// pod network's CNI configuration.
type Network struct {
	Interfaces []Interface `toml:"interface"` // [[network.interface]] tables
	Bonds      []Bond      `toml:"bond"`      // created first
	Bridges    []Bridge    `toml:"bridge"`    // then bridges (members may be bonds)
	VLANs      []VLAN      `toml:"vlan"`      // then VLANs; interfaces then configure any of these
	Routes     []Route     `toml:"route"`     // added last
	// CNI is a CNI conflist (JSON) written to /etc/cni/net.d/10-ingot.conflist and checked at build
	// time. Empty: the runtime's built-in default (bridge cni0, 10.88.0.0/16). A list naming plugin
	// types ingot does not implement runs through their binaries in /opt/cni/bin (see
	// BundleCNIPlugins).
	CNI string `toml:"cni"`
}

// Bond is a bonding link with member links.
type Bond struct {
	Name       string   `toml:"name"`
	Mode       string   `toml:"mode"` // balance-rr, active-backup, balance-xor, broadcast, 802.3ad, balance-tlb, balance-alb
	Interfaces []string `toml:"interfaces"`
}

// Bridge is a bridge with member links.
type Bridge struct {
	Name       string   `toml:"name"`
	Interfaces []string `toml:"interfaces"`
}

// VLAN is an 802.1Q link on a parent link.
type VLAN struct {
	Name string `toml:"name"`
	Link string `toml:"link"`
	ID   int    `toml:"id"`
}

// Route is a static route.
type Route struct {
	To        string `toml:"to"`        // CIDR; "default" or "" is the default route
	Via       string `toml:"via"`       // gateway address; "" for an on-link route
	Interface string `toml:"interface"` // "" lets the kernel pick from the gateway
}

// Interface is one link brought up with static addresses and/or DHCP, or, with Match, every link
// of a kind brought up with DHCP.
type Interface struct {
	Name string `toml:"name"` // e.g. "eth0"
	// Match names a kind of link instead of one link: MatchEthernet is every wired Ethernet NIC
	// the machine has (a device behind it, not wireless), except links configured by name or
	// enslaved to a bond or bridge here. For machines whose NICs are not known when the image is
	// built: each is brought up and asked for a lease at once, and the boot goes on once one has
	// an address (links without a cable are reported and left down).
	Match     string   `toml:"match"`
	DHCP      bool     `toml:"dhcp"`      // obtain (and keep renewing) an IPv4 lease
	Addresses []string `toml:"addresses"` // CIDR, e.g. "10.0.2.15/24"
	Gateway   string   `toml:"gateway"`   // default route via this address; "" none
	MTU       int      `toml:"mtu"`       // 0 keeps the driver's
}

// Values of Kernel.Console.
const (
	ConsoleSerial = "serial" // the arch's first serial port: ttyS0 on x86_64, ttyAMA0 on arm64
	ConsoleVGA    = "vga"    // the screen (tty0): VGA text or the firmware's framebuffer
)

// ConsoleDevices turns Console into kernel console names, serial standing for the arch's port.
func (k Kernel) ConsoleDevices(serial string) []string {
	var devs []string
	for _, c := range k.Console {
		if c == ConsoleVGA {
			devs = append(devs, "tty0")
		} else {
			devs = append(devs, serial)
		}
	}
	return devs
}

// MatchEthernet is Interface.Match for every wired Ethernet NIC.
const MatchEthernet = "ethernet"

// Kernel selects the kernel and what init does with it at boot.
type Kernel struct {
	// Package is the Debian package providing the kernel; "{arch}" is
	// replaced by amd64 or arm64 (see PackageFor).
	Package string `toml:"package"`
	// Cmdline holds extra kernel arguments, appended after the arch's
	// console arguments.
	Cmdline []string `toml:"cmdline"`
	// Console lists the consoles the kernel and PID 1 write to, each ConsoleSerial or
	// ConsoleVGA; the last is /dev/console, where a console service (the dev shell) runs.
	// Default: the serial port alone.
	Console []string `toml:"console"`
	// Modules are loaded at boot, each with its dependencies, before anything else.
	Modules []string `toml:"modules"`
	// ModuleSets name classes of drivers to ship (ModuleSetNames): PID 1 loads those the
	// machine's devices match, found as udev's coldplug finds them, so one image boots machines
	// whose disks and NICs differ. Members the kernel lacks are skipped (Debian's cloud kernels
	// have few hardware drivers); members built into the kernel need no shipping.
	ModuleSets []string `toml:"module_sets"`
	// Firmware names Debian packages holding firmware files (firmware-realtek,
	// firmware-misc-nonfree, …; Debian's non-free-firmware component). The image ships the files
	// of theirs that its modules name (modinfo firmware=) in /lib/firmware, and the manifest lists
	// them, and the files modules name that none of the packages has.
	Firmware []string `toml:"firmware"`
}

// moduleSets are the driver classes a profile may ship. Each lists modules by name; the builder
// ships the ones the chosen kernel has, with their dependencies.
var moduleSets = map[string][]string{
	// QEMU, KVM and most clouds' paravirtual devices.
	"virtio": {"virtio_pci", "virtio_mmio", "virtio_blk", "virtio_scsi", "virtio_net", "virtio_rng", "virtio_console"},
	// Disks: NVMe, SATA/AHCI (and its SCSI disk layer), SAS HBAs common in servers, and CD drives
	// (the ISO boots from one).
	"storage": {"nvme", "ahci", "ata_piix", "sd_mod", "sr_mod", "virtio_blk", "virtio_scsi", "mpt3sas", "megaraid_sas", "isofs"},
	// Wired NICs found in servers and small machines.
	"network": {"e1000", "e1000e", "igb", "igc", "ixgbe", "i40e", "ice", "mlx4_en", "mlx5_core", "bnxt_en", "tg3", "r8169", "virtio_net"},
	// USB sticks and USB NICs need a host controller driver first.
	"usb-storage": {"xhci_pci", "ehci_pci", "ohci_pci", "uhci_hcd", "usb_storage", "uas", "sd_mod"},
}

// ModuleSetNames are the names ModuleSets may use, sorted.
func ModuleSetNames() []string {
	names := make([]string, 0, len(moduleSets))
	for n := range moduleSets {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ModuleSet returns a set's modules; nil for a name that is not a set.
func ModuleSet(name string) []string { return slices.Clone(moduleSets[name]) }

// Disk sizes the image's partitions.
type Disk struct {
	ESPMiB   int `toml:"esp_mib"`   // EFI system partition, >= MinESPMiB
	StateMiB int `toml:"state_mib"` // writable state partition, >= MinStateMiB
}

// Upgrade governs image swaps: how long a newly installed image has, from kernel start, to pass
// its health checks (the runtime answering, the kubelet's Node Ready) before the node gives up on
// it and goes back to the image it came from.
type Upgrade struct {
	HealthTimeoutS int `toml:"health_timeout_s"` // seconds; default DefaultHealthTimeoutS
}

// Service is one process supervised by init.
type Service struct {
	Name    string   `toml:"name"`    // required, unique, [a-z0-9-]+
	Command []string `toml:"command"` // required; Command[0] is an absolute path
	Env     []string `toml:"env"`     // KEY=VALUE each
	Console bool     `toml:"console"` // owns the serial console as controlling tty; at most one service
	Echo    bool     `toml:"echo"`    // copies its output, prefixed with its name, to the console
	Restart string   `toml:"restart"` // RestartAlways (default), RestartOnFailure or RestartNever
}

// Values of Service.Restart.
const (
	RestartAlways    = "always"
	RestartOnFailure = "on-failure"
	RestartNever     = "never"
)

// Bundles: BundleBusybox adds Debian's busybox-static for the target arch; BundleCrictl adds
// crictl (cri-tools, built from the Go module proxy) and an /etc/crictl.yaml for the socket.
// BundleCNIPlugins adds the CNI reference plugins (bridge, host-local, loopback, portmap, tuning)
// to /opt/cni/bin. BundleKubelet adds the kubelet (Kubernetes' own, built from the Go module
// proxy, or [kubelet] binary) and the mount/umount it calls for volumes.
const (
	BundleBusybox    = "busybox"
	BundleCrictl     = "crictl"
	BundleCNIPlugins = "cni-plugins"
	BundleKubelet    = "kubelet"
)

// Defaults and lower bounds.
const (
	DefaultHostname       = "ingot"
	DefaultKernelPackage  = "linux-image-cloud-{arch}"
	DefaultESPMiB         = 256
	DefaultStateMiB       = 256
	DefaultClusterDomain  = "cluster.local"
	DefaultMaxPods        = 110
	MinESPMiB             = 100
	MinStateMiB           = 64
	DefaultHealthTimeoutS = 300
)

// PackageFor returns the kernel package name for arch ("amd64" or "arm64").
func (k Kernel) PackageFor(arch string) string {
	return strings.ReplaceAll(k.Package, "{arch}", arch)
}

// defaults returns the profile that a document is decoded onto: keys absent
// from the document keep these values.
func defaults() *Profile {
	return &Profile{
		Hostname: DefaultHostname,
		Kernel:   Kernel{Package: DefaultKernelPackage, Console: []string{ConsoleSerial}},
		Disk:     Disk{ESPMiB: DefaultESPMiB, StateMiB: DefaultStateMiB},
		Runtime:  Runtime{Enabled: true},
		Kubelet:  Kubelet{ClusterDomain: DefaultClusterDomain, MaxPods: DefaultMaxPods},
		Upgrade:  Upgrade{HealthTimeoutS: DefaultHealthTimeoutS},
	}
}

// Parse decodes, defaults and validates a profile. filename is used only in
// error messages. Errors are *Error.
func Parse(filename string, data []byte) (*Profile, error) {
	p := defaults()
	idx, err := tomlpos.Decode(filename, data, p)
	if err != nil {
		return nil, err
	}
	for i := range p.Services {
		// Presence, not emptiness: `restart = ""` is an error, not a default.
		if !idx.Has(tomlpos.Keys("service").Index(i).Key("restart")) {
			p.Services[i].Restart = RestartAlways
		}
	}
	if e := p.validate(); e != nil {
		e.File = filename
		e.Line = idx.LineOf(e.Key)
		return nil, e
	}
	return p, nil
}

//go:embed builtin/*.toml
var builtinFS embed.FS

// Names returns the names of the built-in profiles, sorted.
func Names() []string {
	ents, _ := fs.ReadDir(builtinFS, "builtin") // cannot fail: embedded
	var names []string
	for _, e := range ents {
		names = append(names, strings.TrimSuffix(e.Name(), ".toml"))
	}
	slices.Sort(names)
	return names
}

// Builtin returns the built-in profile name, parsed, and its TOML source as
// shipped (comments included). An unknown name wraps fs.ErrNotExist.
func Builtin(name string) (*Profile, []byte, error) {
	if !slices.Contains(Names(), name) {
		return nil, nil, fmt.Errorf("profile %q is not built in (built-in: %s): %w",
			name, strings.Join(Names(), ", "), fs.ErrNotExist)
	}
	file := path.Join("builtin", name+".toml")
	data, err := builtinFS.ReadFile(file)
	if err != nil {
		return nil, nil, fmt.Errorf("read built-in profile %q: %w", name, err)
	}
	p, err := Parse(file, data)
	if err != nil {
		return nil, nil, err
	}
	return p, data, nil
}

// Load returns the built-in profile called nameOrPath if there is one, and
// otherwise parses the file at that path.
func Load(nameOrPath string) (*Profile, error) {
	if slices.Contains(Names(), nameOrPath) {
		p, _, err := Builtin(nameOrPath)
		return p, err
	}
	data, err := os.ReadFile(nameOrPath)
	if err != nil {
		if !strings.ContainsRune(nameOrPath, '/') && !strings.HasSuffix(nameOrPath, ".toml") {
			return nil, fmt.Errorf("load profile %q: not a built-in profile (built-in: %s) nor a readable file: %w",
				nameOrPath, strings.Join(Names(), ", "), err)
		}
		return nil, fmt.Errorf("load profile: %w", err)
	}
	return Parse(nameOrPath, data)
}
