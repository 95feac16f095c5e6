// Package logs writes a container's stdout and stderr into a log file in the CRI log format, the
// format kubelet reads back for `kubectl logs` (pkg/kubelet/kuberuntime/logs):
//
//	<RFC3339Nano timestamp> <stdout|stderr> <P|F> <message>\n
//
// A line of the container's output becomes one entry tagged F (full). A line longer than the
// maximum line size is cut into entries of that size tagged P (partial), and its last piece is
// tagged F. Output that ends without a newline is written as a P entry when the stream closes, as
// containerd does, so no byte is lost and none is invented. "\n" and "\r\n" line ends are dropped
// from the message.
//
// Both streams of a container share one file: every entry goes to the file in one write under one
// lock, so entries of stdout and stderr interleave but never mix. Reopen swaps the file for a new
// one at the same path, which is what kubelet's log rotation asks for (ReopenContainerLog).
//
// This package must never block the container on the log file: a failing write is reported and
// the stream is still drained to its end.
package logs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"ingot.dev/ingot/runtime/errdefs"
)

// DefaultMaxLineSize is containerd's default max_container_log_line_size: 16 KiB.
const DefaultMaxLineSize = 16 * 1024

// Stream names one of a container's output streams as the CRI log format spells it.
type Stream string

// The two streams of a container.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// Tags of a log entry (k8s.io/cri-api LogTagPartial and LogTagFull).
const (
	TagPartial = "P"
	TagFull    = "F"
)

// readSize is the read buffer per stream, as containerd's defaultBufSize.
const readSize = 4096

// Options tune a Writer.
type Options struct {
	// MaxLineSize is the longest message of one entry in bytes; longer lines are split into P
	// entries. Zero or negative means no limit, as containerd's max_container_log_line_size
	// (whose default, DefaultMaxLineSize, the configuration applies when the key is absent).
	MaxLineSize int
	// Now stamps entries; time.Now when nil. Tests pin it.
	Now func() time.Time
}

// Writer writes one container's log file. Its methods are safe for concurrent use: Copy runs
// once per stream, each in its own goroutine, while Reopen may be called at any time.
type Writer struct {
	// dir is the log directory, held open: every (re)open resolves name from it without following
	// a symlink, so a link swapped in for the file or a directory below dir during rotation
	// cannot send the container's output to a file of the host.
	dir  *os.File
	name string // below dir, cleaned
	path string // dir/name, for messages and Path
	opts Options

	mu sync.Mutex // serialises entries and guards f
	f  *os.File
}

// Join checks a CRI log_path against its pod's log_directory and returns the log file's path.
// The path must be relative and stay below the directory ("a/../b" is fine, "../b" is not); a
// path that does not is an errdefs.ErrInvalid naming it.
func Join(dir, name string) (string, error) {
	clean, err := cleanName(dir, name)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, clean), nil
}

func cleanName(dir, name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("log_path is empty: %w", errdefs.ErrInvalid)
	}
	if filepath.IsAbs(name) {
		return "", fmt.Errorf("log_path %q is absolute, want a path below log_directory %s: %w", name, dir, errdefs.ErrInvalid)
	}
	clean := filepath.Clean(name)
	if clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", fmt.Errorf("log_path %q escapes log_directory %s: %w", name, dir, errdefs.ErrInvalid)
	}
	return clean, nil
}

// Open creates (or appends to) the log file at path, creating its directory.
func Open(path string, opts Options) (*Writer, error) {
	return OpenIn(filepath.Dir(path), filepath.Base(path), opts)
}

