// Package ipam hands out pod addresses from host-local ranges (one address per range set, as
// the host-local plugin does) and keeps the leases in a bbolt database, so they survive runtime
// restarts and reboots and an address is never given to two owners.
//
// Every operation is one bbolt transaction: concurrent callers in one process serialise on the
// database, and bbolt's file lock keeps a second process out. Allocation continues after the
// last address handed out, like host-local, so a released address is not reused at once (a
// stale peer may still send to it). ipam never touches the network.
package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strconv"

	bolt "go.etcd.io/bbolt"

	"ingot.dev/ingot/netsetup/cniconf"
)

// ErrExhausted is returned when a range set has no free address.
var ErrExhausted = errors.New("no free address")

// Lease is one allocated address.
type Lease struct {
	Address netip.Prefix // the address with its subnet's length, e.g. 10.88.0.5/16
	Gateway netip.Addr   // the range's gateway
}

// lease is Lease's stored form.
type lease struct {
	Address string `json:"address"`
	Gateway string `json:"gateway"`
}

// maxScan bounds the search for a free address in huge (IPv6) ranges.
const maxScan = 1 << 20

var (
	bucketIPAM   = []byte("ipam")
	bucketAddrs  = []byte("addrs")  // address → owner
	bucketOwners = []byte("owners") // owner → []lease (JSON)
	bucketLast   = []byte("last")   // range set index → last address handed out
)

// Allocator allocates from one network's range sets.
type Allocator struct {
	db      *bolt.DB
	network string
	sets    [][]cniconf.Range
}

// New returns an allocator for network (the conflist's name) over db. Leases of one network are
// kept apart from another's, so two conflists over time do not mix.
func New(db *bolt.DB, network string, sets [][]cniconf.Range) *Allocator {
	return &Allocator{db: db, network: network, sets: sets}
}

func (a *Allocator) buckets(tx *bolt.Tx, create bool) (addrs, owners, last *bolt.Bucket, err error) {
	if !create {
		top := tx.Bucket(bucketIPAM)
		if top == nil {
			return nil, nil, nil, nil
		}
		n := top.Bucket([]byte(a.network))
		if n == nil {
			return nil, nil, nil, nil
		}
		return n.Bucket(bucketAddrs), n.Bucket(bucketOwners), n.Bucket(bucketLast), nil
	}
	top, err := tx.CreateBucketIfNotExists(bucketIPAM)
	if err != nil {
		return nil, nil, nil, err
	}
	n, err := top.CreateBucketIfNotExists([]byte(a.network))
	if err != nil {
		return nil, nil, nil, err
	}
	if addrs, err = n.CreateBucketIfNotExists(bucketAddrs); err != nil {
		return nil, nil, nil, err
	}
	if owners, err = n.CreateBucketIfNotExists(bucketOwners); err != nil {
		return nil, nil, nil, err
	}
	if last, err = n.CreateBucketIfNotExists(bucketLast); err != nil {
		return nil, nil, nil, err
	}
	return addrs, owners, last, nil
}

// Allocate returns owner's leases, allocating one address from each range set the first time.
// Calling it again for the same owner returns the same leases (RunPodSandbox retries).
func (a *Allocator) Allocate(owner string) ([]Lease, error) {
	if owner == "" {
		return nil, errors.New("ipam: allocate: empty owner")
	}
	var out []Lease
	err := a.db.Update(func(tx *bolt.Tx) error {
		addrs, owners, last, err := a.buckets(tx, true)
		if err != nil {
			return err
		}
		if data := owners.Get([]byte(owner)); data != nil {
			out, err = decode(data)
			return err
		}
		stored := make([]lease, 0, len(a.sets))
		for i, set := range a.sets {
			key := []byte(strconv.Itoa(i))
			var prev netip.Addr
			if b := last.Get(key); b != nil {
				prev, _ = netip.ParseAddr(string(b))
			}
			r, addr, err := next(set, prev, func(x netip.Addr) bool { return addrs.Get([]byte(x.String())) != nil })
			if err != nil {
				return fmt.Errorf("ipam %s: range set %d (%s): %w", a.network, i, describe(set), err)
			}
			if err := addrs.Put([]byte(addr.String()), []byte(owner)); err != nil {
				return err
			}
			if err := last.Put(key, []byte(addr.String())); err != nil {
				return err
			}
			l := Lease{Address: netip.PrefixFrom(addr, r.Subnet.Bits()), Gateway: r.Gateway}
			out = append(out, l)
			stored = append(stored, lease{Address: l.Address.String(), Gateway: l.Gateway.String()})
		}
		data, err := json.Marshal(stored)
		if err != nil {
			return err
		}
		return owners.Put([]byte(owner), data)
	})
	if err != nil {
		return nil, fmt.Errorf("ipam: allocate for %s: %w", owner, err)
	}
	return out, nil
}

