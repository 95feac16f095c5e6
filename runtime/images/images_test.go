package images

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	bolt "go.etcd.io/bbolt"
)

// testRegistry is go-containerregistry's in-memory registry behind a handler that counts, delays,
// tampers with or stalls blob downloads.
type testRegistry struct {
	t    *testing.T
	srv  *httptest.Server
	host string
	reg  http.Handler

	mu          sync.Mutex
	blobGets    map[string]int
	inflight    int
	maxInflight int
	delay       time.Duration
	tamper      map[string]bool
	stall       map[string]chan struct{} // closed once the stalled download has started
}

func newTestRegistry(t *testing.T) *testRegistry {
	r := &testRegistry{t: t, reg: registry.New(registry.Logger(log.New(io.Discard, "", 0))),
		blobGets: map[string]int{}, tamper: map[string]bool{}, stall: map[string]chan struct{}{}}
	r.srv = httptest.NewServer(r)
	t.Cleanup(r.srv.Close)
	r.host = strings.TrimPrefix(r.srv.URL, "http://")
	return r
}

func (r *testRegistry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	i := strings.Index(req.URL.Path, "/blobs/sha256:")
	if req.Method != http.MethodGet || i < 0 {
		r.reg.ServeHTTP(w, req)
		return
	}
	d := req.URL.Path[i+len("/blobs/"):]
	r.mu.Lock()
	r.blobGets[d]++
	r.inflight++
	r.maxInflight = max(r.maxInflight, r.inflight)
	delay, tamper, stall := r.delay, r.tamper[d], r.stall[d]
	r.mu.Unlock()
	defer func() { r.mu.Lock(); r.inflight--; r.mu.Unlock() }()
	time.Sleep(delay)

	rec := httptest.NewRecorder()
	r.reg.ServeHTTP(rec, req)
	body := rec.Body.Bytes()
	if rec.Code != http.StatusOK {
		w.WriteHeader(rec.Code)
		w.Write(body)
		return
	}
	if tamper {
		body = bytes.Clone(body)
		body[len(body)/2] ^= 0xff
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	if stall != nil {
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		close(stall)
		<-req.Context().Done()
		return
	}
	w.Write(body)
}

func (r *testRegistry) gets(d v1.Hash) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.blobGets[d.String()]
}

func (r *testRegistry) totalGets() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.blobGets {
		n += c
	}
	return n
}

func (r *testRegistry) push(ref string, img v1.Image) string {
	r.t.Helper()
	full := r.host + "/" + ref
	nref, err := name.ParseReference(full)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := remote.Write(nref, img); err != nil {
		r.t.Fatalf("push %s: %v", full, err)
	}
	return full
}

func (r *testRegistry) pushIndex(ref string, idx v1.ImageIndex) string {
	r.t.Helper()
	full := r.host + "/" + ref
	nref, err := name.ParseReference(full)
	if err != nil {
		r.t.Fatal(err)
	}
	if err := remote.WriteIndex(nref, idx); err != nil {
		r.t.Fatalf("push %s: %v", full, err)
	}
	return full
}

