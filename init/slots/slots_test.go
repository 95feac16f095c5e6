package slots

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// esp lays out an ESP as ingot build writes it: slot A's image and committed entry.
func esp(t *testing.T) ESP {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{EntriesDir, UKIDir} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write(t, filepath.Join(dir, UKIPath("a")), "image-a")
	write(t, filepath.Join(dir, EntriesDir, "ingot-a.conf"), "title ingot dev 1 (slot a)\nsort-key ingot\nversion 1\nefi /EFI/ingot/slot-a.efi\n")
	return ESP{Dir: dir}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func sum(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func files(t *testing.T, e ESP) string {
	t.Helper()
	var out []string
	filepath.WalkDir(e.Dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(e.Dir, p)
			out = append(out, rel)
		}
		return nil
	})
	return strings.Join(out, " ")
}

func preferred(t *testing.T, e ESP) Entry {
	t.Helper()
	entries, err := e.Entries()
	if err != nil {
		t.Fatal(err)
	}
	p, ok := Preferred(entries)
	if !ok {
		t.Fatalf("no bootable entry: %s", files(t, e))
	}
	return p
}

func TestInstallCommit(t *testing.T) {
	e := esp(t)
	if err := e.Install("b", strings.NewReader("image-b"), sum("image-b"), "ingot dev 2"); err != nil {
		t.Fatal(err)
	}
	p := preferred(t, e)
	if p.Slot != "b" || p.TriesLeft != Tries || p.Generation != 2 || p.CommittedName() != "ingot-b.conf" {
		t.Fatalf("after install: preferred %+v; want slot b on trial", p)
	}
	if got, _ := os.ReadFile(filepath.Join(e.Dir, UKIPath("b"))); string(got) != "image-b" {
		t.Fatalf("slot b holds %q", got)
	}
	entry, _ := os.ReadFile(filepath.Join(e.Dir, EntriesDir, "ingot-b+3.conf"))
	if string(entry) != "title ingot dev 2 (slot b)\nsort-key ingot\nversion 2\nefi /EFI/ingot/slot-b.efi\n" {
		t.Fatalf("entry:\n%s", entry)
	}
	if err := e.Commit("b"); err != nil {
		t.Fatal(err)
	}
	if p := preferred(t, e); p.Slot != "b" || p.Trial() || p.File != "ingot-b.conf" {
		t.Fatalf("after commit: %+v", p)
	}
	// Back to a by hand, then forward to b again: each a committed, known good image.
	if err := e.Prefer("a"); err != nil {
		t.Fatal(err)
	}
	if p := preferred(t, e); p.Slot != "a" || p.Generation != 3 {
		t.Fatalf("after prefer a: %+v", p)
	}
	if err := e.Prefer("b"); err != nil {
		t.Fatal(err)
	}
	if p := preferred(t, e); p.Slot != "b" {
		t.Fatalf("after prefer b: %+v", p)
	}
	if got := files(t, e); got != "EFI/ingot/slot-a.efi EFI/ingot/slot-b.efi loader/entries/ingot-a.conf loader/entries/ingot-b.conf" {
		t.Fatalf("ESP holds %s", got)
	}
}

// A trial slot that never commits: systemd-boot counts its tries down, then falls back to the
// committed slot; a trial slot cannot be preferred by hand.
func TestTrialRunsOut(t *testing.T) {
	e := esp(t)
	if err := e.Install("b", strings.NewReader("image-b"), sum("image-b"), "ingot dev 2"); err != nil {
		t.Fatal(err)
	}
	if err := e.Prefer("b"); err == nil || !strings.Contains(err.Error(), "never committed") {
		t.Fatalf("prefer a trial slot: %v", err)
	}
	dir := filepath.Join(e.Dir, EntriesDir)
	// What systemd-boot does at each boot of the entry.
	for _, step := range [][2]string{{"ingot-b+3.conf", "ingot-b+2-1.conf"}, {"ingot-b+2-1.conf", "ingot-b+1-2.conf"}, {"ingot-b+1-2.conf", "ingot-b+0-3.conf"}} {
		if p := preferred(t, e); p.Slot != "b" {
			t.Fatalf("with %s: preferred %+v", step[0], p)
		}
		if err := os.Rename(filepath.Join(dir, step[0]), filepath.Join(dir, step[1])); err != nil {
			t.Fatal(err)
		}
	}
	if p := preferred(t, e); p.Slot != "a" {
		t.Fatalf("out of tries: preferred %+v, want a", p)
	}
	if err := e.MarkBad("b"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "ingot-b+0-3.conf")); err != nil {
		t.Fatalf("MarkBad of a bad entry renamed it: %v", err)
	}
	removed, err := e.RemoveBad()
	if err != nil || len(removed) != 1 || removed[0].File != "ingot-b+0-3.conf" {
		t.Fatalf("RemoveBad: %+v, %v", removed, err)
	}
	// The next install takes the same slot again, the running one untouched.
	if err := e.Install("b", strings.NewReader("image-b2"), sum("image-b2"), "ingot dev 3"); err != nil {
		t.Fatal(err)
	}
	if p := preferred(t, e); p.Slot != "b" || p.TriesLeft != Tries {
		t.Fatalf("second install: %+v", p)
	}
}

