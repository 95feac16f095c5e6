// Package archive applies one OCI or Docker image layer (a tar stream, plain or gzip or zstd
// compressed) to an empty directory that becomes one overlayfs lower layer. Whiteouts are written in
// overlayfs form: `.wh.NAME` becomes a 0/0 character device NAME and `.wh..wh..opq` becomes the
// trusted.overlay.opaque=y xattr on its directory.
//
// It must never write outside the target directory. Every entry is resolved below the layer root
// without following any symlink: an entry whose path climbs out with "..", whose parent is a symlink,
// or that hard-links to something outside the layer is rejected with ErrRejected; a leading "/" is
// taken as relative to the layer root, as containerd does. Symlinks themselves are kept verbatim (an
// absolute target is fine; it is only dangerous when followed, and nothing here follows one).
//
// A failed apply leaves nothing behind: the layer is extracted into a temporary sibling directory and
// renamed into place only once the whole stream has been read and checked.
package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// ErrRejected marks a layer entry refused for safety: it would escape the layer directory, traverse
// a symlink, link outside the layer, or create a device node without root.
var ErrRejected = errors.New("layer entry rejected")

// ErrLimit marks a layer refused because unpacking it would cost more than Limits allow.
var ErrLimit = errors.New("layer exceeds unpack limit")

// ErrCorrupt marks a layer stream that is not a well-formed layer: bad compression or tar data, a
// missing end-of-archive marker, or content that does not match the expected diffID.
var ErrCorrupt = errors.New("corrupt layer")

// Options tune Apply.
type Options struct {
	// DiffID, when set ("sha256:<hex>"), is the digest the uncompressed stream must have (the image
	// config's rootfs.diff_ids entry); a mismatch fails the apply and leaves nothing behind.
	DiffID string
	// UserXattr writes the opaque marker as user.overlay.opaque, for overlayfs mounted with the
	// userxattr option (rootless); the default is trusted.overlay.opaque.
	UserXattr bool
	// Limits bound the cost of the layer; a zero field means its default.
	Limits Limits
}

// Limits bound what unpacking one layer may cost, so that a small hostile layer cannot spend minutes
// of CPU, all the memory or all the inodes of a node. containerd has no such limits, so the defaults
// are far above anything a real image has; a layer over one fails with ErrLimit naming it (by its
// config.toml key) and nothing of the layer is kept. A zero field means its default.
type Limits struct {
	// MaxPathLength bounds an entry's path below the layer root, in bytes (max_path_length).
	MaxPathLength int
	// MaxPathDepth bounds the number of components of an entry's path (max_path_depth). It also
	// bounds the directory descriptors an unpack holds open at once.
	MaxPathDepth int
	// MaxEntries bounds the number of tar entries (max_entries).
	MaxEntries int64
	// MaxBytes bounds the uncompressed tar stream, and separately the sum of the file sizes its
	// headers declare (a sparse file's holes count), in bytes (max_uncompressed_bytes).
	MaxBytes int64
}

// The default limits, and why no real image comes near them.
const (
	// PATH_MAX: no program in the container could open a longer path with one system call.
	DefaultMaxPathLength = 4096
	// Real images nest a few dozen levels at most (deep node_modules trees included); a path this
	// deep must have components of 16 bytes or less on average to stay within PATH_MAX.
	DefaultMaxPathDepth = 256
	// The largest distribution and toolchain layers have a few hundred thousand files; a million
	// inodes is what a whole 16 GiB ext4 filesystem has at its default ratio.
	DefaultMaxEntries = 1 << 20
	// The largest layer a major registry accepts is ECR's 52,000 MiB compressed (Docker Hub and
	// GHCR take 10 GB); layers that big are model weights, which barely compress, so 64 GiB is
	// above any of them. What the limit stops is a gzip bomb decompressing for ever; a layer that
	// does not fit the disk fails on ENOSPC first.
	DefaultMaxBytes = 64 << 30
)

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	if l.MaxPathLength <= 0 {
		l.MaxPathLength = DefaultMaxPathLength
	}
	if l.MaxPathDepth <= 0 {
		l.MaxPathDepth = DefaultMaxPathDepth
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	return l
}

// checkPath refuses a cleaned path that is too long or too deep.
func (l Limits) checkPath(rel string) error {
	if len(rel) > l.MaxPathLength {
		return fmt.Errorf("%w max_path_length = %d: the path is %d bytes long", ErrLimit, l.MaxPathLength, len(rel))
	}
	if n := strings.Count(rel, "/") + 1; n > l.MaxPathDepth {
		return fmt.Errorf("%w max_path_depth = %d: the path has %d components", ErrLimit, l.MaxPathDepth, n)
	}
	return nil
}

