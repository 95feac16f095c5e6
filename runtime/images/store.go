// Package images is the node's image store, what the CRI ImageService calls: it pulls images from
// registries (mirrors, TLS and credentials come from a Hosts the caller supplies), keeps their blobs
// in a verified content store, unpacks every layer once into its own directory for overlayfs, records
// images and layers in bbolt, and deletes what no image references any more.
//
// On disk, under the store's root:
//
//	content/blobs/sha256/<hex>   manifests, configs and compressed layers, verified
//	content/ingest/              blobs being written (emptied on Open)
//	layers/<n>/                  one unpacked layer (an overlayfs lowerdir), shared by chain ID
//	meta.db                      bbolt: images by ID, layers by chain ID with reference counts
//
// An image's ID is the digest of its config, as in containerd. It must never write outside its
// root, and never keep a blob or layer whose digest it has not checked.
package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"ingot.dev/ingot/runtime/errdefs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"ingot.dev/ingot/runtime/images/archive"
	"ingot.dev/ingot/runtime/images/content"
)

// Errors returned by the store, wrapped with the object they concern. The CRI layer maps them to
// gRPC codes NotFound and InvalidArgument.
var (
	ErrNotFound = errdefs.ErrNotFound
	ErrInvalid  = errdefs.ErrInvalid
)

// Image is a pulled image.
type Image struct {
	// ID is the digest of the image config, "sha256:<hex>".
	ID string `json:"id"`
	// RepoTags are canonical name:tag references, e.g. "docker.io/library/busybox:1.36".
	RepoTags []string `json:"repoTags,omitempty"`
	// RepoDigests are name@digest references; the digest is what the pulled reference resolved to
	// (an index digest for a multi-platform image).
	RepoDigests []string `json:"repoDigests,omitempty"`
	// ManifestDigest is the digest of the platform-specific image manifest.
	ManifestDigest string   `json:"manifestDigest"`
	Platform       Platform `json:"platform"`
	// Size is the image's size in the registry: manifest, config and compressed layers, in bytes.
	Size int64 `json:"size"`
	// ChainIDs identify the unpacked layers, lowest first.
	ChainIDs []string `json:"chainIDs"`
	Config   Config   `json:"config"`
}

