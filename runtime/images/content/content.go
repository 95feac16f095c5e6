// Package content is the node's content-addressed blob store: manifests, image configs and
// compressed layers, each stored under <root>/blobs/sha256/<hex> once its bytes have been verified.
//
// A blob is written to <root>/ingest/ first and renamed into place only when its sha256 and size
// match what was asked for, so a reader never sees a partial or forged blob. Whatever is left in
// ingest/ by an interrupted write is removed when the store opens. The store never decides what to
// keep: deleting unreferenced blobs is its caller's garbage collection.
package content

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrMismatch means a blob's bytes did not have the digest or size they were expected to have.
var ErrMismatch = errors.New("content does not match its digest")

// Store is a directory of verified blobs. It is safe for concurrent use: concurrent writes of the
// same blob each verify their own copy and the last rename wins with identical bytes.
type Store struct {
	blobs  string
	ingest string
}

// Open opens (creating if needed) the store at root and removes leftovers of interrupted writes.
func Open(root string) (*Store, error) {
	s := &Store{blobs: filepath.Join(root, "blobs", "sha256"), ingest: filepath.Join(root, "ingest")}
	if err := os.RemoveAll(s.ingest); err != nil {
		return nil, fmt.Errorf("open content store %s: clean ingest: %w", root, err)
	}
	for _, d := range []string{s.blobs, s.ingest} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open content store %s: %w", root, err)
		}
	}
	return s, nil
}

// CheckDigest accepts only "sha256:" followed by 64 lowercase hex digits: a digest becomes a file
// name, so anything else (a path, another algorithm) is refused before it gets near the filesystem.
func CheckDigest(digest string) (hexPart string, err error) {
	const p = "sha256:"
	if len(digest) != len(p)+64 || digest[:len(p)] != p {
		return "", fmt.Errorf("digest %q: want sha256:<64 hex digits>", digest)
	}
	h := digest[len(p):]
	for _, c := range h {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", fmt.Errorf("digest %q: want sha256:<64 hex digits>", digest)
		}
	}
	return h, nil
}

// Path returns the file holding digest (which may not exist).
func (s *Store) Path(digest string) (string, error) {
	h, err := CheckDigest(digest)
	if err != nil {
		return "", err
	}
	return filepath.Join(s.blobs, h), nil
}

// Stat returns the size of the stored blob; the error wraps fs.ErrNotExist when it is absent.
func (s *Store) Stat(digest string) (int64, error) {
	p, err := s.Path(digest)
	if err != nil {
		return 0, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", digest, err)
	}
	return fi.Size(), nil
}

// Has reports whether the blob is stored with the given size (any size when size < 0).
func (s *Store) Has(digest string, size int64) bool {
	n, err := s.Stat(digest)
	return err == nil && (size < 0 || n == size)
}

// Open opens a stored blob for reading.
func (s *Store) Open(digest string) (*os.File, error) {
	p, err := s.Path(digest)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("blob %s: %w", digest, err)
	}
	return f, nil
}

// ReadAll returns a stored blob's bytes; it is meant for manifests and configs. It reads at most
// max bytes: a blob that is larger is an error, so no document can make the caller load more memory
// than it budgeted for.
func (s *Store) ReadAll(digest string, max int64) ([]byte, error) {
	f, err := s.Open(digest)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", digest, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("read blob %s: larger than %d bytes", digest, max)
	}
	return b, nil
}

// Write stores the blob read from r, which must have exactly digest and size. Nothing is stored
// unless both match; on mismatch the error wraps ErrMismatch and names digest. A blob already stored
// with that size is not read again. A negative size is refused: there is no "any size", so a
// descriptor can never switch off the bound on what a registry may send.
func (s *Store) Write(ctx context.Context, digest string, size int64, r io.Reader) (err error) {
	dst, err := s.Path(digest)
	if err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("write blob %s: size %d is negative", digest, size)
	}
	if s.Has(digest, size) {
		return nil
	}
	f, err := os.CreateTemp(s.ingest, "blob-")
	if err != nil {
		return fmt.Errorf("write blob %s: %w", digest, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	h := sha256.New()
	src := io.LimitReader(r, size+1) // one byte more reveals a blob that is too long
	n, err := io.Copy(io.MultiWriter(f, h), &ctxReader{ctx, src})
	if err != nil {
		return fmt.Errorf("write blob %s: %w", digest, err)
	}
	if n != size {
		return fmt.Errorf("write blob %s: %w: got %d bytes, want %d", digest, ErrMismatch, n, size)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != digest {
		return fmt.Errorf("write blob %s: %w: the bytes received hash to %s", digest, ErrMismatch, got)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("write blob %s: %w", digest, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write blob %s: %w", digest, err)
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return fmt.Errorf("write blob %s: %w", digest, err)
	}
	return nil
}

// Delete removes a blob; deleting an absent blob is not an error.
func (s *Store) Delete(digest string) error {
	p, err := s.Path(digest)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete blob %s: %w", digest, err)
	}
	return nil
}

// Blob is one stored blob.
type Blob struct {
	Digest string
	Size   int64
}

// List returns every stored blob; stray files that are not named by a digest are skipped.
func (s *Store) List() ([]Blob, error) {
	entries, err := os.ReadDir(s.blobs)
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	var out []Blob
	for _, e := range entries {
		d := "sha256:" + e.Name()
		if _, err := CheckDigest(d); err != nil || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // deleted since ReadDir
		}
		out = append(out, Blob{Digest: d, Size: fi.Size()})
	}
	return out, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