// Result describes an applied layer.
type Result struct {
	// DiffID is the sha256 of the uncompressed tar stream, "sha256:<hex>".
	DiffID string
	// Size is the disk space the layer's files and directories occupy, in bytes.
	Size int64
	// Inodes is the number of filesystem objects created.
	Inodes int64
}

// Apply extracts the layer tar stream r into dir, which must not exist yet; its parent must.
// Compression (gzip, zstd or none) is detected from the stream's first bytes. Ownership, device
// nodes and non-user xattrs are applied only when running as root; without root a device node is
// rejected and ownership is left to the caller's uid.
func Apply(ctx context.Context, r io.Reader, dir string, opts Options) (Result, error) {
	return apply(ctx, r, dir, opts, os.Geteuid() == 0)
}

func apply(ctx context.Context, r io.Reader, dir string, opts Options, privileged bool) (res Result, err error) {
	if _, err := os.Lstat(dir); err == nil {
		return Result{}, fmt.Errorf("apply layer to %s: %w", dir, os.ErrExist)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".extract-"+filepath.Base(dir)+"-")
	if err != nil {
		return Result{}, fmt.Errorf("apply layer to %s: %w", dir, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	// MkdirTemp makes 0700; a layer root is an ordinary directory that overlayfs may show as "/".
	if err := os.Chmod(tmp, 0o755); err != nil {
		return Result{}, fmt.Errorf("apply layer to %s: %w", dir, err)
	}

	res, err = extract(ctx, r, tmp, opts, privileged)
	if err != nil {
		return Result{}, fmt.Errorf("apply layer to %s: %w", dir, err)
	}
	if opts.DiffID != "" && res.DiffID != opts.DiffID {
		return Result{}, fmt.Errorf("apply layer to %s: %w: uncompressed content is %s, the image config says %s", dir, ErrCorrupt, res.DiffID, opts.DiffID)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return Result{}, fmt.Errorf("apply layer to %s: %w", dir, err)
	}
	return res, nil
}

// Compression names a layer stream's compression.
type Compression string

// The compressions DetectCompression recognises.
const (
	Uncompressed Compression = "none"
	Gzip         Compression = "gzip"
	Zstd         Compression = "zstd"
	Bzip2        Compression = "bzip2"
	Xz           Compression = "xz"
)

var magics = []struct {
	c     Compression
	magic []byte
}{
	{Gzip, []byte{0x1f, 0x8b, 0x08}},
	{Zstd, []byte{0x28, 0xb5, 0x2f, 0xfd}},
	{Bzip2, []byte{'B', 'Z', 'h'}},
	{Xz, []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}},
}

// DetectCompression names the compression of a stream that starts with head.
func DetectCompression(head []byte) Compression {
	for _, m := range magics {
		if bytes.HasPrefix(head, m.magic) {
			return m.c
		}
	}
	return Uncompressed
}

// decompress returns the uncompressed stream of r and a function releasing its decoder.
func decompress(r io.Reader) (io.Reader, func(), error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(6)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, err
	}
	switch c := DetectCompression(head); c {
	case Gzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: gzip: %w", ErrCorrupt, err)
		}
		return zr, func() { zr.Close() }, nil
	case Zstd:
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: zstd: %w", ErrCorrupt, err)
		}
		return zr, zr.Close, nil
	case Uncompressed:
		return br, func() {}, nil
	default:
		return nil, nil, fmt.Errorf("%w: %s-compressed layers are not supported (only gzip, zstd or plain tar)", ErrCorrupt, c)
	}
}

