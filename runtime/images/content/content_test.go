package content

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func ingestEmpty(t *testing.T, root string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(root, "ingest"))
	if err != nil || len(entries) != 0 {
		t.Errorf("ingest holds %v (%v), want nothing", entries, err)
	}
}

func TestWriteVerifies(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	blob := []byte("hello blob")
	d := digestOf(blob)

	for _, tc := range []struct {
		name string
		data []byte
		size int64
	}{
		{"tampered", []byte("hellO blob"), int64(len(blob))},
		{"short", blob[:5], int64(len(blob))},
		{"long", append(blob, '!'), int64(len(blob))},
		{"wrong size", blob, int64(len(blob)) + 3},
	} {
		err := s.Write(ctx, d, tc.size, bytes.NewReader(tc.data))
		if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), d) {
			t.Errorf("%s: Write = %v, want ErrMismatch naming %s", tc.name, err, d)
		}
		if s.Has(d, -1) {
			t.Fatalf("%s: a mismatching blob was stored", tc.name)
		}
		ingestEmpty(t, root)
	}

	if err := s.Write(ctx, d, int64(len(blob)), bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReadAll(d, int64(len(blob))); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("ReadAll = %q, %v", got, err)
	}
	if p, _ := s.Path(d); p != filepath.Join(root, "blobs", "sha256", d[7:]) {
		t.Errorf("blob stored at %s", p)
	}
	// Stored already: the reader is not consumed.
	if err := s.Write(ctx, d, int64(len(blob)), failingReader{}); err != nil {
		t.Errorf("rewrite of a stored blob read its input: %v", err)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0] != (Blob{d, int64(len(blob))}) {
		t.Errorf("List = %v, %v", list, err)
	}
	if err := s.Delete(d); err != nil || s.Has(d, -1) {
		t.Errorf("Delete: %v", err)
	}
	if err := s.Delete(d); err != nil {
		t.Errorf("Delete of an absent blob: %v", err)
	}
	if _, err := s.Open(d); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Open of a deleted blob = %v", err)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("read") }

func TestDigestsAreNotPaths(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"sha256:../../etc/passwd", "sha512:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("A", 64), ""} {
		if err := s.Write(context.Background(), d, 1, strings.NewReader("x")); err == nil {
			t.Errorf("Write(%q) accepted", d)
		}
		if _, err := s.Path(d); err == nil {
			t.Errorf("Path(%q) accepted", d)
		}
	}
}

func TestInterruptedWriteLeavesNothing(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	blob := bytes.Repeat([]byte("x"), 1<<20)
	d := digestOf(blob)
	ctx, cancel := context.WithCancel(context.Background())
	r := &cancelAfter{r: bytes.NewReader(blob), n: 4096, cancel: cancel}
	if err := s.Write(ctx, d, int64(len(blob)), r); !errors.Is(err, context.Canceled) {
		t.Fatalf("Write = %v, want context.Canceled", err)
	}
	ingestEmpty(t, root)

	// A crash mid-write leaves a file in ingest/: the next Open removes it.
	os.WriteFile(filepath.Join(root, "ingest", "blob-123"), []byte("partial"), 0o600)
	if _, err := Open(root); err != nil {
		t.Fatal(err)
	}
	ingestEmpty(t, root)
	if err := s.Write(context.Background(), d, int64(len(blob)), bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
}

type cancelAfter struct {
	r      io.Reader
	n      int
	cancel func()
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
	}
	n, err := c.r.Read(p[:min(len(p), 1024)])
	c.n -= n
	return n, err
}

// A negative size must not switch off the length check: a registry could then stream any amount.
func TestWriteRefusesNegativeSize(t *testing.T) {
	root := t.TempDir()
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	blob := []byte("a blob of unknown length")
	d := digestOf(blob)
	err = s.Write(context.Background(), d, -1, bytes.NewReader(blob))
	if want := "write blob " + d + ": size -1 is negative"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Write with size -1 = %v, want an error containing %q", err, want)
	}
	if s.Has(d, int64(len(blob))) {
		t.Error("blob of undeclared size stored")
	}
	ingestEmpty(t, root)
}

// ReadAll reads no more than the caller's bound, whatever the file on disk holds.
func TestReadAllBounded(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	blob := bytes.Repeat([]byte("x"), 4096)
	d := digestOf(blob)
	if err := s.Write(context.Background(), d, int64(len(blob)), bytes.NewReader(blob)); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReadAll(d, int64(len(blob))); err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("ReadAll within the bound = %d bytes, %v", len(got), err)
	}
	_, err = s.ReadAll(d, 100)
	if want := "read blob " + d + ": larger than 100 bytes"; err == nil || err.Error() != want {
		t.Errorf("ReadAll beyond the bound = %v, want %q", err, want)
	}
}
