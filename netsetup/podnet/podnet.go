// Package podnet is ingot's built-in pod network: what the CNI bridge, host-local, loopback and
// portmap plugins do for a pod, done in-process over netlink and nftables from a parsed conflist.
//
// The runtime calls it from the sandbox RPCs:
//
//	RunPodSandbox:    pin a netns (netsetup/netns.New), Setup(ctx, PodNet{…}), start pause in it
//	PodSandboxStatus: Status(ctx, id) for the pod IPs
//	StopPodSandbox:   Teardown(ctx, id, netnsPath) — CRI says the network is released on stop
//	RemovePodSandbox: Teardown again (idempotent), then netns.Remove
//	runtime start:    Open (re-applies the bridge and the NAT table from the persisted pods),
//	                  then GC with the pods the runtime still knows
//
// hostNetwork pods (NamespaceMode_NODE for the network) get nothing from this package: the
// caller skips Setup and Teardown for them, and Status reports no IPs (CRI then shows none;
// kubelet uses the node's address).
//
// Every pod's state (addresses, interface, hostPorts) is persisted next to the leases, so Setup
// and Teardown are idempotent, Status answers after a restart, and the NAT table is rebuilt from
// it in one transaction on every change (see netsetup/nft). podnet never touches links, addresses
// or rules it did not create: the bridge it names, veths named ig<hash of the pod id>, and the
// table inet ingot.
package podnet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"

	"ingot.dev/ingot/netsetup/cniconf"
	"ingot.dev/ingot/netsetup/ipam"
	"ingot.dev/ingot/netsetup/netns"
	"ingot.dev/ingot/netsetup/nft"
	"ingot.dev/ingot/netsetup/podnetapi"
)

// The pod network's interface and its types live in netsetup/podnetapi, shared with the CNI
// delegation path; these names keep podnet's own callers and tests short.
type (
	PodNet      = podnetapi.PodNet
	PortMapping = podnetapi.PortMapping
	Result      = podnetapi.Result
	Provider    = podnetapi.Provider
)

// Error kinds, as in podnetapi.
var (
	ErrNotFound = podnetapi.ErrNotFound
	ErrInvalid  = podnetapi.ErrInvalid
)

// DBFile is the name of the database under Options.StateDir.
const DBFile = "podnet.db"

// LeasesFile, under Options.StateDir, lists the leased addresses, one "ADDRESS POD-ID" line
// each, rewritten whenever one is taken or released. It is a view for people and tests (the
// database is locked while the runtime runs), like the CNI host-local plugin's lease directory.
const LeasesFile = "leases"

// Options configure a Network.
type Options struct {
	// Conf is the network; nil means cniconf.Default(). It must be native (cniconf.List.Native).
	Conf *cniconf.List
	// StateDir holds the lease database; it must survive reboots (under /var), or a rebooted
	// node could hand a running pod's address to a new one after pods are restored.
	StateDir string
	// NodeNetNS is the node's network namespace file; "" means the runtime's own. Tests pass a
	// private namespace here so the host's network is never touched.
	NodeNetNS string
	Log       *slog.Logger
}

var _ Provider = (*Network)(nil)

// Network is the built-in pod network of one node. Its methods are safe for concurrent use.
type Network struct {
	conf    *cniconf.List
	bridge  *cniconf.Bridge
	portmap *cniconf.PortMap
	log     *slog.Logger
	db      *bolt.DB
	ipam    *ipam.Allocator
	node    *os.File        // the node's netns
	nl      *netlink.Handle // in the node's netns
	nft     *nft.Conn

	leasesFile string         // see LeasesFile
	leasesMu   sync.Mutex     // writeLeases: read the database and write the view as one step
	bridgeMu   sync.Mutex     // ensureBridge
	nftMu      sync.Mutex     // read records + apply the table
	podMu      [64]sync.Mutex // per pod, by hash of the id
}

