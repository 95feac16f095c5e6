package ipam

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"ingot.dev/ingot/netsetup/cniconf"
)

func ranges(t *testing.T, ipam string) [][]cniconf.Range {
	t.Helper()
	l, err := cniconf.Parse("t.conflist", []byte(`{"cniVersion":"1.0.0","name":"t","plugins":[{"type":"bridge","isGateway":true,"ipam":`+ipam+`}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return l.Bridge().IPAM.RangeSets
}

func open(t *testing.T, path string) *bolt.DB {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func TestAllocateReleaseReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "net.db")
	sets := ranges(t, `{"type":"host-local","ranges":[[{"subnet":"10.88.0.0/16"}],[{"subnet":"fd00:88::/64"}]]}`)
	db := open(t, path)
	a := New(db, "t", sets)
	l1, err := a.Allocate("pod1")
	if err != nil {
		t.Fatal(err)
	}
	// The gateway 10.88.0.1 is skipped; each set yields one address.
	if len(l1) != 2 || l1[0].Address.String() != "10.88.0.2/16" || l1[0].Gateway.String() != "10.88.0.1" || l1[1].Address.String() != "fd00:88::2/64" {
		t.Fatalf("leases %v", l1)
	}
	again, _ := a.Allocate("pod1")
	if fmt.Sprint(again) != fmt.Sprint(l1) {
		t.Errorf("second Allocate for the same owner gave %v, want %v", again, l1)
	}
	l2, _ := a.Allocate("pod2")
	if l2[0].Address.String() != "10.88.0.3/16" {
		t.Errorf("pod2 got %v", l2)
	}
	if err := a.Release("pod1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Release("pod1"); err != nil {
		t.Errorf("second release: %v", err)
	}
	db.Close()

	// A restart: the lease of pod2 and the position survive; pod1's address is not reused at once.
	db = open(t, path)
	defer db.Close()
	a = New(db, "t", sets)
	got, _ := a.Get("pod2")
	if fmt.Sprint(got) != fmt.Sprint(l2) {
		t.Errorf("after reopen pod2 has %v, want %v", got, l2)
	}
	if got, _ := a.Get("pod1"); got != nil {
		t.Errorf("released pod1 still has %v", got)
	}
	l3, _ := a.Allocate("pod3")
	if l3[0].Address.String() != "10.88.0.4/16" {
		t.Errorf("pod3 got %v, want the address after the last one handed out", l3)
	}
	owners, _ := a.Owners()
	if fmt.Sprint(owners) != "[pod2 pod3]" {
		t.Errorf("owners %v", owners)
	}
}

func TestExhaustAndWrap(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "net.db"))
	defer db.Close()
	// 10.1.0.0/29: .1 gateway, .2-.6 allocatable, .7 broadcast; a second range .16/30: .17, .18 (gateway .17).
	a := New(db, "t", ranges(t, `{"type":"host-local","ranges":[[{"subnet":"10.1.0.0/29"},{"subnet":"10.1.0.16/30"}]]}`))
	seen := map[string]bool{}
	for i := range 6 {
		l, err := a.Allocate(fmt.Sprint("p", i))
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		seen[l[0].Address.Addr().String()] = true
	}
	if len(seen) != 6 || !seen["10.1.0.18"] || seen["10.1.0.17"] || seen["10.1.0.1"] {
		t.Errorf("addresses %v", seen)
	}
	if _, err := a.Allocate("full"); !errors.Is(err, ErrExhausted) {
		t.Errorf("allocate from a full set: %v", err)
	}
	a.Release("p3")
	l, err := a.Allocate("late")
	if err != nil || l[0].Address.Addr().String() != "10.1.0.5" {
		t.Errorf("after wrap got %v %v, want the one free address 10.1.0.5", l, err)
	}
}

func TestConcurrentNoDuplicates(t *testing.T) {
	db := open(t, filepath.Join(t.TempDir(), "net.db"))
	defer db.Close()
	a := New(db, "t", ranges(t, `{"type":"host-local","subnet":"10.2.0.0/24"}`))
	var wg sync.WaitGroup
	var mu sync.Mutex
	byAddr := map[string]string{}
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			owner := fmt.Sprint("pod", i)
			l, err := a.Allocate(owner)
			if err != nil {
				t.Error(err)
				return
			}
			if i%2 == 0 {
				a.Release(owner)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if other, dup := byAddr[l[0].Address.String()]; dup {
				t.Errorf("%s given to %s and %s", l[0].Address, other, owner)
			}
			byAddr[l[0].Address.String()] = owner
		}()
	}
	wg.Wait()
	if len(byAddr) != 20 {
		t.Errorf("%d live leases, want 20", len(byAddr))
	}
}
