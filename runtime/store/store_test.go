package store

import (
	"path/filepath"
	"testing"
)

// Records survive closing and reopening the database: this is what lets a restarted daemon
// recover its pods and containers.
func TestPersistAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runtime.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s.PutSandbox(&Sandbox{ID: "p1", Name: "web", Ready: true, Config: []byte{1, 2}})
	s.PutContainer(&Container{ID: "c1", SandboxID: "p1", State: Running})
	s.PutContainer(&Container{ID: "c2", SandboxID: "p1", State: Exited, ExitCode: 3})
	s.DeleteContainer("c2")
	s.Close()

	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	sbs, _ := s.Sandboxes()
	ctrs, _ := s.Containers()
	if len(sbs) != 1 || sbs[0].Name != "web" || !sbs[0].Ready || len(sbs[0].Config) != 2 {
		t.Fatalf("sandboxes = %+v", sbs)
	}
	if len(ctrs) != 1 || ctrs[0].ID != "c1" || ctrs[0].State != Running {
		t.Fatalf("containers = %+v", ctrs)
	}
}
