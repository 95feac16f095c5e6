package apiv1

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// Client calls one node's API.
type Client struct {
	conn *grpc.ClientConn
}

// Dial returns a client of the node at addr (host:port). tc must carry the client's certificate
// and the CA the node's certificate chains to; nothing is sent before the first call.
func Dial(addr string, tc *tls.Config) (*Client, error) {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithDefaultCallOptions(grpc.ForceCodecV2(Codec{})))
	if err != nil {
		return nil, fmt.Errorf("node API %s: %w", addr, err)
	}
	return &Client{conn: conn}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.conn.Close() }

func call[Rep any](ctx context.Context, c *Client, method string, req any) (*Rep, error) {
	rep := new(Rep)
	if err := c.conn.Invoke(ctx, FullMethod(method), req, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

func (c *Client) Version(ctx context.Context) (*VersionReply, error) {
	return call[VersionReply](ctx, c, "Version", &Empty{})
}

func (c *Client) Status(ctx context.Context) (*StatusReply, error) {
	return call[StatusReply](ctx, c, "Status", &Empty{})
}

func (c *Client) Reboot(ctx context.Context, reason string) error {
	_, err := call[Empty](ctx, c, "Reboot", &PowerRequest{Reason: reason})
	return err
}

func (c *Client) Poweroff(ctx context.Context, reason string) error {
	_, err := call[Empty](ctx, c, "Poweroff", &PowerRequest{Reason: reason})
	return err
}

func (c *Client) Images(ctx context.Context) (*ImagesReply, error) {
	return call[ImagesReply](ctx, c, "Images", &Empty{})
}

func (c *Client) ImageInspect(ctx context.Context, ref string) (*ImageInspectReply, error) {
	return call[ImageInspectReply](ctx, c, "ImageInspect", &ImageRef{Ref: ref})
}

func (c *Client) Pull(ctx context.Context, ref string) (*PullReply, error) {
	return call[PullReply](ctx, c, "Pull", &ImageRef{Ref: ref})
}

func (c *Client) ImageRemove(ctx context.Context, ref string) error {
	_, err := call[Empty](ctx, c, "ImageRemove", &ImageRef{Ref: ref})
	return err
}

func (c *Client) Containers(ctx context.Context) (*ContainersReply, error) {
	return call[ContainersReply](ctx, c, "Containers", &Empty{})
}

// UpgradeChunkSize is how much of the image one message carries.
const UpgradeChunkSize = 1 << 20

// Upgrade sends the image r (described by h) to the node, which writes it to its other slot and
// reboots into it. sent, if not nil, is told how many bytes have gone.
func (c *Client) Upgrade(ctx context.Context, h *UpgradeHeader, r io.Reader, sent func(int64)) (*UpgradeReply, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.conn.NewStream(ctx, &grpc.StreamDesc{StreamName: "Upgrade", ClientStreams: true}, FullMethod("Upgrade"))
	if err != nil {
		return nil, err
	}
	if err := s.SendMsg(&UpgradeChunk{Header: h}); err != nil {
		return nil, c.streamErr(s, err)
	}
	buf := make([]byte, UpgradeChunkSize)
	var total int64
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := s.SendMsg(&UpgradeChunk{Data: buf[:n]}); err != nil {
				return nil, c.streamErr(s, err)
			}
			total += int64(n)
			if sent != nil {
				sent(total)
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return nil, rerr
		}
	}
	if err := s.CloseSend(); err != nil {
		return nil, err
	}
	rep := new(UpgradeReply)
	if err := s.RecvMsg(rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// streamErr turns a failed send (io.EOF: the server ended the call) into the server's status.
func (c *Client) streamErr(s grpc.ClientStream, err error) error {
	if errors.Is(err, io.EOF) {
		var rep UpgradeReply
		if rerr := s.RecvMsg(&rep); rerr != nil {
			return rerr
		}
	}
	return err
}

func (c *Client) Rollback(ctx context.Context) (*RollbackReply, error) {
	return call[RollbackReply](ctx, c, "Rollback", &Empty{})
}

// Logs copies service req.Name's output to w until it ends (or, following, until ctx ends).
func (c *Client) Logs(ctx context.Context, req *LogsRequest, w io.Writer) error {
	return c.stream(ctx, "Logs", req, w)
}

// ContainerLogs copies a container's CRI log to w.
func (c *Client) ContainerLogs(ctx context.Context, req *LogsRequest, w io.Writer) error {
	return c.stream(ctx, "ContainerLogs", req, w)
}

// Dmesg copies the kernel log to w.
func (c *Client) Dmesg(ctx context.Context, req *DmesgRequest, w io.Writer) error {
	return c.stream(ctx, "Dmesg", req, w)
}

func (c *Client) stream(ctx context.Context, method string, req any, w io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s, err := c.conn.NewStream(ctx, &grpc.StreamDesc{StreamName: method, ServerStreams: true}, FullMethod(method))
	if err != nil {
		return err
	}
	if err := s.SendMsg(req); err != nil {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	for {
		var ch Chunk
		if err := s.RecvMsg(&ch); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if _, err := w.Write(ch.Data); err != nil {
			return err
		}
	}
}