// next finds the first free address after prev, cycling through the set's ranges; the gateway
// is never handed out.
func next(set []cniconf.Range, prev netip.Addr, taken func(netip.Addr) bool) (cniconf.Range, netip.Addr, error) {
	ri, cur := 0, set[0].Start
	for i, r := range set {
		if prev.IsValid() && r.Contains(prev) {
			ri, cur = advance(set, i, prev)
			break
		}
	}
	ri0, cur0 := ri, cur
	for n := 0; n < maxScan; n++ {
		if cur != set[ri].Gateway && !taken(cur) {
			return set[ri], cur, nil
		}
		if ri, cur = advance(set, ri, cur); ri == ri0 && cur == cur0 {
			break // every address of the set was tried
		}
	}
	return cniconf.Range{}, netip.Addr{}, ErrExhausted
}

func advance(set []cniconf.Range, ri int, cur netip.Addr) (int, netip.Addr) {
	if cur.Compare(set[ri].End) < 0 {
		return ri, cur.Next()
	}
	ri = (ri + 1) % len(set)
	return ri, set[ri].Start
}

func describe(set []cniconf.Range) string {
	s := ""
	for i, r := range set {
		if i > 0 {
			s += ", "
		}
		s += r.Subnet.String()
	}
	return s
}

func decode(data []byte) ([]Lease, error) {
	var stored []lease
	if err := json.Unmarshal(data, &stored); err != nil {
		return nil, fmt.Errorf("corrupt lease record: %w", err)
	}
	out := make([]Lease, 0, len(stored))
	for _, s := range stored {
		p, err := netip.ParsePrefix(s.Address)
		if err != nil {
			return nil, fmt.Errorf("corrupt lease record: %w", err)
		}
		gw, _ := netip.ParseAddr(s.Gateway)
		out = append(out, Lease{Address: p, Gateway: gw})
	}
	return out, nil
}

// Get returns owner's leases, or nil when it has none.
func (a *Allocator) Get(owner string) ([]Lease, error) {
	var out []Lease
	err := a.db.View(func(tx *bolt.Tx) error {
		_, owners, _, err := a.buckets(tx, false)
		if err != nil || owners == nil {
			return err
		}
		if data := owners.Get([]byte(owner)); data != nil {
			out, err = decode(data)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("ipam: leases of %s: %w", owner, err)
	}
	return out, nil
}

// Release frees owner's addresses. Releasing an owner without leases does nothing.
func (a *Allocator) Release(owner string) error {
	err := a.db.Update(func(tx *bolt.Tx) error {
		addrs, owners, _, err := a.buckets(tx, false)
		if err != nil || owners == nil {
			return err
		}
		data := owners.Get([]byte(owner))
		if data == nil {
			return nil
		}
		leases, err := decode(data)
		if err != nil {
			return err
		}
		for _, l := range leases {
			key := []byte(l.Address.Addr().String())
			if string(addrs.Get(key)) == owner {
				if err := addrs.Delete(key); err != nil {
					return err
				}
			}
		}
		return owners.Delete([]byte(owner))
	})
	if err != nil {
		return fmt.Errorf("ipam: release %s: %w", owner, err)
	}
	return nil
}

// Addresses maps every leased address to its owner.
func (a *Allocator) Addresses() (map[string]string, error) {
	out := map[string]string{}
	err := a.db.View(func(tx *bolt.Tx) error {
		addrs, _, _, err := a.buckets(tx, false)
		if err != nil || addrs == nil {
			return err
		}
		return addrs.ForEach(func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("ipam: list leases: %w", err)
	}
	return out, nil
}

// Owners lists the owners holding leases.
func (a *Allocator) Owners() ([]string, error) {
	var out []string
	err := a.db.View(func(tx *bolt.Tx) error {
		_, owners, _, err := a.buckets(tx, false)
		if err != nil || owners == nil {
			return err
		}
		return owners.ForEach(func(k, _ []byte) error {
			out = append(out, string(k))
			return nil
		})
	})
	return out, err
}
