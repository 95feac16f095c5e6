package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"ingot.dev/ingot/init/api/apiv1"
	"ingot.dev/ingot/init/supervise"
)

// chunkSize bounds one message of a log stream.
const chunkSize = 64 << 10

// pollEvery is how often a followed file is looked at for more. Logs are for people: a quarter
// second is prompt enough and costs nothing measurable.
var pollEvery = 250 * time.Millisecond

func (h *handler) Logs(req *apiv1.LogsRequest, out apiv1.ChunkSender) error {
	dir := h.node().ServiceLogDir
	data, err := supervise.ReadLog(dir, req.Name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return status.Errorf(codes.NotFound, "service %q has no log on this node (ingot ctl status lists the services)", req.Name)
		}
		if errors.Is(err, supervise.ErrInvalid) {
			return status.Errorf(codes.InvalidArgument, "service name %q", req.Name)
		}
		return status.Error(codes.Internal, err.Error())
	}
	if err := send(out, lastLines(data, req.Tail)); err != nil || !req.Follow {
		return err
	}
	// What ReadLog returned ends with the current file; follow that file from its end.
	path := filepath.Join(dir, req.Name+".log")
	st, err := os.Stat(path)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	return follow(out.Context(), path, st.Size(), nil, out)
}

// send writes data to out in chunks.
func send(out apiv1.ChunkSender, data []byte) error {
	for len(data) > 0 {
		n := min(len(data), chunkSize)
		if err := out.Send(&apiv1.Chunk{Data: data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// lastLines returns data's last n lines (all of it for n <= 0).
func lastLines(data []byte, n int) []byte {
	if n <= 0 {
		return data
	}
	end := len(data)
	if end > 0 && data[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if data[i] == '\n' {
			if n--; n == 0 {
				return data[i+1:]
			}
		}
	}
	return data
}

// follow sends what is appended to path from offset on, until ctx ends or done reports that
// the writer has finished (and everything it wrote was sent). A file that is rotated (renamed
// away and replaced, or truncated) is read to its end and then followed from the start of the
// new one, so no line is lost or repeated.
func follow(ctx context.Context, path string, offset int64, done func() bool, out apiv1.ChunkSender) error {
	f, err := os.Open(path)
	if err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	defer func() { f.Close() }()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return status.Error(codes.Internal, err.Error())
	}
	buf := make([]byte, chunkSize)
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if err := out.Send(&apiv1.Chunk{Data: buf[:n]}); err != nil {
				return err
			}
			continue
		}
		if err != nil && err != io.EOF {
			return status.Error(codes.Internal, err.Error())
		}
		// At the end of the open file: has it been replaced or truncated?
		if nf, ok := reopened(f, path); ok {
			f.Close()
			f = nf
			continue
		}
		finished := done != nil && done()
		if finished {
			// One more read: the writer may have added its last line after the read above.
			if n, _ := f.Read(buf); n > 0 {
				if err := out.Send(&apiv1.Chunk{Data: buf[:n]}); err != nil {
					return err
				}
				continue
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// reopened returns path opened anew when it is no longer the file f (rotated), or when f was
// truncated (then rewound); ok is false while f is still the file to read.
func reopened(f *os.File, path string) (*os.File, bool) {
	cur, err := f.Stat()
	if err != nil {
		return nil, false
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, false // between a rename and the new file's creation
	}
	if !os.SameFile(cur, st) {
		nf, err := os.Open(path)
		if err != nil {
			return nil, false
		}
		return nf, true
	}
	if pos, err := f.Seek(0, io.SeekCurrent); err == nil && st.Size() < pos {
		f.Seek(0, io.SeekStart)
	}
	return nil, false
}

// Dmesg sends the kernel log, as dmesg prints it: "[seconds.micros] message" a line.
func (h *handler) Dmesg(req *apiv1.DmesgRequest, out apiv1.ChunkSender) error {
	fd, err := unix.Open(h.node().Kmsg, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return status.Errorf(codes.Internal, "open %s: %v", h.node().Kmsg, err)
	}
	defer unix.Close(fd)
	ctx := out.Context()
	rec := make([]byte, 8192)
	var pending bytes.Buffer
	flush := func() error {
		err := send(out, pending.Bytes())
		pending.Reset()
		return err
	}
	for {
		n, err := unix.Read(fd, rec)
		switch {
		case err == nil && n > 0:
			pending.Write(formatKmsg(rec[:n]))
			if pending.Len() >= chunkSize {
				if err := flush(); err != nil {
					return err
				}
			}
		case errors.Is(err, syscall.EPIPE):
			// Records were overwritten before we read them; the next read goes on after them.
		case errors.Is(err, syscall.EAGAIN):
			if err := flush(); err != nil || !req.Follow {
				return err
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(pollEvery):
			}
		case errors.Is(err, syscall.EINTR):
		default:
			return status.Errorf(codes.Internal, "read %s: %v", h.node().Kmsg, err)
		}
	}
}

// formatKmsg renders one /dev/kmsg record ("prio,seq,usec,flags;message\n continuation…").
func formatKmsg(rec []byte) []byte {
	head, rest, ok := bytes.Cut(rec, []byte(";"))
	if !ok {
		return nil
	}
	msg, _, _ := bytes.Cut(rest, []byte("\n"))
	f := strings.Split(string(head), ",")
	var usec int64
	if len(f) >= 3 {
		usec, _ = strconv.ParseInt(f[2], 10, 64)
	}
	return fmt.Appendf(nil, "[%5d.%06d] %s\n", usec/1e6, usec%1e6, unescapeKmsg(msg))
}

// unescapeKmsg undoes /dev/kmsg's \xNN escapes of non-printable bytes, keeping control
// characters escaped.
func unescapeKmsg(msg []byte) []byte {
	if !bytes.Contains(msg, []byte(`\x`)) {
		return msg
	}
	var out []byte
	for i := 0; i < len(msg); i++ {
		if msg[i] == '\\' && i+3 < len(msg) && msg[i+1] == 'x' {
			if v, err := strconv.ParseUint(string(msg[i+2:i+4]), 16, 8); err == nil && v >= 0x20 && v != 0x7f {
				out = append(out, byte(v))
				i += 3
				continue
			}
		}
		out = append(out, msg[i])
	}
	return out
}
