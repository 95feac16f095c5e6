package images

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// putManifest stores raw under repo:tag in the test registry, as a registry serving a forged
// manifest would.
func (r *testRegistry) putManifest(repo, tag string, mt types.MediaType, raw []byte) string {
	r.t.Helper()
	req, err := http.NewRequest(http.MethodPut, r.srv.URL+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(raw))
	if err != nil {
		r.t.Fatal(err)
	}
	req.Header.Set("Content-Type", string(mt))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		r.t.Fatalf("put manifest %s:%s: %s", repo, tag, resp.Status)
	}
	return r.host + "/" + repo + ":" + tag
}

// A descriptor's size is what bounds the download of what it describes; a negative one used to
// switch the bound off (and let a config of any size be read into memory). Every descriptor a pull
// follows is refused before anything it names is fetched.
func TestNegativeDescriptorSizeRejected(t *testing.T) {
	reg := newTestRegistry(t)
	img := testImage(t, "", layer(t), layer(t))
	reg.push("neg:base", img)
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	cfg := id(t, img)
	ls, _ := img.Layers()
	lay := digest(t, ls[1])

	forge := func(edit func(m *v1.Manifest)) []byte {
		var m v1.Manifest
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		edit(&m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cfgNeg := forge(func(m *v1.Manifest) { m.Config.Size = -1 })
	layNeg := forge(func(m *v1.Manifest) { m.Layers[1].Size = -1 })

	// An index whose entry for this platform has size -1, pointing at the intact manifest.
	mdig := digest(t, img)
	idx, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{{
		MediaType: types.DockerManifestSchema2, Size: -1, Digest: v1.Hash{Algorithm: "sha256", Hex: mdig[len("sha256:"):]},
		Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH},
	}}})
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, ref, want string
		notFetched      string // blob that must not be downloaded
	}{
		{"config", reg.putManifest("neg", "config", types.DockerManifestSchema2, cfgNeg), "config " + cfg + " has a negative size (-1)", cfg},
		{"layer", reg.putManifest("neg", "layer", types.DockerManifestSchema2, layNeg), "layer 1 " + lay + " has a negative size (-1)", lay},
		{"index entry", reg.putManifest("neg", "index", types.OCIImageIndex, idx), "manifest " + mdig + " has a negative size (-1)", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t, Options{})
			fetched := func() int {
				reg.mu.Lock()
				defer reg.mu.Unlock()
				return reg.blobGets[tc.notFetched]
			}
			before := fetched()
			_, err := s.Pull(context.Background(), tc.ref, PullOptions{})
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Pull = %v\nwant ErrInvalid containing %q", err, tc.want)
			}
			t.Log(err)
			if tc.notFetched != "" && fetched() != before {
				t.Errorf("%s was downloaded", tc.notFetched)
			}
			if list, _ := s.List(); len(list) != 0 {
				t.Errorf("image recorded: %v", list)
			}
			s.clean(t)
		})
	}
}
