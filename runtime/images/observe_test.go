package images

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// pullLog records what a store reports of its pulls.
type pullLog struct {
	mu      sync.Mutex
	reports []PullReport
}

func (p *pullLog) add(r PullReport) { p.mu.Lock(); p.reports = append(p.reports, r); p.mu.Unlock() }

func (p *pullLog) last(t *testing.T, n int) PullReport {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.reports) != n {
		t.Fatalf("%d pulls reported, want %d: %+v", len(p.reports), n, p.reports)
	}
	return p.reports[n-1]
}

func TestPullReported(t *testing.T) {
	reg := newTestRegistry(t)
	img := testImage(t, "", layer(t), layer(t))
	ref := reg.push("app:1", img)
	var log pullLog
	s := openStore(t, Options{OnPull: log.add})
	ctx := context.Background()

	// Everything a first pull receives: the manifest, the config and each compressed layer.
	rawManifest, _ := img.RawManifest()
	rawConfig, _ := img.RawConfigFile()
	want := int64(len(rawManifest) + len(rawConfig))
	ls, _ := img.Layers()
	for _, l := range ls {
		n, _ := l.Size()
		want += n
	}
	start := time.Now()
	if _, err := s.Pull(ctx, ref, PullOptions{}); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	r := log.last(t, 1)
	if r.Ref != ref || r.Bytes != want || r.Err != nil || r.Duration <= 0 || r.Duration > took {
		t.Errorf("first pull reported %+v, want ref %s, %d bytes, no error, a duration within %v", r, ref, want, took)
	}

	// A second pull only fetches the manifest.
	if _, err := s.Pull(ctx, ref, PullOptions{}); err != nil {
		t.Fatal(err)
	}
	if r := log.last(t, 2); r.Bytes != int64(len(rawManifest)) || r.Err != nil {
		t.Errorf("re-pull reported %+v, want %d bytes (the manifest)", r, len(rawManifest))
	}

	// A failed pull is reported with its error, and what it received before failing.
	missing := reg.host + "/nothing:1"
	_, err := s.Pull(ctx, missing, PullOptions{})
	if r := log.last(t, 3); r.Ref != missing || !errors.Is(r.Err, ErrNotFound) || r.Err.Error() != err.Error() || r.Bytes != 0 {
		t.Errorf("pull of a missing image reported %+v (Pull said %v)", r, err)
	}
	if _, err := s.Pull(ctx, "Not A Ref", PullOptions{}); err == nil {
		t.Fatal("pull of a malformed reference succeeded")
	}
	if r := log.last(t, 4); r.Err == nil {
		t.Errorf("pull of a malformed reference reported %+v, want its error", r)
	}
	tampered := testImage(t, "", layer(t))
	tref := reg.push("tampered:1", tampered)
	tls, _ := tampered.Layers()
	reg.tamper[digest(t, tls[0])] = true
	rawManifest, _ = tampered.RawManifest()
	rawConfig, _ = tampered.RawConfigFile()
	if _, err := s.Pull(ctx, tref, PullOptions{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("pull of a tampered layer: %v", err)
	}
	if r := log.last(t, 5); !errors.Is(r.Err, ErrInvalid) || r.Bytes <= int64(len(rawManifest)+len(rawConfig)) {
		t.Errorf("pull of a tampered layer reported %+v, want ErrInvalid and the layer's bytes counted", r)
	}
}