func layer(t *testing.T) v1.Layer {
	t.Helper()
	l, err := random.Layer(2048, types.DockerLayer)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testImage builds an image of layers for the given architecture ("" = this machine's).
func testImage(t *testing.T, arch string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	if arch == "" {
		cf.Architecture = runtime.GOARCH
	}
	cf.Config = v1.Config{
		Entrypoint: []string{"/bin/app"}, Cmd: []string{"--serve"}, Env: []string{"PATH=/bin", "A=1"},
		User: "1000:1000", WorkingDir: "/srv", StopSignal: "SIGQUIT", Labels: map[string]string{"l": "v"},
		ExposedPorts: map[string]struct{}{"80/tcp": {}, "53/udp": {}}, Volumes: map[string]struct{}{"/data": {}},
	}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

func openStore(t *testing.T, opts Options) *Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := Open(filepath.Join(t.TempDir(), "images"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func id(t *testing.T, img v1.Image) string {
	t.Helper()
	h, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func digest(t *testing.T, d interface{ Digest() (v1.Hash, error) }) string {
	t.Helper()
	h, err := d.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// clean fails if an interrupted write or unpack left anything behind.
func (s *Store) clean(t *testing.T) {
	t.Helper()
	if e := dirEntries(t, filepath.Join(s.root, "content", "ingest")); len(e) != 0 {
		t.Errorf("ingest holds %v", e)
	}
	for _, e := range dirEntries(t, filepath.Join(s.root, "layers")) {
		if strings.HasPrefix(e, ".") {
			t.Errorf("layers holds %s", e)
		}
	}
}

func TestPullGetList(t *testing.T) {
	reg := newTestRegistry(t)
	img := testImage(t, "", layer(t), layer(t), layer(t))
	ref := reg.push("team/app:v1", img)
	s := openStore(t, Options{})
	ctx := context.Background()

	got, err := s.Pull(ctx, ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mdigest := digest(t, img)
	want := Image{
		ID:             id(t, img),
		RepoTags:       []string{reg.host + "/team/app:v1"},
		RepoDigests:    []string{reg.host + "/team/app@" + mdigest},
		ManifestDigest: mdigest,
		Platform:       Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config: Config{
			Entrypoint: []string{"/bin/app"}, Cmd: []string{"--serve"}, Env: []string{"PATH=/bin", "A=1"},
			User: "1000:1000", WorkingDir: "/srv", StopSignal: "SIGQUIT", Labels: map[string]string{"l": "v"},
			ExposedPorts: []string{"53/udp", "80/tcp"}, Volumes: []string{"/data"},
		},
	}
	if got.ID != want.ID || !slices.Equal(got.RepoTags, want.RepoTags) || !slices.Equal(got.RepoDigests, want.RepoDigests) ||
		got.ManifestDigest != want.ManifestDigest || got.Platform != want.Platform || fmt.Sprint(got.Config) != fmt.Sprint(want.Config) {
		t.Errorf("Pull =\n%+v\nwant\n%+v", got, want)
	}
	if len(got.ChainIDs) != 3 || got.Size < 3*2048 {
		t.Errorf("chain %v size %d", got.ChainIDs, got.Size)
	}

	hexID := strings.TrimPrefix(got.ID, "sha256:")
	for _, q := range []string{ref, reg.host + "/team/app@" + mdigest, got.ID, hexID, hexID[:12], "sha256:" + hexID[:12]} {
		if g, err := s.Get(q); err != nil || g.ID != got.ID {
			t.Errorf("Get(%q) = %s, %v", q, g.ID, err)
		}
	}
	for _, q := range []string{reg.host + "/team/app:v2", reg.host + "/other:v1", "busybox", "sha256:" + strings.Repeat("0", 64), "Not A Ref"} {
		if _, err := s.Get(q); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%q) = %v, want ErrNotFound", q, err)
		}
	}

	dirs, err := s.Layers(got.ID)
	if err != nil || len(dirs) != 3 {
		t.Fatalf("Layers = %v, %v", dirs, err)
	}
	ls, _ := img.Layers()
	for i, d := range dirs {
		files, _ := filepath.Glob(filepath.Join(d, "random_file_*"))
		rc, _ := ls[i].Uncompressed()
		tr := tar.NewReader(rc)
		h, _ := tr.Next()
		if len(files) != 1 || filepath.Base(files[0]) != h.Name {
			t.Errorf("layer %d dir %s holds %v, want %s", i, d, files, h.Name)
		}
		rc.Close()
	}

	// Pulling again is a no-op: the manifest is fetched, no blob is.
	before := reg.totalGets()
	again, err := s.Pull(ctx, ref, PullOptions{})
	if err != nil || again.ID != got.ID {
		t.Fatalf("re-pull = %s, %v", again.ID, err)
	}
	if n := reg.totalGets() - before; n != 0 {
		t.Errorf("re-pull fetched %d blobs", n)
	}
	list, err := s.List()
	if err != nil || len(list) != 1 || list[0].ID != got.ID {
		t.Errorf("List = %v, %v", list, err)
	}
	used, inodes, mp, err := s.FsInfo()
	if err != nil || used < 3*2048 || inodes < 6 || mp != s.root {
		t.Errorf("FsInfo = %d bytes, %d inodes, %q, %v", used, inodes, mp, err)
	}
	s.clean(t)
}

func TestSharedLayersUnpackedOnceAndRemove(t *testing.T) {
	reg := newTestRegistry(t)
	l1, l2, l3, l4 := layer(t), layer(t), layer(t), layer(t)
	a, b := testImage(t, "", l1, l2, l3), testImage(t, "", l1, l2, l4)
	refA, refB := reg.push("a:1", a), reg.push("b:1", b)
	s := openStore(t, Options{})
	ctx := context.Background()

	// Concurrent pulls of images sharing layers unpack each shared layer once.
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, ref := range []string{refA, refB} {
		wg.Add(1)
		go func() { defer wg.Done(); _, errs[i] = s.Pull(ctx, ref, PullOptions{}) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	la, _ := s.Layers(refA)
	lb, _ := s.Layers(refB)
	if len(la) != 3 || len(lb) != 3 || la[0] != lb[0] || la[1] != lb[1] || la[2] == lb[2] {
		t.Fatalf("layers a %v b %v: want the first two shared", la, lb)
	}
	if e := dirEntries(t, filepath.Join(s.root, "layers")); len(e) != 4 {
		t.Errorf("layers dir holds %v, want 4 layers", e)
	}
	refs := map[string]int{}
	s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLayers).ForEach(func(k, _ []byte) error {
			l, _ := getLayer(tx, string(k))
			refs[filepath.Base(l.Dir)] = l.Refs
			return nil
		})
	})
	if refs[filepath.Base(la[0])] != 2 || refs[filepath.Base(la[2])] != 1 {
		t.Errorf("layer refcounts %v", refs)
	}

	if err := s.Remove(refA); err != nil {
		t.Fatal(err)
	}
	for _, d := range la[:2] {
		if _, err := os.Stat(d); err != nil {
			t.Errorf("shared layer %s removed with a: %v", d, err)
		}
	}
	if _, err := os.Stat(la[2]); !os.IsNotExist(err) {
		t.Errorf("a's own layer %s still there", la[2])
	}
	ls, _ := a.Layers()
	if s.content.Has(digest(t, ls[2]), -1) || s.content.Has(id(t, a), -1) || s.content.Has(digest(t, a), -1) {
		t.Error("a's own blobs survived its removal")
	}
	if !s.content.Has(digest(t, ls[0]), -1) {
		t.Error("a shared blob was removed")
	}
	if err := s.Remove(refA); err != nil {
		t.Errorf("second Remove = %v, want nil (idempotent)", err)
	}
	if _, err := s.Get(refA); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get removed image = %v", err)
	}
	if _, err := s.Layers(refA); !errors.Is(err, ErrNotFound) {
		t.Errorf("Layers of removed image = %v", err)
	}
	if err := s.Remove(strings.TrimPrefix(id(t, b), "sha256:")[:12]); err != nil {
		t.Fatal(err)
	}
	if e := dirEntries(t, filepath.Join(s.root, "layers")); len(e) != 0 {
		t.Errorf("layers dir holds %v after removing every image", e)
	}
	if e := dirEntries(t, filepath.Join(s.root, "content", "blobs", "sha256")); len(e) != 0 {
		t.Errorf("blobs dir holds %v after removing every image", e)
	}
}

func TestMultiPlatformIndex(t *testing.T) {
	reg := newTestRegistry(t)
	imgs := map[string]v1.Image{}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range []Platform{{"linux", "amd64", ""}, {"linux", "arm64", "v8"}, {"linux", "arm", "v7"}} {
		img := testImage(t, p.Architecture, layer(t))
		imgs[p.Architecture] = img
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{
			Platform: &v1.Platform{OS: p.OS, Architecture: p.Architecture, Variant: p.Variant}}})
	}
	ref := reg.pushIndex("multi:latest", idx)
	ctx := context.Background()

	for _, tc := range []struct {
		platform Platform
		arch     string
	}{
		{Platform{}, runtime.GOARCH},
		{Platform{"linux", "arm64", ""}, "arm64"},
		{Platform{"linux", "arm64", "v8"}, "arm64"},
		{Platform{"linux", "amd64", ""}, "amd64"},
	} {
		s := openStore(t, Options{Platform: tc.platform})
		got, err := s.Pull(ctx, ref, PullOptions{})
		if err != nil {
			t.Fatalf("%v: %v", tc.platform, err)
		}
		img := imgs[tc.arch]
		if got.ID != id(t, img) || got.ManifestDigest != digest(t, img) || got.Platform.Architecture != tc.arch {
			t.Errorf("%v: pulled %+v, want the %s image", tc.platform, got, tc.arch)
		}
		if want := reg.host + "/multi@" + digest(t, idx); !slices.Equal(got.RepoDigests, []string{want}) {
			t.Errorf("repo digests %v, want the index's %s", got.RepoDigests, want)
		}
		if g, err := s.Get(reg.host + "/multi@" + got.ManifestDigest); err != nil || g.ID != got.ID {
			t.Errorf("Get by platform manifest digest = %v", err)
		}
	}
	s := openStore(t, Options{Platform: Platform{"linux", "s390x", ""}})
	if _, err := s.Pull(ctx, ref, PullOptions{}); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "linux/s390x") {
		t.Errorf("pull for a missing platform = %v", err)
	}
	// A single-platform image for another architecture is refused.
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	foreign := reg.push("foreign:1", testImage(t, other, layer(t)))
	if _, err := openStore(t, Options{}).Pull(ctx, foreign, PullOptions{}); !errors.Is(err, ErrInvalid) {
		t.Errorf("pull of a %s image = %v, want ErrInvalid", other, err)
	}
}

func TestDigestMismatchRejected(t *testing.T) {
	reg := newTestRegistry(t)
	img := testImage(t, "", layer(t), layer(t))
	ref := reg.push("app:1", img)
	ls, _ := img.Layers()
	bad := digest(t, ls[1])
	reg.tamper[bad] = true
	s := openStore(t, Options{})

	_, err := s.Pull(context.Background(), ref, PullOptions{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), bad) {
		t.Fatalf("Pull of a tampered blob = %v, want ErrInvalid naming %s", err, bad)
	}
	t.Log(err)
	if s.content.Has(bad, -1) {
		t.Error("tampered blob stored")
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Errorf("image recorded: %v", list)
	}
	s.clean(t)

	reg.mu.Lock()
	delete(reg.tamper, bad)
	reg.mu.Unlock()
	if _, err := s.Pull(context.Background(), ref, PullOptions{}); err != nil {
		t.Fatalf("pull after the registry was fixed: %v", err)
	}
}

func TestInterruptedPullThenPull(t *testing.T) {
	reg := newTestRegistry(t)
	img := testImage(t, "", layer(t), layer(t), layer(t))
	ref := reg.push("app:1", img)
	ls, _ := img.Layers()
	stalled := digest(t, ls[2])
	started := make(chan struct{})
	reg.stall[stalled] = started
	s := openStore(t, Options{MaxConcurrentDownloads: 1})

	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-started; cancel() }()
	if _, err := s.Pull(ctx, ref, PullOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Pull = %v, want context.Canceled", err)
	}
	s.clean(t)
	if s.content.Has(stalled, -1) {
		t.Error("half-downloaded blob stored")
	}

	// The next pull, even after a restart (which collects the layers the first one finished), completes.
	root := s.root
	s.Close()
	s, err := Open(root, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	reg.mu.Lock()
	delete(reg.stall, stalled)
	reg.mu.Unlock()
	got, err := s.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dirs, err := s.Layers(got.ID); err != nil || len(dirs) != 3 {
		t.Errorf("Layers = %v, %v", dirs, err)
	}
	s.clean(t)
}

func TestParallelDownloadsBounded(t *testing.T) {
	for _, limit := range []int{1, 2, 0} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			reg := newTestRegistry(t)
			var layers []v1.Layer
			for range 6 {
				layers = append(layers, layer(t))
			}
			ref := reg.push("app:1", testImage(t, "", layers...))
			reg.delay = 50 * time.Millisecond
			s := openStore(t, Options{MaxConcurrentDownloads: limit})
			if _, err := s.Pull(context.Background(), ref, PullOptions{}); err != nil {
				t.Fatal(err)
			}
			want := limit
			if want == 0 {
				want = 3 // the default
			}
			if reg.maxInflight != want {
				t.Errorf("%d blob downloads ran at once, want %d", reg.maxInflight, want)
			}
		})
	}
}