// Open prepares the network: the database, the bridge, the sysctls and the NAT table for the
// pods already recorded, so pods that were running before a runtime restart keep their network.
func Open(ctx context.Context, o Options) (_ *Network, retErr error) {
	conf := o.Conf
	if conf == nil {
		conf = cniconf.Default()
	}
	if ok, why := conf.Native(); !ok {
		return nil, fmt.Errorf("pod network %s (%s) is not built into ingot: %s", conf.Name, conf.File, why)
	}
	n := &Network{conf: conf, bridge: conf.Bridge(), portmap: conf.PortMap(), log: o.Log}
	if n.log == nil {
		n.log = slog.Default()
	}
	if n.portmap != nil && !n.portmap.PortMappings {
		n.portmap = nil
	}
	n.log = n.log.With("network", conf.Name)
	for _, w := range conf.Warnings {
		n.log.Warn("pod network configuration", "warning", w)
	}
	if o.StateDir == "" {
		return nil, errors.New("pod network: no state directory for the lease database")
	}
	if err := os.MkdirAll(o.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("pod network state: %w", err)
	}
	path := filepath.Join(o.StateDir, DBFile)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolt.ErrTimeout) {
			err = fmt.Errorf("locked by another process: %w", err)
		}
		return nil, fmt.Errorf("pod network database %s: %w", path, err)
	}
	n.db = db
	defer func() {
		if retErr != nil {
			n.Close()
		}
	}()
	n.ipam = ipam.New(db, conf.Name, n.bridge.IPAM.RangeSets)
	n.leasesFile = filepath.Join(o.StateDir, LeasesFile)
	n.writeLeases()
	nodeNS := o.NodeNetNS
	if nodeNS == "" {
		nodeNS = "/proc/self/ns/net"
	}
	if n.node, err = os.Open(nodeNS); err != nil {
		return nil, fmt.Errorf("node network namespace: %w", err)
	}
	err = netns.DoFile(n.node, func() error {
		var err error
		n.nl, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlink in the node's network namespace: %w", err)
	}
	n.nft = nft.New(int(n.node.Fd()))
	if _, err := n.ensureBridge(true); err != nil {
		return nil, err
	}
	if err := n.applyRules(); err != nil {
		return nil, err
	}
	return n, nil
}

// Close releases the database and the namespace handles; the network itself stays up.
func (n *Network) Close() error {
	if n.nl != nil {
		n.nl.Close()
	}
	if n.node != nil {
		n.node.Close()
	}
	if n.db != nil {
		return n.db.Close()
	}
	return nil
}

// Name is the network's name (the conflist's).
func (n *Network) Name() string { return n.conf.Name }

// Ready reports why the network is not usable yet (CRI's NetworkReady condition), or nil.
func (n *Network) Ready(ctx context.Context) error {
	l, err := n.nl.LinkByName(n.bridge.Name)
	if err != nil {
		return fmt.Errorf("bridge %s: %w", n.bridge.Name, err)
	}
	if l.Attrs().Flags&unix.IFF_UP == 0 {
		return fmt.Errorf("bridge %s is down", n.bridge.Name)
	}
	return nil
}

// isNodeNS reports whether path is the node's own network namespace, which podnet must never
// treat as a pod's.
func (n *Network) isNodeNS(path string) bool {
	var a, b unix.Stat_t
	if unix.Stat(path, &a) != nil || unix.Fstat(int(n.node.Fd()), &b) != nil {
		return false
	}
	return a.Dev == b.Dev && a.Ino == b.Ino
}

func (n *Network) lockPod(id string) func() {
	h := fnv.New32a()
	h.Write([]byte(id))
	m := &n.podMu[h.Sum32()%uint32(len(n.podMu))]
	m.Lock()
	return m.Unlock
}

// HostVethName is the host end of pod id's veth: a hash, so Teardown finds it without the
// pod's namespace, and short enough for the kernel's 15 bytes.
func HostVethName(id string) string {
	sum := sha256.Sum256([]byte(id))
	return "ig" + hex.EncodeToString(sum[:6])
}

const podInterface = "eth0"

