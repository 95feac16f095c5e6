package logs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ingot.dev/ingot/runtime/errdefs"
)

var fixed = time.Date(2026, 3, 4, 5, 6, 7, 890123000, time.UTC)

func fixedClock() time.Time { return fixed }

func open(t *testing.T, maxLen int) (*Writer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pod", "ctr", "0.log")
	w, err := Open(path, Options{MaxLineSize: maxLen, Now: fixedClock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w, path
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// entries renders expected entries with the fixed timestamp.
func entries(stream string, tagMsgs ...string) string {
	var b strings.Builder
	for _, tm := range tagMsgs {
		fmt.Fprintf(&b, "2026-03-04T05:06:07.890123Z %s %s\n", stream, tm)
	}
	return b.String()
}

func TestCopySplitting(t *testing.T) {
	a := strings.Repeat("a", 7)
	for _, tc := range []struct {
		name  string
		max   int
		input string
		want  []string // "TAG message"
	}{
		{"one line", 8, "hello\n", []string{"F hello"}},
		{"two lines", 8, "a\nb\n", []string{"F a", "F b"}},
		{"empty line", 8, "\n", []string{"F "}},
		{"crlf dropped", 8, "dos\r\n", []string{"F dos"}},
		{"lone cr kept", 8, "a\rb\n", []string{"F a\rb"}},
		{"no newline at EOF is partial", 8, "tail", []string{"P tail"}},
		{"empty input writes nothing", 8, "", nil},
		{"shorter than max", 8, a + "\n", []string{"F " + a}},
		{"exactly max", 7, a + "\n", []string{"F " + a}},
		{"max plus one", 7, a + "b\n", []string{"P " + a, "F b"}},
		{"three pieces", 3, "abcdefgh\n", []string{"P abc", "P def", "F gh"}},
		{"exact multiple", 3, "abcdef\n", []string{"P abc", "F def"}},
		{"long tail without newline", 3, "abcdefg", []string{"P abc", "P def", "P g"}},
		{"crlf after exactly max", 3, "abc\r\nd\n", []string{"F abc", "F d"}},
		{"unlimited -1", -1, strings.Repeat("x", 10000) + "\n", []string{"F " + strings.Repeat("x", 10000)}},
		{"unlimited 0", 0, strings.Repeat("y", 5000) + "\n", []string{"F " + strings.Repeat("y", 5000)}},
		{"longer than the read buffer", 5000, strings.Repeat("z", 5001) + "\n", []string{"P " + strings.Repeat("z", 5000), "F z"}},
		{"containerd default", DefaultMaxLineSize, strings.Repeat("c", DefaultMaxLineSize+1) + "\n",
			[]string{"P " + strings.Repeat("c", DefaultMaxLineSize), "F c"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, path := open(t, tc.max)
			if err := w.Copy(Stdout, strings.NewReader(tc.input)); err != nil {
				t.Fatal(err)
			}
			if got, want := read(t, path), entries("stdout", tc.want...); got != want {
				t.Errorf("log file:\n got %q\nwant %q", got, want)
			}
		})
	}
}

// oneByteReader hands out its input a byte at a time, so lines arrive in many reads.
type oneByteReader struct{ r io.Reader }

func (o oneByteReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func TestCopySmallReads(t *testing.T) {
	w, path := open(t, 4)
	if err := w.Copy(Stderr, oneByteReader{strings.NewReader("abcdef\r\nxy\nz")}); err != nil {
		t.Fatal(err)
	}
	want := entries("stderr", "P abcd", "F ef", "F xy", "P z")
	if got := read(t, path); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

type failingReader struct{ data string }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.data == "" {
		return 0, fmt.Errorf("pipe broke")
	}
	n := copy(p, f.data)
	f.data = f.data[n:]
	return n, nil
}

func TestReadErrorFlushesPending(t *testing.T) {
	w, path := open(t, 0)
	err := w.Copy(Stdout, &failingReader{data: "done\nhalf"})
	if err == nil || !strings.Contains(err.Error(), "pipe broke") {
		t.Fatalf("error = %v, want the read error", err)
	}
	if got, want := read(t, path), entries("stdout", "F done", "P half"); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestTimestampParses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	w, err := Open(path, Options{MaxLineSize: DefaultMaxLineSize})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := w.Copy(Stdout, strings.NewReader("x\n")); err != nil {
		t.Fatal(err)
	}
	w.Close()
	line := strings.TrimSuffix(read(t, path), "\n")
	ts, _, _ := strings.Cut(line, " ")
	got, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		t.Fatalf("timestamp %q: %v", ts, err)
	}
	if got.Before(before.Add(-time.Second)) || got.After(time.Now().Add(time.Second)) {
		t.Errorf("timestamp %v is not now", got)
	}
	e, err := ParseEntry([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if e.Stream != Stdout || e.Tag != TagFull || string(e.Message) != "x" || !e.Time.Equal(got) {
		t.Errorf("ParseEntry = %+v", e)
	}
}

func TestParseEntryRejects(t *testing.T) {
	for _, l := range []string{
		"",
		"notatime stdout F x",
		"2026-03-04T05:06:07Z stdin F x",
		"2026-03-04T05:06:07Z stdout X x",
		"2026-03-04T05:06:07Z stdout F",
	} {
		if _, err := ParseEntry([]byte(l)); err == nil {
			t.Errorf("ParseEntry(%q) succeeded", l)
		}
	}
}

// TestStreamsInterleaveByLine writes many long lines on both streams at once through small reads
// and checks that every entry in the file is whole.
func TestStreamsInterleaveByLine(t *testing.T) {
	const lines = 300
	w, path := open(t, 0)
	gen := func(name string) io.Reader {
		var b strings.Builder
		for i := range lines {
			fmt.Fprintf(&b, "%s-%03d-%s\n", name, i, strings.Repeat(name[:1], 500))
		}
		return oneByteReader{strings.NewReader(b.String())}
	}
	if err := w.Run(gen("out"), gen("err")); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	next := map[Stream]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		e, err := ParseEntry(sc.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		name := map[Stream]string{Stdout: "out", Stderr: "err"}[e.Stream]
		want := fmt.Sprintf("%s-%03d-%s", name, next[e.Stream], strings.Repeat(name[:1], 500))
		if e.Tag != TagFull || string(e.Message) != want {
			t.Fatalf("entry %d of %s = %s %.40q…, want F %.40q…", next[e.Stream], e.Stream, e.Tag, e.Message, want)
		}
		next[e.Stream]++
	}
	if next[Stdout] != lines || next[Stderr] != lines {
		t.Errorf("entries: %v, want %d each", next, lines)
	}
}

func TestRunNilStderr(t *testing.T) {
	w, path := open(t, 0)
	if err := w.Run(strings.NewReader("tty\n"), nil); err != nil {
		t.Fatal(err)
	}
	if got, want := read(t, path), entries("stdout", "F tty"); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestReopenAfterRotation does what kubelet's log rotation does: rename the file, call
// ReopenContainerLog, and expect later entries in a new file under the old name, with a line
// that was half written at the time split across both files and nothing lost.
func TestReopenAfterRotation(t *testing.T) {
	w, path := open(t, 0)
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- w.Copy(Stdout, pr) }()

	write := func(s string) {
		if _, err := pw.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor := func(p, want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, _ := os.ReadFile(p)
			if string(b) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s = %q, want %q", p, b, want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	write("before\n")
	waitFor(path, entries("stdout", "F before"))
	write("half ")
	rotated := path + ".20260304-050607"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	write("line\nafter\n")
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, want := read(t, rotated), entries("stdout", "F before"); got != want {
		t.Errorf("rotated file = %q, want %q", got, want)
	}
	if got, want := read(t, path), entries("stdout", "F half line", "F after"); got != want {
		t.Errorf("new file = %q, want %q", got, want)
	}
}

func TestReopenFailureCreatesNothing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "logs", "0.log")
	w, err := Open(path, Options{Now: fixedClock})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// Replace the log directory by a file: the new log cannot be created.
	if err := os.RemoveAll(filepath.Join(dir, "logs")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "logs"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w.Reopen(); err == nil {
		t.Fatal("Reopen succeeded without a directory")
	}
	// The old (unlinked) file is still in use: writing does not fail.
	if err := w.Copy(Stdout, strings.NewReader("still\n")); err != nil {
		t.Errorf("Copy after failed Reopen: %v", err)
	}
}

func TestClosedWriter(t *testing.T) {
	w, _ := open(t, 0)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := w.Reopen(); err == nil {
		t.Error("Reopen of a closed log succeeded")
	}
	// The stream is drained even though nothing can be written.
	r := strings.NewReader("lost\nlines\n")
	if err := w.Copy(Stdout, r); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Copy into a closed log: %v", err)
	}
	if r.Len() != 0 {
		t.Errorf("%d bytes left unread", r.Len())
	}
}

func TestUnknownStream(t *testing.T) {
	w, _ := open(t, 0)
	if err := w.Copy("stdin", strings.NewReader("x\n")); err == nil {
		t.Error("Copy accepted stream stdin")
	}
}

func TestAppendEntry(t *testing.T) {
	got := AppendEntry(nil, time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("", 3600)), Stderr, TagPartial, []byte("m"))
	if want := "2026-01-02T03:04:05+01:00 stderr P m\n"; !bytes.Equal(got, []byte(want)) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestConcurrentReopen(t *testing.T) {
	w, path := open(t, 0)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 50 {
			if err := w.Reopen(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var b strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&b, "%d\n", i)
	}
	if err := w.Copy(Stdout, oneByteReader{strings.NewReader(b.String())}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	// No rename happened, so every reopen appends to the same file: all entries are there.
	if got, want := strings.Count(read(t, path), "\n"), 2000; got != want {
		t.Errorf("%d entries, want %d", got, want)
	}
}

// TestReopenRefusesSymlink swaps a symlink to a host file in for the log file between the
// rotation's rename and ReopenContainerLog, as a pod that can write to the log directory could.
// Reopen must fail naming the path, and the host file must stay as it was.
func TestReopenRefusesSymlink(t *testing.T) {
	w, path := open(t, 0)
	host := filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(host, []byte("root:x:0:\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(host, path); err != nil {
		t.Fatal(err)
	}
	err := w.Reopen()
	w.Copy(Stdout, strings.NewReader("owned\n"))
	if got := read(t, host); got != "root:x:0:\n" {
		t.Fatalf("the host file behind the symlink was written: %q", got)
	}
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Reopen over a symlink: err = %v, want an error naming %s", err, path)
	}
	// Entries still go to the old file, which the rotation renamed.
	if got, want := read(t, path+".1"), entries("stdout", "F owned"); got != want {
		t.Fatalf("rotated file = %q, want %q", got, want)
	}
}

// A CRI log_path stays below its log_directory.
func TestJoin(t *testing.T) {
	for _, c := range []struct{ name, want, err string }{
		{"ctr/0.log", "/logs/pod/ctr/0.log", ""},
		{"ctr/../0.log", "/logs/pod/0.log", ""},
		{"../other/0.log", "", `log_path "../other/0.log" escapes log_directory /logs/pod: invalid argument`},
		{"ctr/../../x", "", `log_path "ctr/../../x" escapes log_directory /logs/pod: invalid argument`},
		{"..", "", `log_path ".." escapes log_directory /logs/pod: invalid argument`},
		{"/etc/shadow", "", `log_path "/etc/shadow" is absolute, want a path below log_directory /logs/pod: invalid argument`},
	} {
		got, err := Join("/logs/pod", c.name)
		if c.err != "" {
			if err == nil || err.Error() != c.err || !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("Join(%q) = %q, %v, want error %q (ErrInvalid)", c.name, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("Join(%q) = %q, %v, want %q", c.name, got, err, c.want)
		}
	}
	if _, err := OpenIn(t.TempDir(), "../escape.log", Options{}); err == nil || !errors.Is(err, errdefs.ErrInvalid) {
		t.Fatalf("OpenIn with an escaping name: %v", err)
	}
}

// A directory between log_directory and the file swapped for a symlink (to a host directory)
// during rotation: Reopen refuses it and writes nothing there.
func TestReopenRefusesSymlinkedDirectory(t *testing.T) {
	dir := t.TempDir()
	w, err := OpenIn(dir, "ctr/0.log", Options{Now: fixedClock})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	hostDir := t.TempDir()
	if err := os.Rename(filepath.Join(dir, "ctr"), filepath.Join(dir, "ctr.old")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(hostDir, filepath.Join(dir, "ctr")); err != nil {
		t.Fatal(err)
	}
	err = w.Reopen()
	if want := filepath.Join(dir, "ctr", "0.log"); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Reopen through a symlinked directory: err = %v, want an error naming %s", err, want)
	}
	if ents, _ := os.ReadDir(hostDir); len(ents) != 0 {
		t.Fatalf("Reopen created %s in the symlink's target", ents[0].Name())
	}
}

// A FIFO planted as the log file would block the shim's open forever; it is refused at once.
func TestReopenRefusesFIFO(t *testing.T) {
	w, path := open(t, 0)
	os.Remove(path)
	if err := unix.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := w.Reopen(); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("Reopen over a FIFO: err = %v, want an error naming %s", err, path)
	}
}
