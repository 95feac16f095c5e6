package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"golang.org/x/sys/unix"

	"ingot.dev/ingot/internal/testgate"
)

type entry struct {
	tar.Header
	Body string
}

func file(name, body string, mode int64) entry {
	return entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, Body: body}
}
func dir(name string, mode int64) entry {
	return entry{Header: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}}
}
func symlink(name, target string) entry {
	return entry{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}
func hardlink(name, target string) entry {
	return entry{Header: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}}
}

func tarball(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := e.Header
		if h.Format == tar.FormatUnknown && len(h.PAXRecords) > 0 {
			h.Format = tar.FormatPAX
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %s: %v", h.Name, err)
		}
		if _, err := tw.Write([]byte(e.Body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// sandbox is a directory holding a file "outside" next to "layers", the parent of layer dirs.
type sandbox struct{ base, layers, outside string }

func newSandbox(t *testing.T) sandbox {
	base := t.TempDir()
	s := sandbox{base: base, layers: filepath.Join(base, "a", "layers"), outside: filepath.Join(base, "outside")}
	if err := os.MkdirAll(s.layers, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.outside, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// untouched fails unless the sandbox holds exactly what newSandbox made.
func (s sandbox) untouched(t *testing.T) {
	t.Helper()
	var got []string
	filepath.Walk(s.base, func(p string, _ os.FileInfo, _ error) error {
		r, _ := filepath.Rel(s.base, p)
		got = append(got, r)
		return nil
	})
	want := []string{".", "a", "a/layers", "outside"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("sandbox holds %v, want only %v", got, want)
	}
	if b, err := os.ReadFile(s.outside); err != nil || string(b) != "keep" {
		t.Errorf("outside file changed: %q, %v", b, err)
	}
}

func TestApplyRejectsHostileLayers(t *testing.T) {
	for _, tc := range []struct {
		name    string
		entries func(s sandbox) []entry
	}{
		{"dotdot", func(sandbox) []entry { return []entry{file("../../outside", "x", 0o644)} }},
		{"dotdot inside path", func(sandbox) []entry { return []entry{file("a/../../../outside", "x", 0o644)} }},
		{"symlink to root then child", func(sandbox) []entry {
			return []entry{symlink("evil", "/"), file("evil/etc/x", "x", 0o644)}
		}},
		{"symlink up then child", func(sandbox) []entry {
			return []entry{symlink("a", "../../.."), file("a/x", "x", 0o644)}
		}},
		{"symlink then directory below it", func(sandbox) []entry {
			return []entry{symlink("evil", "/"), dir("evil/etc/", 0o755)}
		}},
		{"symlink to outside dir then overwrite", func(s sandbox) []entry {
			return []entry{symlink("d", s.base), file("d/outside", "x", 0o644)}
		}},
		{"whiteout through symlink", func(s sandbox) []entry {
			return []entry{symlink("d", s.base), file("d/.wh.outside", "", 0)}
		}},
		{"opaque through symlink", func(s sandbox) []entry {
			return []entry{symlink("d", s.base), file("d/.wh..wh..opq", "", 0)}
		}},
		{"hardlink outside", func(sandbox) []entry { return []entry{hardlink("l", "../../outside")} }},
		{"hardlink absolute outside", func(s sandbox) []entry { return []entry{hardlink("l", s.outside)} }},
		{"hardlink through symlink", func(s sandbox) []entry {
			return []entry{symlink("d", s.base), hardlink("l", "d/outside")}
		}},
		{"hardlink to missing", func(sandbox) []entry { return []entry{hardlink("l", "nothere")} }},
		{"whiteout of parent", func(sandbox) []entry { return []entry{file("a/.wh...", "", 0)} }},
		{"file replacing root", func(sandbox) []entry { return []entry{file(".", "x", 0o644)} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			dst := filepath.Join(s.layers, "1")
			_, err := Apply(context.Background(), bytes.NewReader(tarball(t, tc.entries(s)...)), dst, Options{})
			if !errors.Is(err, ErrRejected) {
				t.Fatalf("Apply = %v, want ErrRejected", err)
			}
			t.Log(err)
			s.untouched(t)
		})
	}
}

func TestApplyDeviceWithoutRoot(t *testing.T) {
	s := newSandbox(t)
	dev := entry{Header: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}}
	_, err := apply(context.Background(), bytes.NewReader(tarball(t, dev)), filepath.Join(s.layers, "1"), Options{}, false)
	if !errors.Is(err, ErrRejected) {
		t.Fatalf("Apply = %v, want ErrRejected", err)
	}
	s.untouched(t)
}

func TestApplyNeverFollowsSymlinks(t *testing.T) {
	s := newSandbox(t)
	dst := filepath.Join(s.layers, "1")
	layer := tarball(t,
		symlink("f", s.outside), file("f", "new", 0o644), // replaces the link, not its target
		file("/abs/path", "abs", 0o644),              // a leading slash is relative to the layer root
		symlink("h", s.outside), hardlink("hl", "h"), // links the symlink itself
	)
	if _, err := Apply(context.Background(), bytes.NewReader(layer), dst, Options{}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(s.outside); string(b) != "keep" {
		t.Errorf("outside file now %q", b)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "f")); err != nil || string(b) != "new" {
		t.Errorf("f = %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(dst, "abs/path")); err != nil || string(b) != "abs" {
		t.Errorf("abs/path = %q, %v", b, err)
	}
	if target, err := os.Readlink(filepath.Join(dst, "hl")); err != nil || target != s.outside {
		t.Errorf("hl = %q, %v; want a symlink to %s", target, err, s.outside)
	}
}

func goodLayer(t *testing.T) []byte {
	t.Helper()
	mt := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	withTime := func(e entry) entry { e.ModTime = mt; return e }
	xattrFile := file("etc/attrs", "a", 0o644)
	xattrFile.PAXRecords = map[string]string{
		"SCHILY.xattr.user.test":                "value",
		"SCHILY.xattr.trusted.overlay.redirect": "/elsewhere", // never from a layer
	}
	return tarball(t,
		withTime(dir("etc/", 0o755)),
		file("etc/passwd", "root:x:0:0\n", 0o644),
		hardlink("./etc/passwd2", "/etc/passwd"),
		xattrFile,
		file("bin/su", "su", 0o4755), // parent "bin" implied
		dir("tmp/", 0o1777),
		dir("shared/", 0o2775),
		dir("locked/", 0o500),
		file("locked/inside", "x", 0o400), // a 0500 directory still receives its children
		symlink("lib", "usr/lib"),
		symlink("abs", "/etc/passwd"),
		file("gone/.wh.file", "", 0),
		dir("opq/", 0o755),
		file("opq/.wh..wh..opq", "", 0),
		file("opq/new", "n", 0o644),
		file(".wh..wh.plnk", "", 0), // AUFS bookkeeping, ignored
		entry{Header: tar.Header{Typeflag: tar.TypeFifo, Name: "fifo", Mode: 0o600}},
	)
}

func TestApplyLayout(t *testing.T) {
	plain := goodLayer(t)
	sum := sha256.Sum256(plain)
	want := "sha256:" + hex.EncodeToString(sum[:])
	for _, c := range []Compression{Uncompressed, Gzip, Zstd} {
		t.Run(string(c), func(t *testing.T) {
			s := newSandbox(t)
			dst := filepath.Join(s.layers, "1")
			res, err := Apply(context.Background(), bytes.NewReader(compress(t, c, plain)), dst, Options{DiffID: want, UserXattr: os.Geteuid() != 0})
			if err != nil {
				t.Fatal(err)
			}
			if res.DiffID != want || res.Inodes < 15 || res.Size <= 0 {
				t.Errorf("result %+v, want DiffID %s and counts", res, want)
			}
			t.Cleanup(func() { os.Chmod(filepath.Join(dst, "locked"), 0o755) }) // lets TempDir clean up without root
			checkLayout(t, dst)
		})
	}
}

func compress(t *testing.T, c Compression, plain []byte) []byte {
	var b bytes.Buffer
	switch c {
	case Gzip:
		w := gzip.NewWriter(&b)
		w.Write(plain)
		w.Close()
	case Zstd:
		w, err := zstd.NewWriter(&b)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(plain)
		w.Close()
	default:
		return plain
	}
	return b.Bytes()
}

func checkLayout(t *testing.T, dst string) {
	t.Helper()
	p := func(s string) string { return filepath.Join(dst, s) }
	modes := map[string]os.FileMode{
		"etc":        os.ModeDir | 0o755,
		"etc/passwd": 0o644,
		"bin":        os.ModeDir | 0o755,
		"bin/su":     os.ModeSetuid | 0o755,
		"tmp":        os.ModeDir | os.ModeSticky | 0o777,
		"shared":     os.ModeDir | os.ModeSetgid | 0o775,
		"locked":     os.ModeDir | 0o500,
		"lib":        os.ModeSymlink | 0o777,
		"fifo":       os.ModeNamedPipe | 0o600,
	}
	for name, want := range modes {
		fi, err := os.Lstat(p(name))
		if err != nil {
			t.Error(err)
			continue
		}
		if fi.Mode() != want {
			t.Errorf("%s mode %v, want %v", name, fi.Mode(), want)
		}
	}
	if fi, err := os.Stat(p("etc")); err != nil || !fi.ModTime().Equal(time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("etc mtime not kept after its children were written: %v %v", fi.ModTime(), err)
	}
	for name, want := range map[string]string{"lib": "usr/lib", "abs": "/etc/passwd"} {
		if got, err := os.Readlink(p(name)); err != nil || got != want {
			t.Errorf("symlink %s -> %q (%v), want verbatim %q", name, got, err, want)
		}
	}
	a, _ := os.Stat(p("etc/passwd"))
	b, _ := os.Stat(p("etc/passwd2"))
	if a == nil || b == nil || !os.SameFile(a, b) {
		t.Error("etc/passwd2 is not a hard link of etc/passwd")
	}
	var st unix.Stat_t
	if err := unix.Lstat(p("gone/file"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("gone/file is not a 0/0 whiteout device: %+v %v", st, err)
	}
	for _, n := range []string{"gone/.wh.file", ".wh..wh.plnk", "opq/.wh..wh..opq"} {
		if _, err := os.Lstat(p(n)); err == nil {
			t.Errorf("%s was written as a file", n)
		}
	}
	buf := make([]byte, 64)
	if n, err := unix.Lgetxattr(p("etc/attrs"), "user.test", buf); err != nil || string(buf[:n]) != "value" {
		t.Errorf("user.test xattr = %q, %v", buf[:n], err)
	}
	opaque := "user.overlay.opaque" // trusted.* needs root
	if os.Geteuid() == 0 {
		opaque = "trusted.overlay.opaque"
	}
	if n, err := unix.Lgetxattr(p("opq"), opaque, buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opq is not opaque: %s = %q, %v", opaque, buf[:n], err)
	}
	if os.Geteuid() == 0 {
		if _, err := unix.Lgetxattr(p("etc/attrs"), "trusted.overlay.redirect", buf); err == nil {
			t.Error("a layer's own trusted.overlay.* xattr was applied")
		}
	}
}

func TestApplyAsRoot(t *testing.T) {
	testgate.RequireRoot(t)
	s := newSandbox(t)
	dst := filepath.Join(s.layers, "1")
	owned := file("home/u/suid", "x", 0o4750)
	owned.Uid, owned.Gid = 1000, 2000
	capFile := file("ping", "p", 0o755)
	capFile.Uid = 1000
	capFile.PAXRecords = map[string]string{"SCHILY.xattr.security.capability": string([]byte{1, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})}
	layer := tarball(t,
		owned, capFile,
		entry{Header: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0o666, Devmajor: 1, Devminor: 3}},
		entry{Header: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/loop9", Mode: 0o660, Devmajor: 7, Devminor: 9}},
		file("dir/.wh..wh..opq", "", 0),
	)
	if _, err := Apply(context.Background(), bytes.NewReader(layer), dst, Options{}); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dst, "home/u/suid"), &st); err != nil || st.Uid != 1000 || st.Gid != 2000 || st.Mode&0o7777 != 0o4750 {
		t.Errorf("owned file: uid %d gid %d mode %o (%v)", st.Uid, st.Gid, st.Mode&0o7777, err)
	}
	if _, err := unix.Lgetxattr(filepath.Join(dst, "ping"), "security.capability", make([]byte, 64)); err != nil {
		t.Errorf("security.capability lost after chown: %v", err)
	}
	if err := unix.Lstat(filepath.Join(dst, "dev/null"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != unix.Mkdev(1, 3) || st.Mode&0o777 != 0o666 {
		t.Errorf("dev/null: %+v %v", st, err)
	}
	if err := unix.Lstat(filepath.Join(dst, "dev/loop9"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFBLK || st.Rdev != unix.Mkdev(7, 9) {
		t.Errorf("dev/loop9: %+v %v", st, err)
	}
}

func TestApplyUserXattrOpaque(t *testing.T) {
	s := newSandbox(t)
	dst := filepath.Join(s.layers, "1")
	if _, err := apply(context.Background(), bytes.NewReader(tarball(t, file("d/.wh..wh..opq", "", 0))), dst, Options{UserXattr: true}, false); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if n, err := unix.Lgetxattr(filepath.Join(dst, "d"), "user.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("user.overlay.opaque = %q, %v", buf[:n], err)
	}
}

func TestApplyFailuresLeaveNothing(t *testing.T) {
	good := tarball(t, file("a", "a", 0o644), file("b", "b", 0o644))
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name  string
		ctx   context.Context
		layer []byte
		opts  Options
	}{
		{"diffID mismatch", context.Background(), good, Options{DiffID: "sha256:" + strings.Repeat("0", 64)}},
		{"canceled", canceled, good, Options{}},
		{"truncated", context.Background(), good[:700], Options{}},
		{"cut at a header", context.Background(), good[:1024], Options{}},
		{"xz", context.Background(), append([]byte{0xfd, '7', 'z', 'X', 'Z', 0}, good...), Options{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t)
			if _, err := Apply(tc.ctx, bytes.NewReader(tc.layer), filepath.Join(s.layers, "1"), tc.opts); err == nil {
				t.Fatal("Apply succeeded")
			} else {
				t.Log(err)
			}
			s.untouched(t)
		})
	}
	s := newSandbox(t)
	dst := filepath.Join(s.layers, "1")
	if _, err := Apply(context.Background(), bytes.NewReader(good), dst, Options{}); err != nil {
		t.Fatal(err)
	}
	if _, err := Apply(context.Background(), bytes.NewReader(good), dst, Options{}); !errors.Is(err, os.ErrExist) {
		t.Errorf("second Apply to the same dir = %v, want ErrExist", err)
	}
	names, _ := os.ReadDir(s.layers)
	if len(names) != 1 {
		t.Errorf("layers dir holds %d entries, want 1", len(names))
	}
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"a/b": "a/b", "./a//b/": "a/b", "/abs/path": "abs/path", "a/../b": "b", ".": "", "/": "",
		"../x": "!", "a/../../x": "!", "/../x": "!",
	} {
		got, err := cleanPath(in)
		if want == "!" {
			if !errors.Is(err, ErrRejected) {
				t.Errorf("cleanPath(%q) = %q, %v; want ErrRejected", in, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("cleanPath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
