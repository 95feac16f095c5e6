package podnet

import (
	"encoding/json"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"ingot.dev/ingot/netsetup/nft"
)

var bucketPods = []byte("pods")

// record is what podnet keeps per pod, next to its leases.
type record struct {
	ID        string `json:"id"`
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	UID       string `json:"uid,omitempty"`
	Result
	Ports []nft.PortMapping `json:"ports,omitempty"`
}

func (n *Network) record(id string) (*record, error) {
	var rec *record
	err := n.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPods)
		if b == nil {
			return nil
		}
		data := b.Get([]byte(id))
		if data == nil {
			return nil
		}
		rec = &record{}
		return json.Unmarshal(data, rec)
	})
	if err != nil {
		return nil, fmt.Errorf("pod network record of %s: %w", id, err)
	}
	return rec, nil
}

func (n *Network) records() ([]*record, error) {
	var out []*record
	err := n.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPods)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			rec := &record{}
			if err := json.Unmarshal(v, rec); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			out = append(out, rec)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("pod network records: %w", err)
	}
	return out, nil
}

func (n *Network) putRecord(rec *record) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	err = n.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketPods)
		if err != nil {
			return err
		}
		return b.Put([]byte(rec.ID), data)
	})
	if err != nil {
		return fmt.Errorf("pod network record of %s: %w", rec.ID, err)
	}
	return nil
}

func (n *Network) deleteRecord(id string) error {
	err := n.db.Update(func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketPods); b != nil {
			return b.Delete([]byte(id))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("pod network record of %s: %w", id, err)
	}
	return nil
}