// Setup connects the pod to the network: bridge, veth, addresses, routes, hostPorts. Calling it
// again for the same pod repairs what is missing and returns the same addresses.
func (n *Network) Setup(ctx context.Context, p PodNet) (_ *Result, retErr error) {
	if p.ID == "" {
		return nil, fmt.Errorf("pod network setup: empty pod id: %w", ErrInvalid)
	}
	log := n.log.With("pod", p.Name, "namespace", p.Namespace, "id", p.ID)
	ports, err := n.ports(p.PortMappings)
	if err != nil {
		return nil, fmt.Errorf("pod network setup for %s: %w", p.ID, err)
	}
	if !netns.Is(p.NetNS) {
		return nil, fmt.Errorf("pod network setup for %s: %q is not a network namespace: %w", p.ID, p.NetNS, ErrInvalid)
	}
	if n.isNodeNS(p.NetNS) {
		return nil, fmt.Errorf("pod network setup for %s: %s is the node's network namespace (hostNetwork pods need no pod network): %w", p.ID, p.NetNS, ErrInvalid)
	}
	defer n.lockPod(p.ID)()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	br, err := n.ensureBridge(false)
	if err != nil {
		return nil, err
	}
	prev, err := n.record(p.ID)
	if err != nil {
		return nil, err
	}
	leases, err := n.ipam.Allocate(p.ID)
	if err != nil {
		return nil, err
	}
	n.writeLeases()
	defer func() {
		if retErr != nil && prev == nil {
			// Nothing of this pod existed before this call: leave nothing behind.
			if err := n.teardown(ctx, p.ID, p.NetNS); err != nil {
				log.Warn("pod network: cleanup after failed setup", "err", err)
			}
		}
	}()
	res, err := n.attach(br, p, leases)
	if err != nil {
		return nil, fmt.Errorf("pod network setup for %s: %w", p.ID, err)
	}
	rec := &record{ID: p.ID, Name: p.Name, Namespace: p.Namespace, UID: p.UID, Result: *res, Ports: ports}
	if err := n.putRecord(rec); err != nil {
		return nil, err
	}
	if err := n.applyRules(); err != nil {
		return nil, fmt.Errorf("pod network setup for %s: %w", p.ID, err)
	}
	log.Debug("pod network up", "ips", res.IPs, "veth", res.HostVeth, "hostports", len(ports), "took", time.Since(start))
	return res, nil
}

// ports converts and validates CRI port mappings, keeping only hostPorts.
func (n *Network) ports(in []PortMapping) ([]nft.PortMapping, error) {
	var out []nft.PortMapping
	for _, m := range in {
		if m.HostPort == 0 {
			continue
		}
		pm := nft.PortMapping{Protocol: strings.ToLower(m.Protocol)}
		if pm.Protocol == "" {
			pm.Protocol = "tcp"
		}
		if m.HostPort < 0 || m.HostPort > 65535 || m.ContainerPort <= 0 || m.ContainerPort > 65535 {
			return nil, fmt.Errorf("port mapping %d->%d: ports must be 1-65535: %w", m.HostPort, m.ContainerPort, ErrInvalid)
		}
		pm.HostPort, pm.ContainerPort = uint16(m.HostPort), uint16(m.ContainerPort)
		if m.HostIP != "" {
			ip, err := netip.ParseAddr(m.HostIP)
			if err != nil {
				return nil, fmt.Errorf("port mapping %d->%d: host IP %q: %w", m.HostPort, m.ContainerPort, m.HostIP, ErrInvalid)
			}
			pm.HostIP = ip.Unmap()
		}
		if err := pm.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", err, ErrInvalid)
		}
		out = append(out, pm)
	}
	if len(out) > 0 && n.portmap == nil {
		n.log.Warn("pod network: hostPorts ignored: the conflist has no portmap plugin with portMappings", "network", n.conf.Name)
		return nil, nil
	}
	return out, nil
}

// Teardown disconnects the pod: its rules, its veth, its addresses. It is idempotent and works
// without the pod's namespace (after a reboot, or when the namespace is already gone).
func (n *Network) Teardown(ctx context.Context, podID, netnsPath string) error {
	defer n.lockPod(podID)()
	return n.teardown(ctx, podID, netnsPath)
}

func (n *Network) teardown(ctx context.Context, podID, netnsPath string) error {
	rec, err := n.record(podID)
	if err != nil {
		return err
	}
	if rec != nil {
		if err := n.deleteRecord(podID); err != nil {
			return err
		}
		// Stop forwarding hostPorts to the address before anyone else can get it.
		if err := n.applyRules(); err != nil {
			return fmt.Errorf("pod network teardown for %s: %w", podID, err)
		}
		if netnsPath == "" {
			netnsPath = rec.NetNS
		}
	}
	if err := n.detach(podID, netnsPath); err != nil {
		return fmt.Errorf("pod network teardown for %s: %w", podID, err)
	}
	if err := n.ipam.Release(podID); err != nil {
		return err
	}
	n.writeLeases()
	return nil
}

