// Package apiv1 is the node API's wire contract, shared by the server in PID 1 (init/api) and
// its client, `ingot ctl`: the gRPC service ingot.node.v1.Node, its messages, and a typed client.
//
// Messages travel as JSON (gRPC content-subtype "json", application/grpc+json) rather than
// protobuf: the API is small, its messages are Go structs both ends compile from this package,
// and the project needs no protoc step. The transport is ordinary gRPC over HTTP/2 and mutual TLS.
//
// Every call says what role it needs (Methods): a reader can look at everything, only an admin
// can change the node (reboot, power off, pull, remove, upgrade, roll back).
package apiv1

import (
	"context"
	"encoding/json"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
)

// Service is the gRPC service name.
const Service = "ingot.node.v1.Node"

// DefaultPort is the TCP port the node listens on when [api] names none.
const DefaultPort = 50000

// Roles, as a client certificate's Organization carries them.
const (
	RoleAdmin  = "admin"
	RoleReader = "reader"
)

// Methods maps each method's name to the role it needs. The server refuses a method missing
// here, so a method added without a role is unreachable rather than open.
var Methods = map[string]string{
	"Version":       RoleReader,
	"Status":        RoleReader,
	"Logs":          RoleReader,
	"Dmesg":         RoleReader,
	"Images":        RoleReader,
	"ImageInspect":  RoleReader,
	"Containers":    RoleReader,
	"ContainerLogs": RoleReader,
	"Reboot":        RoleAdmin,
	"Poweroff":      RoleAdmin,
	"Pull":          RoleAdmin,
	"ImageRemove":   RoleAdmin,
	"Upgrade":       RoleAdmin,
	"Rollback":      RoleAdmin,
}

// FullMethod is the gRPC path of method.
func FullMethod(method string) string { return "/" + Service + "/" + method }

// Empty is a request or reply without fields.
type Empty struct{}

// VersionReply names the image the node runs.
type VersionReply struct {
	Version string `json:"version"`  // the image's version string (os-release VERSION_ID)
	BuildID string `json:"build_id"` // sha256 of the architecture and every build input
	Profile string `json:"profile"`
	Arch    string `json:"arch"`
	Kernel  string `json:"kernel"` // uname -r
}

// StatusReply is the node at a glance.
type StatusReply struct {
	VersionReply
	Hostname string        `json:"hostname"`
	Uptime   time.Duration `json:"uptime_ns"`
	Boot     Boot          `json:"boot"`
	Services []ServiceInfo `json:"services"`
	// Upgrade is the last image swap's outcome, nil before the first.
	Upgrade *UpgradeEvent `json:"upgrade,omitempty"`
}

// UpgradeEvent is what became of an image swap.
type UpgradeEvent struct {
	// Result is "pending" (written, not yet booted), "trial" (booted, health checks running),
	// "committed" or "rolled back".
	Result   string    `json:"result"`
	FromSlot string    `json:"from_slot"`
	ToSlot   string    `json:"to_slot"`
	Version  string    `json:"version"`  // the new image's
	BuildID  string    `json:"build_id"` // the new image's
	Reason   string    `json:"reason,omitempty"`
	At       time.Time `json:"at"`
}

// UpgradeHeader opens an Upgrade stream: the image that follows, as its manifest describes it.
type UpgradeHeader struct {
	Version string `json:"version"`
	BuildID string `json:"build_id"`
	Profile string `json:"profile"`
	Arch    string `json:"arch"`
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256"` // of the UKI, hex
}

// UpgradeChunk is one message of an Upgrade stream: the header first, then the image's bytes.
type UpgradeChunk struct {
	Header *UpgradeHeader `json:"header,omitempty"`
	Data   []byte         `json:"data,omitempty"`
}

// UpgradeReply says where the image went; the node reboots into it after replying.
type UpgradeReply struct {
	Slot string `json:"slot"`
}