func TestTagMoves(t *testing.T) {
	reg := newTestRegistry(t)
	s := openStore(t, Options{})
	ctx := context.Background()
	old := testImage(t, "", layer(t))
	ref := reg.push("app:latest", old)
	if _, err := s.Pull(ctx, ref, PullOptions{}); err != nil {
		t.Fatal(err)
	}
	newer := testImage(t, "", layer(t))
	reg.push("app:latest", newer)
	got, err := s.Pull(ctx, ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if g, _ := s.Get(ref); g.ID != got.ID || got.ID != id(t, newer) {
		t.Fatalf("tag resolves to %s, want the newer image", g.ID)
	}
	prev, err := s.Get(id(t, old))
	if err != nil || len(prev.RepoTags) != 0 || len(prev.RepoDigests) != 1 {
		t.Fatalf("old image after the tag moved: %+v, %v; want untagged, still known by digest", prev, err)
	}

	// An image left without tags and digests is removed, layers included.
	oldDirs, _ := s.Layers(prev.ID)
	s.db.Update(func(tx *bolt.Tx) error {
		r, _ := resolve(tx, prev.ID)
		r.RepoDigests, r.RepoTags = nil, []string{reg.host + "/app:old"}
		return putImage(tx, r)
	})
	reg.push("app:old", newer)
	if _, err := s.Pull(ctx, reg.host+"/app:old", PullOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(prev.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("nameless image still there: %v", err)
	}
	if _, err := os.Stat(oldDirs[0]); !os.IsNotExist(err) {
		t.Errorf("its layer %s survived", oldDirs[0])
	}
	if g, _ := s.Get(reg.host + "/app:old"); g.ID != id(t, newer) || len(g.RepoTags) != 2 {
		t.Errorf("newer image: %+v", g)
	}
}

func TestHostileLayerRejected(t *testing.T) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "evil", Linkname: "/"})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "evil/etc/x", Size: 1, Mode: 0o644})
	tw.Write([]byte("x"))
	tw.Close()
	evil, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b.Bytes())), nil })
	if err != nil {
		t.Fatal(err)
	}
	reg := newTestRegistry(t)
	ref := reg.push("evil:1", testImage(t, "", layer(t), evil))
	s := openStore(t, Options{})
	if _, err := s.Pull(context.Background(), ref, PullOptions{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Pull = %v, want ErrInvalid", err)
	} else {
		t.Log(err)
	}
	s.clean(t)
	if list, _ := s.List(); len(list) != 0 {
		t.Errorf("image recorded: %v", list)
	}
}

