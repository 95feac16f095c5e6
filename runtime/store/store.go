// Package store persists the runtime's pod sandboxes and containers in bbolt, so a restarted
// runtime daemon recovers every pod and container it had. Records are JSON; the CRI configs
// inside them are kept as the protobuf bytes the kubelet sent.
package store

import (
	"encoding/json"

	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

var (
	bucketSandboxes  = []byte("sandboxes")
	bucketContainers = []byte("containers")
)

// Sandbox is a pod sandbox as the runtime remembers it.
type Sandbox struct {
	ID           string
	Name         string
	Namespace    string
	UID          string
	Attempt      uint32
	Config       []byte // runtimeapi.PodSandboxConfig, protobuf
	Ready        bool
	CreatedAt    int64 // unix nanoseconds
	ShimDir      string
	ShimSocket   string
	PausePid     int
	CgroupParent string
	Handler      string
	HostNetwork  bool
	NetNS        string   // pinned network namespace of the pod network; "" for host network
	IPs          []string // pod addresses, first is the primary
}

// Container is a container as the runtime remembers it.
type Container struct {
	ID         string
	SandboxID  string
	Name       string
	Attempt    uint32
	Config     []byte // runtimeapi.ContainerConfig, protobuf
	ImageID    string
	ImageRef   string // what the kubelet asked for
	CreatedAt  int64
	StartedAt  int64
	FinishedAt int64
	State      string // created, running, exited, unknown
	ExitCode   int32
	Reason     string
	Message    string
	LogPath    string
	Dir        string // root/containers/<id>: rootfs mount point, upper and work dirs
	// The identity the container's processes run with, resolved at create time.
	UID, GID uint32
	Groups   []uint32 // supplementary groups besides GID
}

// Container states.
const (
	Created = "created"
	Running = "running"
	Exited  = "exited"
	Unknown = "unknown"
)

// Store is the bbolt database.
type Store struct{ db *bolt.DB }

// Open opens (creating) the database at path.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open runtime state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketSandboxes, bucketContainers} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open runtime state %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error { return s.db.Close() }

func put(db *bolt.DB, bucket []byte, id string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Put([]byte(id), data) })
}

func del(db *bolt.DB, bucket []byte, id string) error {
	return db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucket).Delete([]byte(id)) })
}

func all[T any](db *bolt.DB, bucket []byte) ([]T, error) {
	var out []T
	err := db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var t T
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("record %s: %w", k, err)
			}
			out = append(out, t)
			return nil
		})
	})
	return out, err
}

// PutSandbox stores a sandbox.
func (s *Store) PutSandbox(sb *Sandbox) error { return put(s.db, bucketSandboxes, sb.ID, sb) }

// DeleteSandbox forgets a sandbox.
func (s *Store) DeleteSandbox(id string) error { return del(s.db, bucketSandboxes, id) }

// Sandboxes lists every stored sandbox.
func (s *Store) Sandboxes() ([]Sandbox, error) { return all[Sandbox](s.db, bucketSandboxes) }

// PutContainer stores a container.
func (s *Store) PutContainer(c *Container) error { return put(s.db, bucketContainers, c.ID, c) }

// DeleteContainer forgets a container.
func (s *Store) DeleteContainer(id string) error { return del(s.db, bucketContainers, id) }

// Containers lists every stored container.
func (s *Store) Containers() ([]Container, error) { return all[Container](s.db, bucketContainers) }
