package api

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	goruntime "runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"ingot.dev/ingot/init/api/apiv1"
	"ingot.dev/ingot/init/supervise"
)

// Node is what the API asks of PID 1 and where it finds the node's files. Zero paths take the
// node's defaults.
type Node struct {
	// Services returns the supervised services' states.
	Services func() []supervise.Status
	// Power asks PID 1 to reboot (or power off) for reason; it returns at once, and PID 1 stops
	// services and the machine afterwards.
	Power func(reboot bool, reason string)
	// Started is when PID 1 started, for uptime.
	Started time.Time
	// Upgrade writes the image read from r, as h describes it, to the slot the node did not boot,
	// and has the node reboot into it; it returns that slot. Errors that are gRPC statuses keep
	// their code. Nil: this node cannot be upgraded through its API.
	Upgrade func(ctx context.Context, h apiv1.UpgradeHeader, r io.Reader) (string, error)
	// Rollback makes the other slot's committed image the one booted and reboots into it.
	Rollback func(ctx context.Context, reason string) (string, error)
	// LastUpgrade is the last image swap's outcome, nil before the first.
	LastUpgrade func() *apiv1.UpgradeEvent
	// Boot is how the node booted, with its slot's entry as it is now (committed since, say); nil
	// or a zero Loader: read from systemd-boot's variables, as they were at boot.
	Boot func() apiv1.Boot

	ServiceLogDir string // each service's NAME.log (supervise.WithLogDir)
	RuntimeSocket string // the CRI runtime's socket
	OSRelease     string // /etc/os-release
	Kmsg          string // /dev/kmsg
	EFIVars       string // /sys/firmware/efi/efivars
}

func (n *Node) defaults() {
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&n.ServiceLogDir, "/run/ingot/services")
	def(&n.RuntimeSocket, "/run/ingot/ingot.sock")
	def(&n.OSRelease, "/etc/os-release")
	def(&n.Kmsg, "/dev/kmsg")
	def(&n.EFIVars, "/sys/firmware/efi/efivars")
}

// handler implements apiv1.NodeServer; authorization has happened by the time a method runs.
type handler struct {
	s *Server
}

func (h *handler) node() *Node { return &h.s.node }

func (h *handler) Version(ctx context.Context, _ *apiv1.Empty) (*apiv1.VersionReply, error) {
	v := h.version()
	return &v, nil
}

func (h *handler) version() apiv1.VersionReply {
	rel := ReadOSRelease(h.node().OSRelease)
	var u unix.Utsname
	unix.Uname(&u)
	return apiv1.VersionReply{
		Version: rel["VERSION_ID"],
		BuildID: rel["BUILD_ID"],
		Profile: rel["IMAGE_ID"],
		Arch:    goruntime.GOARCH,
		Kernel:  unix.ByteSliceToString(u.Release[:]),
	}
}

func (h *handler) Status(ctx context.Context, _ *apiv1.Empty) (*apiv1.StatusReply, error) {
	n := h.node()
	host, _ := os.Hostname()
	rep := &apiv1.StatusReply{VersionReply: h.version(), Hostname: host}
	if n.Boot != nil {
		rep.Boot = n.Boot()
	}
	if rep.Boot.Loader == "" {
		rep.Boot = bootInfo(n.EFIVars)
	}
	if !n.Started.IsZero() {
		rep.Uptime = time.Since(n.Started).Round(time.Millisecond)
	}
	if n.LastUpgrade != nil {
		rep.Upgrade = n.LastUpgrade()
	}
	if n.Services != nil {
		for _, st := range n.Services() {
			si := apiv1.ServiceInfo{Name: st.Name, State: st.State.String(), PID: st.PID, Restarts: st.Restarts, Since: st.Since}
			if st.LastExit != nil {
				si.LastExit = st.LastExit.String()
			}
			rep.Services = append(rep.Services, si)
		}
	}
	return rep, nil
}