func TestZstdOCIImage(t *testing.T) {
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/zstd", Size: 2, Mode: 0o644})
	tw.Write([]byte("ok"))
	tw.Close()
	zl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b.Bytes())), nil },
		tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
	if err != nil {
		t.Fatal(err)
	}
	img := testImage(t, "", zl)
	img = mutate.MediaType(mutate.ConfigMediaType(img, types.OCIConfigJSON), types.OCIManifestSchema1)
	reg := newTestRegistry(t)
	ref := reg.push("oci:1", img)
	s := openStore(t, Options{})
	got, err := s.Pull(context.Background(), ref, PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dirs, _ := s.Layers(got.ID)
	if data, err := os.ReadFile(filepath.Join(dirs[0], "etc/zstd")); err != nil || string(data) != "ok" {
		t.Errorf("zstd layer content %q, %v", data, err)
	}
}

type hostsFunc func(host string) ([]Endpoint, error)

func (f hostsFunc) Endpoints(host string) ([]Endpoint, error) { return f(host) }

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

func TestEndpoints(t *testing.T) {
	reg := newTestRegistry(t)
	img := testImage(t, "", layer(t))
	reg.push("app:1", img)
	ctx := context.Background()
	regURL := mustURL("http://" + reg.host)

	t.Run("fallback to the next endpoint", func(t *testing.T) {
		dead := httptest.NewServer(http.NotFoundHandler())
		dead.Close()
		s := openStore(t, Options{Hosts: hostsFunc(func(host string) ([]Endpoint, error) {
			if host != "mirrored.example" {
				t.Errorf("Endpoints(%q)", host)
			}
			return []Endpoint{{URL: mustURL(dead.URL)}, {URL: regURL}}, nil
		})})
		got, err := s.Pull(ctx, "mirrored.example/app:1", PullOptions{})
		if err != nil || !slices.Equal(got.RepoTags, []string{"mirrored.example/app:1"}) {
			t.Fatalf("Pull = %+v, %v", got, err)
		}
	})

	t.Run("override path", func(t *testing.T) {
		mirror := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, ok := strings.CutPrefix(r.URL.Path, "/mirror/root")
			if !ok {
				http.NotFound(w, r)
				return
			}
			r.URL.Path = "/v2" + p
			reg.ServeHTTP(w, r)
		}))
		defer mirror.Close()
		s := openStore(t, Options{Hosts: hostsFunc(func(string) ([]Endpoint, error) {
			return []Endpoint{{URL: mustURL(mirror.URL + "/mirror/root")}}, nil
		})})
		if _, err := s.Pull(ctx, "docker.io/library/app:1", PullOptions{}); err == nil {
			t.Fatal("library/app should not exist")
		}
		if _, err := s.Pull(ctx, "registry.example/app:1", PullOptions{}); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("capabilities", func(t *testing.T) {
		s := openStore(t, Options{Hosts: hostsFunc(func(string) ([]Endpoint, error) {
			return []Endpoint{{URL: regURL, Capabilities: CapPull}}, nil
		})})
		if _, err := s.Pull(ctx, "registry.example/app:1", PullOptions{}); !errors.Is(err, ErrInvalid) {
			t.Errorf("tag pull from a pull-only endpoint = %v, want ErrInvalid", err)
		}
		if _, err := s.Pull(ctx, "registry.example/app@"+digest(t, img), PullOptions{}); err != nil {
			t.Errorf("digest pull from a pull-only endpoint: %v", err)
		}
	})

	t.Run("tls", func(t *testing.T) {
		srv := httptest.NewUnstartedServer(reg)
		srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshake is expected
		srv.StartTLS()
		defer srv.Close()
		pool := x509.NewCertPool()
		pool.AddCert(srv.Certificate())
		u := mustURL(srv.URL)
		hosts := func(cfg *tls.Config) Hosts {
			return hostsFunc(func(string) ([]Endpoint, error) { return []Endpoint{{URL: u, TLS: cfg}}, nil })
		}
		if _, err := openStore(t, Options{Hosts: hosts(nil)}).Pull(ctx, "secure.example/app:1", PullOptions{}); err == nil {
			t.Error("pull trusted a certificate from an unknown CA")
		}
		if _, err := openStore(t, Options{Hosts: hosts(&tls.Config{RootCAs: pool})}).Pull(ctx, "secure.example/app:1", PullOptions{}); err != nil {
			t.Error(err)
		}
	})

	t.Run("auth", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if u, p, ok := r.BasicAuth(); !ok || u != "kubelet" || p != "secret" {
				w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			reg.ServeHTTP(w, r)
		}))
		defer srv.Close()
		ref := strings.TrimPrefix(srv.URL, "http://") + "/app:1"
		creds := &authn.Basic{Username: "kubelet", Password: "secret"}
		if _, err := openStore(t, Options{}).Pull(ctx, ref, PullOptions{}); err == nil {
			t.Error("anonymous pull from an authenticated registry succeeded")
		}
		if _, err := openStore(t, Options{}).Pull(ctx, ref, PullOptions{Auth: creds}); err != nil {
			t.Errorf("pull with request credentials: %v", err)
		}
		s := openStore(t, Options{Hosts: hostsFunc(func(string) ([]Endpoint, error) {
			return []Endpoint{{URL: mustURL(srv.URL), Auth: creds}}, nil
		})})
		if _, err := s.Pull(ctx, "private.example/app:1", PullOptions{}); err != nil {
			t.Errorf("pull with endpoint credentials: %v", err)
		}
	})
}