type failingReader struct {
	r     io.Reader
	after int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, errors.New("connection lost")
	}
	n, err := f.r.Read(p[:min(len(p), f.after)])
	f.after -= n
	return n, err
}

// A write that fails part-way, or an image whose digest is not the manifest's, leaves slot b
// without an entry and slot a as it was: the node boots a, as before.
func TestInstallFailuresLeaveBootableESP(t *testing.T) {
	e := esp(t)
	// An earlier committed b, so there is an entry to lose too.
	if err := e.Install("b", strings.NewReader("image-b"), sum("image-b"), "ingot dev 2"); err != nil {
		t.Fatal(err)
	}
	if err := e.Commit("b"); err != nil {
		t.Fatal(err)
	}
	if err := e.Prefer("a"); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("x"), 1<<20)
	for name, c := range map[string]struct {
		r   io.Reader
		sum string
		err string
	}{
		"cut off":      {&failingReader{r: bytes.NewReader(big), after: 1000}, sum(string(big)), "connection lost"},
		"wrong digest": {bytes.NewReader(big), sum("something else"), "the manifest says"},
		"bad digest":   {bytes.NewReader(big), "abc", "not 64 hex digits"},
	} {
		err := e.Install("b", c.r, c.sum, "ingot dev 9")
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: %v; want an error saying %q", name, err, c.err)
		}
		if p := preferred(t, e); p.Slot != "a" || p.Trial() {
			t.Fatalf("%s: preferred %+v; want committed a", name, p)
		}
		if got, _ := os.ReadFile(filepath.Join(e.Dir, UKIPath("a"))); string(got) != "image-a" {
			t.Fatalf("%s: slot a holds %q", name, got)
		}
		if strings.Contains(files(t, e), ".new") || strings.Contains(files(t, e), ".tmp") {
			t.Fatalf("%s: left temporary files: %s", name, files(t, e))
		}
	}
	if err := e.Install("c", strings.NewReader("x"), sum("x"), ""); err == nil {
		t.Error("installed into slot c")
	}
}

// A slot that failed its health checks is marked bad at once: the next boot is the other's.
func TestMarkBad(t *testing.T) {
	e := esp(t)
	if err := e.Install("b", strings.NewReader("image-b"), sum("image-b"), "ingot dev 2"); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(e.Dir, EntriesDir)
	if err := os.Rename(filepath.Join(dir, "ingot-b+3.conf"), filepath.Join(dir, "ingot-b+2-1.conf")); err != nil {
		t.Fatal(err)
	}
	if err := e.MarkBad("b"); err != nil {
		t.Fatal(err)
	}
	if p := preferred(t, e); p.Slot != "a" {
		t.Fatalf("after MarkBad: %+v", p)
	}
	if _, err := os.Stat(filepath.Join(dir, "ingot-b+0-3.conf")); err != nil {
		t.Fatal(err)
	}
}

func TestParseName(t *testing.T) {
	for _, c := range []struct {
		name        string
		slot        string
		left, done_ int
		ok          bool
	}{
		{"ingot-a.conf", "a", -1, -1, true},
		{"ingot-b+3.conf", "b", 3, 0, true},
		{"ingot-b+2-1.conf", "b", 2, 1, true},
		{"ingot-b+0-3.conf", "b", 0, 3, true},
		{"ingot-c.conf", "", 0, 0, false},
		{"ingot-a+x.conf", "", 0, 0, false},
		{".ingot-a.conf.tmp", "", 0, 0, false},
		{"other.conf", "", 0, 0, false},
	} {
		s, l, d, ok := ParseName(c.name)
		if ok != c.ok || ok && (s != c.slot || l != c.left || d != c.done_) {
			t.Errorf("ParseName(%q) = %q %d %d %v", c.name, s, l, d, ok)
		}
	}
}
