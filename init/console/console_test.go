package console

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestHandlerFormat(t *testing.T) {
	var buf bytes.Buffer
	h := NewHandler(&buf, slog.LevelInfo)
	h.now = func() time.Duration { return 1234 * time.Millisecond }
	log := slog.New(h).With("phase", "mounts")
	log.Info("phase done", "took", "5ms", "note", "two words")
	log.Debug("hidden")
	log.Warn("no state disk")
	want := "[    1.234] ingot: phase done phase=mounts took=5ms note=\"two words\"\n" +
		"[    1.234] ingot: WARN: no state disk phase=mounts\n"
	if buf.String() != want {
		t.Fatalf("got\n%q\nwant\n%q", buf.String(), want)
	}
}

// TestConsolesAttach: the log reaches every console in the kernel's list, the primary's error is
// the one returned, and a console that cannot be opened is named.
func TestConsolesAttach(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"tty0", "ttyS1"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	active := filepath.Join(dir, "active")
	os.WriteFile(active, []byte("tty0 ttyS1 ttyS0\n"), 0o644)
	var primary bytes.Buffer
	c := NewConsoles(&primary)
	names, err := c.Attach(active, dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(names, " "); got != "tty0 ttyS1 ttyS0" {
		t.Fatalf("attached %q", got)
	}
	fmt.Fprintf(c, "ingot: node ready\n")
	for _, name := range []string{"tty0", "ttyS1"} {
		if b, _ := os.ReadFile(filepath.Join(dir, name)); string(b) != "ingot: node ready\n" {
			t.Fatalf("%s got %q", name, b)
		}
	}
	if primary.String() != "ingot: node ready\n" {
		t.Fatalf("primary got %q", primary.String())
	}

	os.WriteFile(active, []byte("tty7 ttyS0\n"), 0o644)
	if _, err := NewConsoles(&primary).Attach(active, dir); err == nil || !strings.Contains(err.Error(), "tty7") {
		t.Fatalf("a console missing from /dev: %v, want an error naming it", err)
	}
}