func TestParseReference(t *testing.T) {
	for in, want := range map[string]string{
		"busybox":                                          "docker.io/library/busybox:latest",
		"busybox:1.36":                                     "docker.io/library/busybox:1.36",
		"docker.io/library/busybox":                        "docker.io/library/busybox:latest",
		"index.docker.io/user/app:v1":                      "docker.io/user/app:v1",
		"registry.k8s.io/pause:3.10":                       "registry.k8s.io/pause:3.10",
		"127.0.0.1:5000/a/b/c:t":                           "127.0.0.1:5000/a/b/c:t",
		"ghcr.io/o/r@sha256:" + strings.Repeat("a", 64):    "ghcr.io/o/r@sha256:" + strings.Repeat("a", 64),
		"ghcr.io/o/r:v1@sha256:" + strings.Repeat("b", 64): "ghcr.io/o/r@sha256:" + strings.Repeat("b", 64),
	} {
		r, err := parseReference(in)
		if err != nil || r.String() != want {
			t.Errorf("parseReference(%q) = %q, %v; want %q", in, r.String(), err, want)
		}
	}
	for _, in := range []string{"", "UPPER/case", "a@sha256:short", "a:b:c"} {
		if _, err := parseReference(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("parseReference(%q) = %v, want ErrInvalid", in, err)
		}
	}
}