// RollbackReply says which slot the node reboots into.
type RollbackReply struct {
	Slot string `json:"slot"`
}

// Boot is how the node was booted: which boot loader entry, slot and boot counter.
type Boot struct {
	// Loader is "systemd-boot" on a UEFI disk boot, "direct" when the kernel was handed to the
	// machine directly (no slots then).
	Loader string `json:"loader"`
	Entry  string `json:"entry,omitempty"` // the boot loader entry booted, e.g. ingot-a.conf
	Slot   string `json:"slot,omitempty"`  // "a" or "b"
	// TriesLeft and TriesDone are the entry's boot counter (ingot-b+2-1.conf: 2 left, 1 done);
	// both -1 for an entry without one, i.e. a committed slot.
	TriesLeft int `json:"tries_left"`
	TriesDone int `json:"tries_done"`
}

// ServiceInfo is one supervised service.
type ServiceInfo struct {
	Name     string    `json:"name"`
	State    string    `json:"state"`
	PID      int       `json:"pid,omitempty"`
	Restarts int       `json:"restarts"`
	Since    time.Time `json:"since"`
	LastExit string    `json:"last_exit,omitempty"`
}

// LogsRequest asks for a service's output (Logs) or a container's (ContainerLogs, Name is then
// the container ID or a unique prefix of it).
type LogsRequest struct {
	Name   string `json:"name"`
	Follow bool   `json:"follow"`
	// Tail limits the output to the last Tail lines that exist when the call starts; 0 is all.
	Tail int `json:"tail,omitempty"`
}

// DmesgRequest asks for the kernel log.
type DmesgRequest struct {
	Follow bool `json:"follow"`
}

// Chunk is a piece of a log, as the node has it: whole lines except perhaps the last of a
// follow. A container's log comes in the CRI log format (time stream tag message).
type Chunk struct {
	Data []byte `json:"data"`
}

// PowerRequest asks the node to reboot or power off. The node answers, then stops its services.
type PowerRequest struct {
	Reason string `json:"reason,omitempty"` // printed on the node's console with the client's name
}

// ImageRef names an image: a reference (name:tag, name@digest), an image ID or a unique prefix.
type ImageRef struct {
	Ref string `json:"ref"`
}

// Image is one image in the node's store.
type Image struct {
	ID      string   `json:"id"`
	Tags    []string `json:"tags"`
	Digests []string `json:"digests"`
	Size    uint64   `json:"size"`
	Pinned  bool     `json:"pinned,omitempty"`
}

// ImagesReply lists the node's images.
type ImagesReply struct {
	Images []Image `json:"images"`
}

// ImageInspectReply is one image with what the runtime says of it (its config, as CRI's
// verbose ImageStatus gives it).
type ImageInspectReply struct {
	Image Image             `json:"image"`
	Info  map[string]string `json:"info,omitempty"`
}

// PullReply is the image a pull stored.
type PullReply struct {
	ID string `json:"id"`
}

// Container is one container and its task (process) state.
type Container struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Pod       string    `json:"pod"`
	Namespace string    `json:"namespace"`
	PodID     string    `json:"pod_id"`
	Image     string    `json:"image"`
	State     string    `json:"state"` // created, running, exited, unknown
	Created   time.Time `json:"created"`
	ExitCode  int32     `json:"exit_code,omitempty"`
}

// ContainersReply lists the node's containers.
type ContainersReply struct {
	Containers []Container `json:"containers"`
}

// Codec is the JSON codec both ends force on the connection.
type Codec struct{}

func (Codec) Name() string { return "json" }

func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	return json.Unmarshal(data.Materialize(), v)
}