// extract unpacks r into root (an empty directory) and reports what it did.
func extract(ctx context.Context, r io.Reader, root string, opts Options, privileged bool) (Result, error) {
	opts.Limits = opts.Limits.WithDefaults()
	plain, release, err := decompress(&ctxReader{ctx: ctx, r: r})
	if err != nil {
		return Result{}, err
	}
	defer release()
	h := sha256.New()
	var tail zeroTail
	tee := io.TeeReader(&byteLimit{r: plain, max: opts.Limits.MaxBytes}, io.MultiWriter(h, &tail))

	x, err := newExtractor(root, privileged, opts)
	if err != nil {
		return Result{}, err
	}
	defer x.close()

	tr := tar.NewReader(tee)
	var entries int64
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Result{}, readError(ctx, err)
		}
		if err := ctx.Err(); err != nil {
			return Result{}, err
		}
		if entries++; entries > opts.Limits.MaxEntries {
			return Result{}, fmt.Errorf("entry %q: %w max_entries = %d", shortName(hdr.Name), ErrLimit, opts.Limits.MaxEntries)
		}
		if err := x.entry(hdr, &streamReader{tr}); err != nil {
			var se *streamError
			if errors.As(err, &se) {
				err = readError(ctx, se.err)
			}
			return Result{}, fmt.Errorf("entry %q: %w", shortName(hdr.Name), err)
		}
	}
	// The diffID covers the whole stream, including the tar trailer and any padding after it.
	if _, err := io.Copy(io.Discard, tee); err != nil {
		return Result{}, readError(ctx, err)
	}
	// archive/tar takes a stream cut at a header boundary for a complete one.
	if tail < 512 {
		return Result{}, fmt.Errorf("%w: tar stream ends without its end-of-archive marker (truncated)", ErrCorrupt)
	}
	if err := x.finish(); err != nil {
		return Result{}, err
	}
	return Result{DiffID: digestString(h), Size: x.size, Inodes: x.inodes}, nil
}

// readError classifies an error reading the layer stream: cancellation stays cancellation, a
// decoding failure is corruption; a failing source (disk, network) is neither.
func readError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, ErrLimit) {
		return err
	}
	var src *sourceError
	if errors.As(err, &src) {
		return fmt.Errorf("read layer: %w", src.err)
	}
	return fmt.Errorf("%w: %w", ErrCorrupt, err)
}

// shortName shortens an entry name for an error message: a path may be kilobytes long.
func shortName(name string) string {
	const keep = 64
	if len(name) <= keep {
		return name
	}
	return name[:keep] + "…"
}

// byteLimit fails the read that takes the stream past max bytes.
type byteLimit struct {
	r        io.Reader
	n, max   int64
	exceeded bool
}

func (b *byteLimit) Read(p []byte) (int, error) {
	if b.exceeded {
		return 0, fmt.Errorf("%w max_uncompressed_bytes = %d", ErrLimit, b.max)
	}
	n, err := b.r.Read(p)
	if b.n += int64(n); b.n > b.max {
		b.exceeded = true
		return n, fmt.Errorf("%w max_uncompressed_bytes = %d", ErrLimit, b.max)
	}
	return n, err
}

// streamReader marks errors reading an entry's content, so they are not taken for write errors.
type streamReader struct{ r io.Reader }

func (s *streamReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		err = &streamError{err}
	}
	return n, err
}

type streamError struct{ err error }

func (e *streamError) Error() string { return e.err.Error() }
func (e *streamError) Unwrap() error { return e.err }

// sourceError marks an error of the underlying reader, as opposed to one of decoding its bytes.
type sourceError struct{ err error }

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

func digestString(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

// zeroTail counts the zero bytes at the end of what was written to it.
type zeroTail int64

func (z *zeroTail) Write(p []byte) (int, error) {
	i := len(p) - 1
	for i >= 0 && p[i] == 0 {
		i--
	}
	if i < 0 {
		*z += zeroTail(len(p))
	} else {
		*z = zeroTail(len(p) - 1 - i)
	}
	return len(p), nil
}

// ctxReader stops a long copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, &sourceError{err}
	}
	n, err := c.r.Read(p)
	if err != nil && err != io.EOF {
		err = &sourceError{err}
	}
	return n, err
}

// cleanPath turns a tar entry name into a slash-separated path relative to the layer root ("" is
// the root itself). A leading "/" is ignored; a ".." that would climb above the root is rejected.
func cleanPath(name string) (string, error) {
	if isClean(name) {
		return strings.TrimSuffix(name, "/"), nil // the usual case, without allocating
	}
	var out []string
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
		case "..":
			if len(out) == 0 {
				return "", fmt.Errorf("%w: %q climbs out of the layer directory", ErrRejected, name)
			}
			out = out[:len(out)-1]
		default:
			out = append(out, c)
		}
	}
	return strings.Join(out, "/"), nil
}

// isClean reports whether name is a relative path without empty, "." or ".." components, a
// trailing "/" aside.
func isClean(name string) bool {
	rest := strings.TrimSuffix(name, "/")
	if rest == "" {
		return false
	}
	for rest != "" {
		var c string
		c, rest, _ = strings.Cut(rest, "/")
		if c == "" || c == "." || c == ".." {
			return false
		}
	}
	return !strings.HasSuffix(name, "//")
}

// split returns the parent directory and last component of a cleaned, non-root path.
func split(p string) (dir, base string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}