func TestChainIDs(t *testing.T) {
	// From the OCI image spec's example: chainID(L0|L1) = sha256(L0 + " " + L1).
	a, b := "sha256:"+strings.Repeat("a", 64), "sha256:"+strings.Repeat("b", 64)
	got := chainIDs([]string{a, b})
	if got[0] != a || got[1] != "sha256:"+sha256hex(a+" "+b) {
		t.Errorf("chainIDs = %v", got)
	}
}

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestGetShortIDs(t *testing.T) {
	s := openStore(t, Options{})
	ids := []string{"sha256:abcd1" + strings.Repeat("0", 59), "sha256:abcd2" + strings.Repeat("0", 59)}
	s.db.Update(func(tx *bolt.Tx) error {
		for _, id := range ids {
			putImage(tx, imageRecord{Image: Image{ID: id}})
		}
		return nil
	})
	if _, err := s.Get("abcd"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ambiguous prefix: %v, want ErrInvalid", err)
	}
	for _, q := range []string{"abcd1", "sha256:abcd2", ids[0]} {
		if img, err := s.Get(q); err != nil || !strings.HasPrefix(img.ID, "sha256:"+strings.TrimPrefix(q, "sha256:")) {
			t.Errorf("Get(%q) = %s, %v", q, img.ID, err)
		}
	}
	if _, err := s.Get("abce"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown prefix: %v", err)
	}
}
