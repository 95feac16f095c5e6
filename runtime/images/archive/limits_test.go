package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"strings"
	"syscall"
	"testing"
	"time"
)

// deepLayer is a tar stream of depth nested directories "a/", "a/a/", …: a few KB of gzip that
// used to cost minutes of CPU, because each entry walked its whole path again.
func deepLayer(t testing.TB, depth int) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	name := ""
	for range depth {
		name += "a/"
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, Format: tar.FormatPAX}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestApplyLimits(t *testing.T) {
	small := Limits{MaxPathLength: 11, MaxPathDepth: 3, MaxEntries: 4, MaxBytes: 8 << 10}
	for _, tc := range []struct {
		name    string
		entries []entry
		want    string
	}{
		{"path length", []entry{file("abcde/fghijk", "x", 0o644)},
			`entry "abcde/fghijk": layer exceeds unpack limit max_path_length = 11: the path is 12 bytes long`},
		{"path depth", []entry{file("a/b/c/d", "x", 0o644)},
			`entry "a/b/c/d": layer exceeds unpack limit max_path_depth = 3: the path has 4 components`},
		{"depth of a directory", []entry{dir("a/b/c/d/", 0o755)},
			`entry "a/b/c/d/": layer exceeds unpack limit max_path_depth = 3: the path has 4 components`},
		{"depth of a whiteout", []entry{file("a/b/c/.wh.d", "", 0)},
			`entry "a/b/c/.wh.d": layer exceeds unpack limit max_path_depth = 3: the path has 4 components`},
		{"entries", []entry{file("a", "", 0o644), file("b", "", 0o644), dir("c/", 0o755), file("c/d", "", 0o644), file("e", "", 0o644)},
			`entry "e": layer exceeds unpack limit max_entries = 4`},
		{"uncompressed bytes", []entry{file("big", strings.Repeat("x", 16<<10), 0o644)},
			`layer exceeds unpack limit max_uncompressed_bytes = 8192`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			layer := compress(t, Gzip, tarball(t, tc.entries...))
			_, err := Apply(context.Background(), bytes.NewReader(layer), filepath.Join(s.layers, "1"), Options{Limits: small})
			if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply = %v\nwant ErrLimit containing %s", err, tc.want)
			}
			s.untouched(t)
		})
	}

	// At the limits, everything is applied.
	s := newSandbox(t)
	dst := filepath.Join(s.layers, "1")
	layer := tarball(t, file("ab/cd/efghi", "x", 0o644), dir("x/", 0o755), file("y", "", 0o644), file("z", "", 0o644))
	if _, err := Apply(context.Background(), bytes.NewReader(layer), dst, Options{Limits: small}); err != nil {
		t.Fatalf("a layer at the limits: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dst, "ab/cd/efghi")); err != nil {
		t.Error(err)
	}
}

// With no limits given, the defaults apply: the deep layer fails at its 257th entry, at once.
func TestApplyDeepLayerDefaultLimits(t *testing.T) {
	s := newSandbox(t)
	layer := compress(t, Gzip, deepLayer(t, 3000))
	t.Logf("hostile layer: %d bytes of gzip", len(layer))
	_, err := Apply(context.Background(), bytes.NewReader(layer), filepath.Join(s.layers, "1"), Options{})
	if want := "layer exceeds unpack limit max_path_depth = 256: the path has 257 components"; !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), want) {
		t.Fatalf("Apply = %.300v\nwant ErrLimit containing %q", err, want)
	}
	// The error names the entry, shortened: a path may be 4 KB long.
	if len(err.Error()) > 400 {
		t.Errorf("error of %d bytes: %.200s…", len(err.Error()), err)
	}
	s.untouched(t)
}

// A directory that is replaced must not be reached through a descriptor opened before: what
// follows goes into the new directory.
func TestApplyReplacedDirectory(t *testing.T) {
	s := newSandbox(t)
	dst := filepath.Join(s.layers, "1")
	layer := tarball(t,
		dir("a/", 0o755), dir("a/b/", 0o755), file("a/b/f", "old", 0o644),
		file("a", "now a file", 0o644),
		dir("a/", 0o700), file("a/b/g", "new", 0o644),
		file("c/d/e", "1", 0o644), file("c/.wh.d", "", 0), dir("c/d/", 0o711),
	)
	if _, err := Apply(context.Background(), bytes.NewReader(layer), dst, Options{}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "a/b/g")); err != nil || string(b) != "new" {
		t.Errorf("a/b/g = %q, %v", b, err)
	}
	if _, err := os.Lstat(filepath.Join(dst, "a/b/f")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a/b/f of the replaced directory is still there: %v", err)
	}
	for p, want := range map[string]os.FileMode{"a": os.ModeDir | 0o700, "a/b": os.ModeDir | 0o755, "c/d": os.ModeDir | 0o711} {
		if fi, err := os.Lstat(filepath.Join(dst, p)); err != nil || fi.Mode() != want {
			t.Errorf("%s: %v, %v; want %v", p, fi.Mode(), err, want)
		}
	}
	if _, err := os.Lstat(filepath.Join(dst, "c/d/e")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("c/d/e survived its parent's whiteout: %v", err)
	}
}

// BenchmarkApplyDeepPaths measures the deep layer of the security review: with the limits lifted, the
// cost of walking paths (linear now, quadratic before); with the defaults, the cost of refusing it.
// CPU time is the process's user+system time (getrusage); heap is the peak of live heap objects,
// sampled every millisecond (peak-heap-MiB), besides the bytes allocated (B/op).
func BenchmarkApplyDeepPaths(b *testing.B) {
	layer := compress(nil, Gzip, deepLayer(b, 3000))
	for _, bc := range []struct {
		name   string
		limits Limits
	}{
		{"lifted", Limits{MaxPathLength: 1 << 20, MaxPathDepth: 1 << 20}},
		{"defaults", Limits{}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			var cpu0, cpu1 syscall.Rusage
			runtime.GC()
			stop := peakHeap()
			syscall.Getrusage(syscall.RUSAGE_SELF, &cpu0)
			for i := range b.N {
				dst := filepath.Join(b.TempDir(), "l", "1")
				os.MkdirAll(filepath.Dir(dst), 0o755)
				_, err := Apply(context.Background(), bytes.NewReader(layer), dst, Options{Limits: bc.limits})
				if (err == nil) != (bc.name == "lifted") {
					b.Fatalf("run %d: %v", i, err)
				}
			}
			syscall.Getrusage(syscall.RUSAGE_SELF, &cpu1)
			b.ReportMetric(float64(stop())/(1<<20), "peak-heap-MiB")
			cpu := float64(cpu1.Utime.Nano()+cpu1.Stime.Nano()-cpu0.Utime.Nano()-cpu0.Stime.Nano()) / 1e9
			b.ReportMetric(cpu/float64(b.N), "cpu-s/op")
		})
	}
}

// peakHeap samples the bytes of live heap objects every millisecond until stop is called, and
// returns the largest sample.
func peakHeap() (stop func() uint64) {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	done, peak := make(chan struct{}), make(chan uint64)
	go func() {
		var max uint64
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(s)
			max = maxU(max, s[0].Value.Uint64())
			select {
			case <-done:
				peak <- max
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 { close(done); return <-peak }
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}