// writeLeases rewrites the LeasesFile view from the database. Failing to is logged, not
// returned: the view is not what the network depends on.
func (n *Network) writeLeases() {
	n.leasesMu.Lock()
	defer n.leasesMu.Unlock()
	addrs, err := n.ipam.Addresses()
	if err == nil {
		var b strings.Builder
		for _, a := range slices.Sorted(maps.Keys(addrs)) {
			fmt.Fprintf(&b, "%s %s\n", a, addrs[a])
		}
		tmp := n.leasesFile + ".tmp"
		if err = os.WriteFile(tmp, []byte(b.String()), 0o644); err == nil {
			err = os.Rename(tmp, n.leasesFile)
		}
	}
	if err != nil {
		n.log.Warn("pod network: lease view", "file", n.leasesFile, "err", err)
	}
}

// Status returns the pod's network, or an error wrapping ErrNotFound when it has none (a
// hostNetwork pod, or one torn down).
func (n *Network) Status(ctx context.Context, podID string) (*Result, error) {
	rec, err := n.record(podID)
	if err != nil {
		return nil, err
	}
	if rec == nil {
		return nil, fmt.Errorf("pod network of %s: %w", podID, ErrNotFound)
	}
	res := rec.Result
	return &res, nil
}

// Pods lists the pods with network state.
func (n *Network) Pods() ([]string, error) {
	recs, err := n.records()
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(recs))
	for _, r := range recs {
		ids = append(ids, r.ID)
	}
	return ids, nil
}

// GC tears down the network of every pod keep rejects — pods removed while the runtime was
// down, or that did not survive a reboot — and removes veths of ours that no pod owns (a crash
// between creating a veth and recording it).
func (n *Network) GC(ctx context.Context, keep func(podID string) bool) error {
	owners, err := n.ipam.Owners()
	if err != nil {
		return err
	}
	ids, err := n.Pods()
	if err != nil {
		return err
	}
	var errs []error
	seen := map[string]bool{}
	for _, id := range append(ids, owners...) {
		if seen[id] || keep(id) {
			seen[id] = true
			continue
		}
		seen[id] = true
		n.log.Info("pod network: releasing the network of a pod the runtime no longer has", "id", id)
		errs = append(errs, n.Teardown(ctx, id, ""))
	}
	owned := map[string]bool{}
	for id := range seen {
		if keep(id) {
			owned[HostVethName(id)] = true
		}
	}
	links, err := n.nl.LinkList()
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list links: %w", err))...)
	}
	br, _ := n.nl.LinkByName(n.bridge.Name)
	for _, l := range links {
		a := l.Attrs()
		if _, ok := l.(*netlink.Veth); !ok || owned[a.Name] || !isOurVeth(a.Name) || br == nil || a.MasterIndex != br.Attrs().Index {
			continue
		}
		n.log.Info("pod network: removing a veth no pod owns", "veth", a.Name)
		if err := n.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete veth %s: %w", a.Name, err))
		}
	}
	return errors.Join(errs...)
}

func isOurVeth(name string) bool {
	if len(name) != 14 || !strings.HasPrefix(name, "ig") {
		return false
	}
	_, err := hex.DecodeString(name[2:])
	return err == nil
}

// Rules lists the nftables rules of the network, for status output and tests.
func (n *Network) Rules() ([]nft.Rule, error) { return n.nft.Rules() }

// applyRules rebuilds table inet ingot from the recorded pods.
func (n *Network) applyRules() error {
	n.nftMu.Lock()
	defer n.nftMu.Unlock()
	recs, err := n.records()
	if err != nil {
		return err
	}
	spec := nft.Network{}
	if n.bridge.IPMasq {
		spec.Masquerade = n.conf.Subnets()
	}
	if n.portmap != nil {
		spec.HostPorts, spec.SNAT = true, n.portmap.SNAT
	}
	var pods []nft.Pod
	for _, r := range recs {
		p := nft.Pod{ID: r.ID, Ports: r.Ports}
		for _, ip := range r.IPs {
			p.IPs = append(p.IPs, ip.Addr())
		}
		pods = append(pods, p)
	}
	if len(spec.Masquerade) == 0 && !spec.HostPorts {
		return n.nft.Delete()
	}
	return n.nft.Apply(spec, pods)
}