func (h *handler) Reboot(ctx context.Context, req *apiv1.PowerRequest) (*apiv1.Empty, error) {
	return h.power(ctx, true, req)
}

func (h *handler) Poweroff(ctx context.Context, req *apiv1.PowerRequest) (*apiv1.Empty, error) {
	return h.power(ctx, false, req)
}

func (h *handler) power(ctx context.Context, reboot bool, req *apiv1.PowerRequest) (*apiv1.Empty, error) {
	if h.node().Power == nil {
		return nil, status.Error(codes.Unavailable, "this node cannot be rebooted or powered off through its API")
	}
	reason := "node API: " + callerOf(ctx).String()
	if r := strings.Map(printable, req.Reason); r != "" {
		reason += ": " + r
	}
	h.node().Power(reboot, reason)
	return &apiv1.Empty{}, nil
}

// printable drops control characters from a client's free text before it reaches the console.
func printable(r rune) rune {
	if r < 0x20 || r == 0x7f {
		return -1
	}
	return r
}

func (h *handler) Upgrade(in apiv1.UpgradeStream) error {
	if h.node().Upgrade == nil {
		return status.Error(codes.Unimplemented, "this node cannot be upgraded through its API")
	}
	first, err := in.Recv()
	if err != nil {
		return err
	}
	hdr := first.Header
	switch {
	case hdr == nil:
		return status.Error(codes.InvalidArgument, "upgrade: the first message must describe the image")
	case hdr.Size <= 0:
		return status.Errorf(codes.InvalidArgument, "upgrade: image size %d", hdr.Size)
	case len(hdr.SHA256) != 64 || strings.Trim(strings.ToLower(hdr.SHA256), "0123456789abcdef") != "":
		return status.Errorf(codes.InvalidArgument, "upgrade: sha256 %q is not 64 hex digits", hdr.SHA256)
	}
	ctx := in.Context()
	h.s.log.Info("node API upgrade", "client", callerOf(ctx).name, "version", hdr.Version, "build", hdr.BuildID, "bytes", hdr.Size)
	slot, err := h.node().Upgrade(ctx, *hdr, &upgradeReader{in: in, left: hdr.Size, data: first.Data})
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return err
		}
		return status.Error(codes.Internal, err.Error())
	}
	return in.SendAndClose(&apiv1.UpgradeReply{Slot: slot})
}

// upgradeReader reads an Upgrade stream's image bytes, no more than the header announced.
type upgradeReader struct {
	in   apiv1.UpgradeStream
	left int64
	data []byte
}

func (r *upgradeReader) Read(p []byte) (int, error) {
	for len(r.data) == 0 {
		c, err := r.in.Recv()
		if err == io.EOF {
			if r.left > 0 {
				return 0, fmt.Errorf("the client stopped %d bytes short of the image", r.left)
			}
			return 0, io.EOF
		}
		if err != nil {
			return 0, err
		}
		r.data = c.Data
	}
	if int64(len(r.data)) > r.left {
		return 0, fmt.Errorf("the client sent more than the %d bytes it announced", r.left+int64(len(r.data)))
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	r.left -= int64(n)
	return n, nil
}

func (h *handler) Rollback(ctx context.Context, _ *apiv1.Empty) (*apiv1.RollbackReply, error) {
	if h.node().Rollback == nil {
		return nil, status.Error(codes.Unimplemented, "this node cannot be rolled back through its API")
	}
	slot, err := h.node().Rollback(ctx, "node API: "+callerOf(ctx).String())
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return nil, err
		}
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &apiv1.RollbackReply{Slot: slot}, nil
}

// ReadOSRelease parses os-release(5) KEY=value lines, unquoting values; a file that cannot be
// read gives an empty map.
func ReadOSRelease(path string) map[string]string {
	out := map[string]string{}
	data, err := os.ReadFile(path)
	if err != nil {
		return out
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		out[k] = strings.Trim(v, `"'`)
	}
	return out
}