// OpenIn creates (or appends to) the log file name below the directory dir: a CRI container's
// log_path below its pod's log_directory. dir is created if missing and trusted as given (the
// kubelet makes it); name is checked as Join does, and neither its directories nor the file
// itself may be symlinks, now or at any Reopen.
func OpenIn(dir, name string, opts Options) (*Writer, error) {
	clean, err := cleanName(dir, name)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create log directory %s: %w", dir, err)
	}
	d, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("open log directory %s: %w", dir, err)
	}
	w := &Writer{dir: d, name: clean, path: filepath.Join(dir, clean), opts: opts}
	if w.opts.Now == nil {
		w.opts.Now = time.Now
	}
	if w.f, err = w.openFile(); err != nil {
		d.Close()
		return nil, err
	}
	return w, nil
}

// openFile opens the log file the way containerd does (directories created, append-only, 0640),
// walking from the held directory one component at a time: a symlink anywhere below it is
// refused (O_NOFOLLOW), and so is anything but a regular file with one link (a FIFO would block
// the shim, a hard link would write to a file elsewhere).
func (w *Writer) openFile() (*os.File, error) {
	parts := strings.Split(w.name, "/")
	cur := int(w.dir.Fd())
	closeCur := func() {
		if cur != int(w.dir.Fd()) {
			unix.Close(cur)
		}
	}
	defer func() { closeCur() }()
	for _, c := range parts[:len(parts)-1] {
		if err := unix.Mkdirat(cur, c, 0o755); err != nil && !errors.Is(err, unix.EEXIST) {
			return nil, fmt.Errorf("open container log %s: create directory %s: %w", w.path, c, err)
		}
		next, err := unix.Openat(cur, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open container log %s: directory %s (a symlink is refused): %w", w.path, c, err)
		}
		closeCur()
		cur = next
	}
	// O_NONBLOCK: opening a FIFO planted there must fail at once instead of waiting for a reader.
	fd, err := unix.Openat(cur, parts[len(parts)-1], unix.O_WRONLY|unix.O_APPEND|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open container log %s (a symlink is refused): %w", w.path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open container log %s: %w", w.path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 {
		unix.Close(fd)
		return nil, fmt.Errorf("open container log %s: not a regular file with one link (mode %#o, %d links)", w.path, st.Mode, st.Nlink)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("open container log %s: %w", w.path, err)
	}
	return os.NewFile(uintptr(fd), w.path), nil
}

// Path is the log file's path.
func (w *Writer) Path() string { return w.path }

// Run copies stdout and stderr (either may be nil, e.g. stderr of a tty container) until both
// reach EOF, and returns the first error of either. It does not close the file.
func (w *Writer) Run(stdout, stderr io.Reader) error {
	var (
		wg   sync.WaitGroup
		errs [2]error
	)
	for i, s := range []struct {
		stream Stream
		r      io.Reader
	}{{Stdout, stdout}, {Stderr, stderr}} {
		if s.r == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = w.Copy(s.stream, s.r)
		}()
	}
	wg.Wait()
	return errors.Join(errs[0], errs[1])
}

// Copy reads stream's output from r until EOF or a read error and writes it as entries. A
// pending piece without a newline is written (tagged P) before Copy returns. Write errors do not
// stop the copy, so the container never blocks on a full pipe; the first one is returned.
func (w *Writer) Copy(stream Stream, r io.Reader) error {
	if stream != Stdout && stream != Stderr {
		return fmt.Errorf("copy %q into %s: unknown stream", stream, w.path)
	}
	var (
		br       = bufio.NewReaderSize(r, readSize)
		line     []byte // the current line so far, without its end
		entry    []byte // reused buffer for one formatted entry
		writeErr error
		maxLen   = w.opts.MaxLineSize
	)
	emit := func(tag string, msg []byte) {
		var err error
		entry, err = w.writeEntry(entry, stream, tag, msg)
		if err != nil && writeErr == nil {
			writeErr = err
		}
	}
	for {
		chunk, err := br.ReadSlice('\n')
		complete := err == nil // ReadSlice returns nil iff chunk ends in '\n'
		if complete {
			chunk = chunk[:len(chunk)-1]
		}
		line = append(line, chunk...)
		if complete && len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		for maxLen > 0 && len(line) > maxLen {
			emit(TagPartial, line[:maxLen])
			line = line[:copy(line, line[maxLen:])]
		}
		if complete {
			emit(TagFull, line)
			line = line[:0]
			continue
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		// EOF or a read error: flush what is pending, as a partial entry.
		if len(line) > 0 {
			emit(TagPartial, line)
		}
		if err != io.EOF {
			return errors.Join(fmt.Errorf("read %s of %s: %w", stream, w.path, err), writeErr)
		}
		return writeErr
	}
}

// writeEntry formats one entry into buf and writes it in a single write, so entries of the two
// streams never interleave inside a line. It returns buf for reuse.
func (w *Writer) writeEntry(buf []byte, stream Stream, tag string, msg []byte) ([]byte, error) {
	buf = AppendEntry(buf[:0], w.opts.Now(), stream, tag, msg)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return buf, fmt.Errorf("write %s entry to %s: log is closed", stream, w.path)
	}
	if _, err := w.f.Write(buf); err != nil {
		return buf, fmt.Errorf("write %s entry to %s: %w", stream, w.path, err)
	}
	return buf, nil
}

