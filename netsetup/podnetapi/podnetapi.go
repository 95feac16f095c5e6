// Package podnetapi is the pod network as the runtime sees it: the Provider interface that the
// sandbox RPCs call (Setup at RunPodSandbox, Status for the pod IPs, Teardown at stop and remove,
// GC at start) and the types it takes and returns. Two packages implement it: netsetup/podnet
// (the built-in bridge network) and netsetup/cniexec (external CNI plugins through libcni). It
// holds no code, so neither implementation has to import the other.
package podnetapi

import (
	"context"
	"errors"
	"net/netip"
)

// ErrNotFound is returned by Status for a pod without network state.
var ErrNotFound = errors.New("not found")

// ErrInvalid is wrapped by errors about a bad request (bad port mapping, missing netns).
var ErrInvalid = errors.New("invalid argument")

// PodNet is what Setup needs to know about a pod.
type PodNet struct {
	ID        string // the sandbox id: the key for everything podnet keeps
	Name      string // metadata, for logs
	Namespace string
	UID       string
	NetNS     string // the pod's network namespace file
	// PortMappings are the CRI port mappings; those with HostPort 0 are not hostPorts and are
	// skipped. They take effect only when the conflist has portmap with portMappings.
	PortMappings []PortMapping
}

// PortMapping is one CRI port mapping.
type PortMapping struct {
	Protocol      string // tcp, udp or sctp, any case (CRI's Protocol.String() works); "" is tcp
	ContainerPort int32
	HostPort      int32
	HostIP        string // "" or 0.0.0.0 / ::: every node address
}

// Result is a pod's network as CRI reports it.
type Result struct {
	Interface string         // inside the pod, e.g. eth0
	MAC       string         // of Interface
	IPs       []netip.Prefix // the first is PodSandboxNetworkStatus.Ip, the rest AdditionalIps
	Gateways  []netip.Addr
	HostVeth  string // the host end, on the bridge
	NetNS     string
}

// Provider is what the runtime needs from a pod network: podnet.Network (built in) and
// cniexec.Delegate (external CNI plugins through libcni) both provide it. The runtime picks one
// with cniconf.List.Native.
type Provider interface {
	Setup(ctx context.Context, p PodNet) (*Result, error)
	Teardown(ctx context.Context, podID, netnsPath string) error
	Status(ctx context.Context, podID string) (*Result, error)
	Ready(ctx context.Context) error
	GC(ctx context.Context, keep func(podID string) bool) error
	Close() error
}