// Config is the part of the image config the runtime needs to create containers.
type Config struct {
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	Env          []string          `json:"env,omitempty"`
	User         string            `json:"user,omitempty"`
	WorkingDir   string            `json:"workingDir,omitempty"`
	ExposedPorts []string          `json:"exposedPorts,omitempty"` // "80/tcp", sorted
	Volumes      []string          `json:"volumes,omitempty"`      // sorted
	StopSignal   string            `json:"stopSignal,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
}

// Options configure a Store.
type Options struct {
	// Hosts maps registry hosts to endpoints; nil means DefaultEndpoint for every host.
	Hosts Hosts
	// MaxConcurrentDownloads bounds the layer blobs one pull fetches at once (default 3, as
	// containerd's max_concurrent_downloads).
	MaxConcurrentDownloads int
	// Platform images are pulled for; the zero value means DefaultPlatform().
	Platform Platform
	// Logger receives one line per pull and per endpoint fallback; nil means slog.Default().
	Logger *slog.Logger
	// Unpack bounds what unpacking one layer may cost; a zero field means archive's default.
	Unpack archive.Limits
	// OnPull, when set, is told of every Pull as it returns (the runtime's metrics). It is called
	// on the pulling goroutine and must not block.
	OnPull func(PullReport)
}

// Store is the image store. Its methods are safe for concurrent use.
type Store struct {
	root    string
	db      *bolt.DB
	content *content.Store
	opts    Options
	log     *slog.Logger

	mu     sync.Mutex     // guards leases; held by gc while it decides and deletes
	leases map[string]int // blobs and layers an unfinished pull relies on ("blob:…", "layer:…")

	unpacking keyedLock // one unpack per chain ID at a time
}

var (
	bucketImages = []byte("images")
	bucketLayers = []byte("layers")
)

// layerRecord is one unpacked layer, shared by every image whose chain contains it.
type layerRecord struct {
	ChainID string `json:"chainID"`
	DiffID  string `json:"diffID"`
	Blob    string `json:"blob"` // the compressed blob it was unpacked from
	Dir     string `json:"dir"`  // relative to the store root
	Size    int64  `json:"size"`
	Inodes  int64  `json:"inodes"`
	Refs    int    `json:"refs"` // images referencing it
}

type imageRecord struct {
	Image
	LayerBlobs []string `json:"layerBlobs"`
}

// Open opens the store at root, creating it if needed. It removes what an interrupted pull or
// removal left behind: partial blobs, half-unpacked layers, and layers and blobs no image uses.
func Open(root string, opts Options) (*Store, error) {
	if opts.MaxConcurrentDownloads <= 0 {
		opts.MaxConcurrentDownloads = 3
	}
	if opts.Platform == (Platform{}) {
		opts.Platform = DefaultPlatform()
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("open image store: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(root, "layers"), 0o700); err != nil {
		return nil, fmt.Errorf("open image store %s: %w", root, err)
	}
	cs, err := content.Open(filepath.Join(root, "content"))
	if err != nil {
		return nil, fmt.Errorf("open image store %s: %w", root, err)
	}
	db, err := bolt.Open(filepath.Join(root, "meta.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open image store %s: meta.db: %w", root, err)
	}
	s := &Store{root: root, db: db, content: cs, opts: opts, log: opts.Logger, leases: map[string]int{}}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketImages, bucketLayers} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		err = s.sweepLayerDirs()
	}
	if err == nil {
		err = s.gc()
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open image store %s: %w", root, err)
	}
	return s, nil
}

// Close closes the metadata database. Pulls still running fail.
func (s *Store) Close() error { return s.db.Close() }

// List returns every image, ordered by ID.
func (s *Store) List() ([]Image, error) {
	var out []Image
	err := s.db.View(func(tx *bolt.Tx) error {
		recs, err := loadImages(tx)
		for _, r := range recs {
			out = append(out, r.Image)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	return out, nil
}

// Get finds an image by ID ("sha256:<hex>" or bare hex), by a unique ID prefix, or by reference:
// name:tag ("busybox" is docker.io/library/busybox:latest) or name@digest, where the digest may be
// the one pulled (RepoDigests) or the platform manifest's.
func (s *Store) Get(refOrID string) (Image, error) {
	var rec imageRecord
	err := s.db.View(func(tx *bolt.Tx) error {
		var err error
		rec, err = resolve(tx, refOrID)
		return err
	})
	return rec.Image, err
}

// Remove deletes the image refOrID names, with all its tags and digests (as containerd's CRI does),
// then every layer and blob no remaining image references. Removing an image that does not exist
// is not an error (CRI RemoveImage is idempotent).
func (s *Store) Remove(refOrID string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		rec, err := resolve(tx, refOrID)
		if err != nil {
			return err
		}
		return deleteImage(tx, rec)
	})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove image %q: %w", refOrID, err)
	}
	return s.gc()
}

// Layers returns the unpacked layer directories of an image (any form Get accepts), lowest first:
// reversed and joined with ":", they are an overlayfs lowerdir.
func (s *Store) Layers(refOrID string) ([]string, error) {
	var dirs []string
	err := s.db.View(func(tx *bolt.Tx) error {
		rec, err := resolve(tx, refOrID)
		if err != nil {
			return err
		}
		for _, c := range rec.ChainIDs {
			l, err := getLayer(tx, c)
			if err != nil {
				return fmt.Errorf("image %s: %w", rec.ID, err)
			}
			dirs = append(dirs, filepath.Join(s.root, l.Dir))
		}
		return nil
	})
	return dirs, err
}

// FsInfo reports the store's disk use for CRI ImageFsInfo: bytes and inodes of unpacked layers,
// blobs and metadata, and the directory they live in.
func (s *Store) FsInfo() (usedBytes, inodes uint64, mountpoint string, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLayers).ForEach(func(_, v []byte) error {
			var l layerRecord
			if err := json.Unmarshal(v, &l); err != nil {
				return err
			}
			usedBytes += uint64(l.Size)
			inodes += uint64(l.Inodes)
			return nil
		})
	})
	if err != nil {
		return 0, 0, "", fmt.Errorf("image fs info: %w", err)
	}
	blobs, err := s.content.List()
	if err != nil {
		return 0, 0, "", fmt.Errorf("image fs info: %w", err)
	}
	for _, b := range blobs {
		usedBytes += uint64(b.Size)
		inodes++
	}
	if fi, err := os.Stat(filepath.Join(s.root, "meta.db")); err == nil {
		usedBytes += uint64(fi.Size())
		inodes++
	}
	return usedBytes, inodes, s.root, nil
}

// resolve finds the image refOrID names (see Get).
func resolve(tx *bolt.Tx, refOrID string) (imageRecord, error) {
	recs, err := loadImages(tx)
	if err != nil {
		return imageRecord{}, err
	}
	hexID := strings.TrimPrefix(refOrID, "sha256:")
	if _, err := content.CheckDigest("sha256:" + hexID); err == nil {
		for _, r := range recs {
			if r.ID == "sha256:"+hexID {
				return r, nil
			}
		}
		return imageRecord{}, fmt.Errorf("image %q: %w", refOrID, ErrNotFound)
	}
	if ref, err := parseReference(refOrID); err == nil {
		want := ref.String()
		for _, r := range recs {
			if slices.Contains(r.RepoTags, want) || slices.Contains(r.RepoDigests, want) {
				return r, nil
			}
		}
		if ref.digest != "" {
			for _, r := range recs {
				if r.ManifestDigest == ref.digest && r.hasName(ref.Name()) {
					return r, nil
				}
			}
		}
	}
	if hexID != "" && isHex(hexID) {
		var found []imageRecord
		for _, r := range recs {
			if strings.HasPrefix(r.ID, "sha256:"+hexID) {
				found = append(found, r)
			}
		}
		if len(found) == 1 {
			return found[0], nil
		}
		if len(found) > 1 {
			return imageRecord{}, fmt.Errorf("%w: image ID prefix %q is ambiguous (%d images)", ErrInvalid, refOrID, len(found))
		}
	}
	return imageRecord{}, fmt.Errorf("image %q: %w", refOrID, ErrNotFound)
}

func (r imageRecord) hasName(n string) bool {
	for _, t := range r.RepoTags {
		if strings.HasPrefix(t, n+":") {
			return true
		}
	}
	for _, d := range r.RepoDigests {
		if rn, _ := splitRepoDigest(d); rn == n {
			return true
		}
	}
	return false
}

func isHex(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func loadImages(tx *bolt.Tx) ([]imageRecord, error) {
	var out []imageRecord
	err := tx.Bucket(bucketImages).ForEach(func(k, v []byte) error {
		var r imageRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("image record %s: %w", k, err)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

func putImage(tx *bolt.Tx, r imageRecord) error {
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketImages).Put([]byte(r.ID), v)
}

func getLayer(tx *bolt.Tx, chainID string) (layerRecord, error) {
	v := tx.Bucket(bucketLayers).Get([]byte(chainID))
	if v == nil {
		return layerRecord{}, fmt.Errorf("layer %s: %w", chainID, ErrNotFound)
	}
	var l layerRecord
	if err := json.Unmarshal(v, &l); err != nil {
		return layerRecord{}, fmt.Errorf("layer record %s: %w", chainID, err)
	}
	return l, nil
}

func putLayer(tx *bolt.Tx, l layerRecord) error {
	v, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketLayers).Put([]byte(l.ChainID), v)
}

// addRefs changes the reference count of each layer by delta.
func addRefs(tx *bolt.Tx, chainIDs []string, delta int) error {
	for _, c := range chainIDs {
		l, err := getLayer(tx, c)
		if err != nil {
			return err
		}
		l.Refs += delta
		if err := putLayer(tx, l); err != nil {
			return err
		}
	}
	return nil
}

func deleteImage(tx *bolt.Tx, r imageRecord) error {
	if err := tx.Bucket(bucketImages).Delete([]byte(r.ID)); err != nil {
		return err
	}
	return addRefs(tx, r.ChainIDs, -1)
}

// commit records a pulled image, merging names into an existing record of the same ID. The tag and
// repo digest move to it: other images lose them, and one left with neither tags nor digests is
// deleted.
func (s *Store) commit(rec imageRecord) (Image, error) {
	var removed bool
	err := s.db.Update(func(tx *bolt.Tx) error {
		recs, err := loadImages(tx)
		if err != nil {
			return err
		}
		names := append(slices.Clone(rec.RepoTags), rec.RepoDigests...)
		existing := false
		for _, o := range recs {
			if o.ID == rec.ID {
				existing = true
				rec.RepoTags = union(o.RepoTags, rec.RepoTags)
				rec.RepoDigests = union(o.RepoDigests, rec.RepoDigests)
				continue
			}
			tags := without(o.RepoTags, names)
			digests := without(o.RepoDigests, names)
			if len(tags) == len(o.RepoTags) && len(digests) == len(o.RepoDigests) {
				continue
			}
			o.RepoTags, o.RepoDigests = tags, digests
			if len(tags) == 0 && len(digests) == 0 {
				s.log.Info("image removed: its last name moved to another image", "id", o.ID, "to", rec.ID)
				if err := deleteImage(tx, o); err != nil {
					return err
				}
				removed = true
				continue
			}
			if err := putImage(tx, o); err != nil {
				return err
			}
		}
		if !existing {
			if err := addRefs(tx, rec.ChainIDs, 1); err != nil {
				return err
			}
		}
		return putImage(tx, rec)
	})
	if err != nil {
		return Image{}, fmt.Errorf("record image %s: %w", rec.ID, err)
	}
	if removed {
		if err := s.gc(); err != nil {
			return Image{}, err
		}
	}
	return rec.Image, nil
}

func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, s := range b {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return out
}

func without(a, drop []string) []string {
	var out []string
	for _, s := range a {
		if !slices.Contains(drop, s) {
			out = append(out, s)
		}
	}
	return out
}

// lease keeps what an unfinished pull has fetched or unpacked safe from gc until the image that
// references it is recorded.
type lease struct {
	s    *Store
	keys []string
}

func (s *Store) newLease() *lease { return &lease{s: s} }

func (l *lease) add(keys ...string) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	for _, k := range keys {
		l.s.leases[k]++
	}
	l.keys = append(l.keys, keys...)
}

func (l *lease) release() {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	for _, k := range l.keys {
		if l.s.leases[k]--; l.s.leases[k] <= 0 {
			delete(l.s.leases, k)
		}
	}
	l.keys = nil
}

func blobKey(d string) string  { return "blob:" + d }
func layerKey(c string) string { return "layer:" + c }

// gc deletes layers no image references and blobs no image names, except what a running pull holds.
func (s *Store) gc() error {
	s.mu.Lock()
	var trash []string
	err := s.db.Update(func(tx *bolt.Tx) error {
		recs, err := loadImages(tx)
		if err != nil {
			return err
		}
		used := map[string]bool{}
		for _, r := range recs {
			used[r.ID], used[r.ManifestDigest] = true, true
			for _, b := range r.LayerBlobs {
				used[b] = true
			}
		}
		blobs, err := s.content.List()
		if err != nil {
			return err
		}
		for _, b := range blobs {
			if !used[b.Digest] && s.leases[blobKey(b.Digest)] == 0 {
				if err := s.content.Delete(b.Digest); err != nil {
					return err
				}
			}
		}
		var dead []layerRecord
		err = tx.Bucket(bucketLayers).ForEach(func(_, v []byte) error {
			var l layerRecord
			if err := json.Unmarshal(v, &l); err != nil {
				return err
			}
			if l.Refs <= 0 && s.leases[layerKey(l.ChainID)] == 0 {
				dead = append(dead, l)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, l := range dead {
			if err := tx.Bucket(bucketLayers).Delete([]byte(l.ChainID)); err != nil {
				return err
			}
			// Renaming is quick; the slow RemoveAll happens after the lock is released, and a
			// crash before it leaves a dot-name that the next Open sweeps.
			src := filepath.Join(s.root, l.Dir)
			dst := filepath.Join(s.root, "layers", ".gc-"+filepath.Base(l.Dir))
			if err := os.Rename(src, dst); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("remove layer %s: %w", l.ChainID, err)
			}
			trash = append(trash, dst)
		}
		return nil
	})
	s.mu.Unlock()
	for _, d := range trash {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("garbage collection: %w", err)
		}
	}
	if err != nil {
		return fmt.Errorf("garbage collection: %w", err)
	}
	return nil
}

// sweepLayerDirs removes layer directories no record names: half-unpacked (.extract-*), half-deleted
// (.gc-*), or unpacked just before a crash that kept the record from being written.
func (s *Store) sweepLayerDirs() error {
	known := map[string]bool{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketLayers).ForEach(func(_, v []byte) error {
			var l layerRecord
			if err := json.Unmarshal(v, &l); err != nil {
				return err
			}
			known[filepath.Base(l.Dir)] = true
			return nil
		})
	})
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(filepath.Join(s.root, "layers"))
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !known[e.Name()] {
			if err := os.RemoveAll(filepath.Join(s.root, "layers", e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// keyedLock is a mutex per key whose Lock gives up when ctx ends.
type keyedLock struct {
	mu sync.Mutex
	m  map[string]*keyedEntry
}

type keyedEntry struct {
	ch    chan struct{}
	users int
}

func (k *keyedLock) lock(ctx context.Context, key string) (unlock func(), err error) {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyedEntry{}
	}
	e := k.m[key]
	if e == nil {
		e = &keyedEntry{ch: make(chan struct{}, 1)}
		k.m[key] = e
	}
	e.users++
	k.mu.Unlock()
	done := func() {
		k.mu.Lock()
		if e.users--; e.users == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; done() }, nil
	case <-ctx.Done():
		done()
		return nil, ctx.Err()
	}
}