// AppendEntry appends one CRI log entry for msg (which must not contain a newline) to buf.
func AppendEntry(buf []byte, t time.Time, stream Stream, tag string, msg []byte) []byte {
	buf = t.AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, ' ')
	buf = append(buf, stream...)
	buf = append(buf, ' ')
	buf = append(buf, tag...)
	buf = append(buf, ' ')
	buf = append(buf, msg...)
	return append(buf, '\n')
}

// Reopen closes the log file and opens a new one at the same path: after kubelet renamed the
// file for rotation, later entries go to a fresh file under the original name. Entries written
// concurrently go either to the old file or to the new one, whole.
//
// The CRI contract (api.proto, ReopenContainerLog): the runtime reopens the log file of the
// container; if it cannot, it returns an error and MUST NOT create a new log file. The caller
// (the CRI server) decides what to do for a container that is not running. Here a failed open
// creates nothing and leaves the old file in use.
func (w *Writer) Reopen() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return fmt.Errorf("reopen container log %s: log is closed", w.path)
	}
	f, err := w.openFile()
	if err != nil {
		return fmt.Errorf("reopen container log: %w", err)
	}
	old := w.f
	w.f = f
	if err := old.Close(); err != nil {
		return fmt.Errorf("close rotated container log %s: %w", w.path, err)
	}
	return nil
}

// Close closes the log file. Entries written after Close fail (and are counted as write errors by
// Copy); call it after Run or every Copy has returned.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	w.dir.Close()
	if err != nil {
		return fmt.Errorf("close container log %s: %w", w.path, err)
	}
	return nil
}

// Entry is one parsed log entry.
type Entry struct {
	Time    time.Time
	Stream  Stream
	Tag     string
	Message []byte
}

// ParseEntry parses one line of a CRI log file (without its newline) the way kubelet does: the
// timestamp as RFC3339Nano, then the stream, the tag and the message, separated by single spaces.
func ParseEntry(line []byte) (Entry, error) {
	var e Entry
	ts, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok {
		return e, fmt.Errorf("parse log entry %q: no timestamp", line)
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return e, fmt.Errorf("parse log entry %q: %w", line, err)
	}
	stream, rest, ok := bytes.Cut(rest, []byte{' '})
	if !ok || (Stream(stream) != Stdout && Stream(stream) != Stderr) {
		return e, fmt.Errorf("parse log entry %q: bad stream", line)
	}
	tag, msg, ok := bytes.Cut(rest, []byte{' '})
	if !ok || (string(tag) != TagPartial && string(tag) != TagFull) {
		return e, fmt.Errorf("parse log entry %q: bad tag", line)
	}
	return Entry{Time: t, Stream: Stream(stream), Tag: string(tag), Message: msg}, nil
}
