package images

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// critestDigest is the digest critest v1.37 pins gcr.io/k8s-staging-cri-tools/test-image-digest
// to: the hash of the manifest bytes of Google's own build (internal/critest/skip.go).
const critestDigest = "sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf"

// TestPullByDigest is what critest's "public image with digest should be pulled and removed"
// checks, against an image whose digest this registry can serve: pulled by name@digest, the
// image has no tag and exactly that repo digest, is found by it, and is gone after Remove. A
// registry that answers a digest it cannot produce with other bytes is refused, naming both
// digests, and nothing is recorded: that is why critest's pinned digest cannot be served from
// images built here.
func TestPullByDigest(t *testing.T) {
	reg := newTestRegistry(t)
	img := testImage(t, "", layer(t))
	reg.push("cri-tools/test-image-digest:build", img)
	d := digest(t, img)
	ref := reg.host + "/cri-tools/test-image-digest@" + d
	s := openStore(t, Options{})
	ctx := context.Background()

	got, err := s.Pull(ctx, ref, PullOptions{})
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	if len(got.RepoTags) != 0 || !slices.Equal(got.RepoDigests, []string{ref}) {
		t.Errorf("pulled by digest: tags %q, digests %q; want no tag and [%s]", got.RepoTags, got.RepoDigests, ref)
	}
	if g, err := s.Get(ref); err != nil || g.ID != got.ID {
		t.Errorf("Get(%s) = %s, %v; want %s", ref, g.ID, err, got.ID)
	}
	if err := s.Remove(ref); err != nil {
		t.Fatalf("remove %s: %v", ref, err)
	}
	if _, err := s.Get(ref); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get(%s) after Remove = %v, want ErrNotFound", ref, err)
	}

	// A registry that serves its own manifest under critest's digest.
	liar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.URL.Path = strings.Replace(r.URL.Path, "/manifests/"+critestDigest, "/manifests/"+d, 1)
		reg.ServeHTTP(w, r)
	}))
	defer liar.Close()
	pinned := strings.TrimPrefix(liar.URL, "http://") + "/cri-tools/test-image-digest@" + critestDigest
	_, err = s.Pull(ctx, pinned, PullOptions{})
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), critestDigest) || !strings.Contains(err.Error(), "hash to "+d) {
		t.Fatalf("pull of %s served other bytes = %v; want ErrInvalid naming %s and %s", pinned, err, critestDigest, d)
	}
	if list, _ := s.List(); len(list) != 0 {
		t.Errorf("images recorded after the refused pull: %v", list)
	}
	s.clean(t)
}
