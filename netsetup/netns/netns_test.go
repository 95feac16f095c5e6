package netns

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"ingot.dev/ingot/internal/testgate"
)

func TestLifecycle(t *testing.T) {
	testgate.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "run", "ns1")
	if err := New(path); err != nil {
		t.Fatal(err)
	}
	defer Remove(path)
	if !Is(path) || Is(filepath.Dir(path)) {
		t.Fatal("Is does not tell a namespace file from a directory")
	}
	if err := New(path); err == nil {
		t.Error("New over an existing namespace succeeded")
	}
	// A fresh namespace has only lo, and it is down.
	err := Do(path, func() error {
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].Flags&net.FlagUp != 0 {
			t.Errorf("interfaces in a new namespace: %v", ifs)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := Remove(path); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", path, err)
	}
	if err := Do(path, func() error { return nil }); err == nil {
		t.Error("Do in a removed namespace succeeded")
	}
}
