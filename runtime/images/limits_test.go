package images

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"golang.org/x/sys/unix"

	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/runtime/images/archive"
)

// tarLayer is a gzip layer of entries, each a directory (name ending in "/") or a file of size
// bytes of content.
func tarLayer(t *testing.T, write func(tw *tar.Writer)) v1.Layer {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	write(tw)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// deepPathLayer is the layer of the security review: 3000 nested directories "a/a/a/…", about
// 140 KB of gzip, which cost minutes of CPU to unpack.
func deepPathLayer(t *testing.T) v1.Layer {
	return tarLayer(t, func(tw *tar.Writer) {
		name := ""
		for range 3000 {
			name += "a/"
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, Format: tar.FormatPAX}); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// A layer over an unpack limit fails the pull at once, naming the limit and the layer; nothing of
// the image is recorded and the store keeps working.
func TestPullDeepPathLayerFailsFast(t *testing.T) {
	reg := newTestRegistry(t)
	deep := deepPathLayer(t)
	ref := reg.push("deep:1", testImage(t, "", layer(t), deep))
	s := openStore(t, Options{})

	_, err := s.Pull(context.Background(), ref, PullOptions{})
	want := "unpack layer " + digest(t, deep) + ": "
	limit := "layer exceeds unpack limit max_path_depth = 256: the path has 257 components"
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), limit) {
		t.Fatalf("Pull = %.600v\nwant ErrInvalid containing %q and %q", err, want, limit)
	}
	t.Log(err)
	if list, _ := s.List(); len(list) != 0 {
		t.Errorf("image recorded: %v", list)
	}
	s.clean(t)
	good := reg.push("good:1", testImage(t, "", layer(t)))
	if _, err := s.Pull(context.Background(), good, PullOptions{}); err != nil {
		t.Fatalf("pull after the refused one: %v", err)
	}
}

// The store's Unpack options reach the unpacker.
func TestPullUnpackLimitsConfigured(t *testing.T) {
	reg := newTestRegistry(t)
	three := tarLayer(t, func(tw *tar.Writer) {
		for _, n := range []string{"a", "b", "c"} {
			tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644})
		}
	})
	ref := reg.push("three:1", testImage(t, "", three))
	s := openStore(t, Options{Unpack: archive.Limits{MaxEntries: 2}})
	_, err := s.Pull(context.Background(), ref, PullOptions{})
	if want := `unpack layer ` + digest(t, three); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) ||
		!strings.Contains(err.Error(), `entry "c": layer exceeds unpack limit max_entries = 2`) {
		t.Fatalf("Pull = %v, want ErrInvalid naming %s and max_entries = 2", err, want)
	}
	s.clean(t)
	if _, err := openStore(t, Options{}).Pull(context.Background(), ref, PullOptions{}); err != nil {
		t.Errorf("with the default limits: %v", err)
	}
}

// A pull that fills the disk fails with ENOSPC and leaves nothing of the layer or blob it was
// writing: the space is free again and the store still pulls. The store lives on an 8 MiB tmpfs
// mounted in a mount namespace of its own (the test re-runs itself there).
func TestPullDiskFull(t *testing.T) {
	testgate.RequireRoot(t)
	dir := os.Getenv("INGOT_TEST_SMALL_TMPFS")
	if dir == "" {
		dir = t.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^TestPullDiskFull$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "INGOT_TEST_SMALL_TMPFS="+dir)
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS} // also makes / private
		out, err := cmd.CombinedOutput()
		t.Logf("in a private mount namespace:\n%s", out)
		if err != nil {
			t.Fatalf("%v", err)
		}
		return
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size=8m,mode=0700"); err != nil {
		t.Fatalf("mount a small tmpfs: %v", err)
	}
	free := func() uint64 {
		var st unix.Statfs_t
		if err := unix.Statfs(dir, &st); err != nil {
			t.Fatal(err)
		}
		return st.Bfree * uint64(st.Bsize)
	}
	s, err := Open(filepath.Join(dir, "images"), Options{Logger: openStore(t, Options{}).log})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	reg := newTestRegistry(t)

	zeros := tarLayer(t, func(tw *tar.Writer) { // 16 MiB unpacked from a few KB of gzip
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "big", Mode: 0o644, Size: 16 << 20})
		tw.Write(make([]byte, 16<<20))
	})
	noise := make([]byte, 12<<20)
	rand.Read(noise)
	random := tarLayer(t, func(tw *tar.Writer) { // a 12 MiB blob that does not compress
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "noise", Mode: 0o644, Size: int64(len(noise))})
		tw.Write(noise)
	})
	for _, tc := range []struct {
		name  string
		layer v1.Layer
		want  string
	}{
		{"unpacking", zeros, "unpack layer " + digest(t, zeros)},
		{"downloading", random, "write blob " + digest(t, random)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := free()
			ref := reg.push("full:"+tc.name, testImage(t, "", layer(t), tc.layer))
			_, err := s.Pull(context.Background(), ref, PullOptions{})
			if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Pull = %v, want ENOSPC naming %q", err, tc.want)
			}
			t.Log(err)
			if list, _ := s.List(); len(list) != 0 {
				t.Errorf("image recorded: %v", list)
			}
			s.clean(t)
			// What remains is the small first layer and the manifest and config: tens of KB.
			if after := free(); after+256<<10 < before {
				t.Errorf("%d KiB of the %d KiB that were free are still used after the failed pull", (before-after)>>10, before>>10)
			}
		})
	}
	good := reg.push("fits:1", testImage(t, "", layer(t)))
	if _, err := s.Pull(context.Background(), good, PullOptions{}); err != nil {
		t.Fatalf("pull of an image that fits, after the disk was full: %v", err)
	}
}