// NodeServer is what the node implements. Streaming calls send Chunks until the log ends (or,
// following, until the client goes away).
type NodeServer interface {
	Version(context.Context, *Empty) (*VersionReply, error)
	Status(context.Context, *Empty) (*StatusReply, error)
	Logs(*LogsRequest, ChunkSender) error
	Dmesg(*DmesgRequest, ChunkSender) error
	Reboot(context.Context, *PowerRequest) (*Empty, error)
	Poweroff(context.Context, *PowerRequest) (*Empty, error)
	Images(context.Context, *Empty) (*ImagesReply, error)
	ImageInspect(context.Context, *ImageRef) (*ImageInspectReply, error)
	Pull(context.Context, *ImageRef) (*PullReply, error)
	ImageRemove(context.Context, *ImageRef) (*Empty, error)
	Containers(context.Context, *Empty) (*ContainersReply, error)
	ContainerLogs(*LogsRequest, ChunkSender) error
	Upgrade(UpgradeStream) error
	Rollback(context.Context, *Empty) (*RollbackReply, error)
}

// UpgradeStream is the server's side of an Upgrade call.
type UpgradeStream interface {
	Context() context.Context
	Recv() (*UpgradeChunk, error)
	SendAndClose(*UpgradeReply) error
}

type upgradeStream struct{ grpc.ServerStream }

func (s upgradeStream) Recv() (*UpgradeChunk, error) {
	c := new(UpgradeChunk)
	if err := s.RecvMsg(c); err != nil {
		return nil, err
	}
	return c, nil
}

func (s upgradeStream) SendAndClose(r *UpgradeReply) error { return s.SendMsg(r) }

// ChunkSender is a streaming call's way back to the client.
type ChunkSender interface {
	Context() context.Context
	Send(*Chunk) error
}

type chunkSender struct{ grpc.ServerStream }

func (s chunkSender) Send(c *Chunk) error { return s.SendMsg(c) }

func unary[Req, Rep any](call func(NodeServer, context.Context, *Req) (*Rep, error), method string) grpc.MethodDesc {
	return grpc.MethodDesc{MethodName: method, Handler: func(srv any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
		req := new(Req)
		if err := dec(req); err != nil {
			return nil, err
		}
		h := func(ctx context.Context, r any) (any, error) { return call(srv.(NodeServer), ctx, r.(*Req)) }
		if ic == nil {
			return h(ctx, req)
		}
		return ic(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: FullMethod(method)}, h)
	}}
}

func stream[Req any](call func(NodeServer, *Req, ChunkSender) error, method string) grpc.StreamDesc {
	return grpc.StreamDesc{StreamName: method, ServerStreams: true, Handler: func(srv any, s grpc.ServerStream) error {
		req := new(Req)
		if err := s.RecvMsg(req); err != nil {
			return err
		}
		return call(srv.(NodeServer), req, chunkSender{s})
	}}
}

// ServiceDesc registers a NodeServer with a grpc.Server.
var ServiceDesc = grpc.ServiceDesc{
	ServiceName: Service,
	HandlerType: (*NodeServer)(nil),
	Methods: []grpc.MethodDesc{
		unary(NodeServer.Version, "Version"),
		unary(NodeServer.Status, "Status"),
		unary(NodeServer.Reboot, "Reboot"),
		unary(NodeServer.Poweroff, "Poweroff"),
		unary(NodeServer.Images, "Images"),
		unary(NodeServer.ImageInspect, "ImageInspect"),
		unary(NodeServer.Pull, "Pull"),
		unary(NodeServer.ImageRemove, "ImageRemove"),
		unary(NodeServer.Containers, "Containers"),
		unary(NodeServer.Rollback, "Rollback"),
	},
	Streams: []grpc.StreamDesc{
		stream(NodeServer.Logs, "Logs"),
		stream(NodeServer.Dmesg, "Dmesg"),
		stream(NodeServer.ContainerLogs, "ContainerLogs"),
		{StreamName: "Upgrade", ClientStreams: true, Handler: func(srv any, s grpc.ServerStream) error {
			return srv.(NodeServer).Upgrade(upgradeStream{s})
		}},
	},
}
