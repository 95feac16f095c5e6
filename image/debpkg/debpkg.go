// Package debpkg fetches Debian packages for a target architecture into ingot's cache and unpacks
// them there. It uses the host's apt sources with a private package list and archive cache per
// architecture, so fetching arm64 packages on an amd64 host never adds a dpkg architecture, never
// touches the host's own apt state and never installs anything on the host.
package debpkg

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Package is one fetched .deb.
type Package struct {
	Name    string
	Version string
	Arch    string
	Path    string // the .deb in the cache
	SHA256  string
}

// Fetcher downloads packages of one architecture.
type Fetcher struct {
	Cache string // ingot's cache root, e.g. ~/.cache/ingot
	Arch  string // Debian architecture: amd64 or arm64
	Log   *slog.Logger
	// MaxListAge is how old the private package lists may be before they are refreshed.
	MaxListAge time.Duration
}

func (f *Fetcher) aptDir() string  { return filepath.Join(f.Cache, "apt", f.Arch) }
func (f *Fetcher) debDir() string  { return filepath.Join(f.Cache, "debs", f.Arch) }
func (f *Fetcher) listDir() string { return filepath.Join(f.aptDir(), "lists") }

// sourcesDir holds the apt sources of the private state (writeSources).
func (f *Fetcher) sourcesDir() string { return filepath.Join(f.aptDir(), "sources") }

func (f *Fetcher) aptOptions() []string {
	return []string{
		"-q",
		"-oAPT::Architecture=" + f.Arch,
		"-oAPT::Architectures=" + f.Arch,
		"-oDir::State::Lists=" + f.listDir(),
		"-oDir::Cache=" + filepath.Join(f.aptDir(), "cache"),
		// The host's sources with Debian's firmware component (update writes them).
		"-oDir::Etc::SourceList=" + filepath.Join(f.sourcesDir(), "sources.list"),
		"-oDir::Etc::SourceParts=" + filepath.Join(f.sourcesDir(), "sources.list.d"),
		// apt would drop to the _apt user, which cannot write into root's cache.
		"-oAPT::Sandbox::User=root",
	}
}

// lock serialises apt runs on one architecture's private state across processes (two builds in
// parallel, e.g. the reproducibility test).
func (f *Fetcher) lock() (func(), error) {
	if err := os.MkdirAll(f.aptDir(), 0o755); err != nil {
		return nil, fmt.Errorf("create apt cache %s: %w", f.aptDir(), err)
	}
	p := filepath.Join(f.aptDir(), "ingot.lock")
	fd, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", p, err)
	}
	if err := unix.Flock(int(fd.Fd()), unix.LOCK_EX); err != nil {
		fd.Close()
		return nil, fmt.Errorf("lock %s: %w", p, err)
	}
	return func() { unix.Flock(int(fd.Fd()), unix.LOCK_UN); fd.Close() }, nil
}

func (f *Fetcher) logger() *slog.Logger {
	if f.Log != nil {
		return f.Log
	}
	return slog.New(slog.DiscardHandler)
}

// update refreshes the private package lists when they are missing or older than MaxListAge. A
// failed refresh with lists present is only a warning: builds keep working offline from the cache.
func (f *Fetcher) update(ctx context.Context) error {
	stamp := filepath.Join(f.aptDir(), "updated")
	age := f.MaxListAge
	if age == 0 {
		age = 24 * time.Hour
	}
	sum, err := writeSources("/etc/apt", f.sourcesDir())
	if err != nil {
		return fmt.Errorf("apt sources for %s: %w", f.Arch, err)
	}
	// The stamp holds the sources' digest: lists fetched from other sources are refreshed.
	if st, err := os.Stat(stamp); err == nil && time.Since(st.ModTime()) < age {
		if b, _ := os.ReadFile(stamp); string(b) == sum {
			return nil
		}
	}
	for _, d := range []string{filepath.Join(f.listDir(), "partial"), filepath.Join(f.aptDir(), "cache", "archives", "partial")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", d, err)
		}
	}
	f.logger().Info("refreshing package lists", "arch", f.Arch)
	out, err := run(ctx, "", "apt-get", append(f.aptOptions(), "update")...)
	if err != nil {
		if _, serr := os.Stat(stamp); serr == nil {
			f.logger().Warn("package list refresh failed; using cached lists", "arch", f.Arch, "err", err)
			return nil
		}
		return fmt.Errorf("apt-get update for %s: %w: %s", f.Arch, err, lastLine(out))
	}
	return os.WriteFile(stamp, []byte(sum), 0o644)
}

// Fetch downloads the candidate version of name (unless a matching .deb is cached) and returns it.
// A name that is a Debian metapackage is not followed; see FetchFollowing.
func (f *Fetcher) Fetch(ctx context.Context, name string) (*Package, error) {
	unlock, err := f.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	return f.fetchLocked(ctx, name)
}

func (f *Fetcher) fetchLocked(ctx context.Context, name string) (*Package, error) {
	if err := f.update(ctx); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(f.debDir(), 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", f.debDir(), err)
	}
	tmp, err := os.MkdirTemp(f.debDir(), ".download-")
	if err != nil {
		return nil, fmt.Errorf("create download dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	out, err := run(ctx, tmp, "apt-get", append(f.aptOptions(), "download", name)...)
	if err != nil {
		// Offline: fall back to the newest cached .deb of that package.
		if p, cerr := f.cached(name); cerr == nil {
			f.logger().Warn("download failed; using cached package", "package", name, "arch", f.Arch, "err", lastLine(out))
			return p, nil
		}
		if strings.Contains(out, "Unable to locate package") || strings.Contains(out, "has no installation candidate") {
			return nil, fmt.Errorf("debian package %q (%s) does not exist", name, f.Arch)
		}
		return nil, fmt.Errorf("download debian package %q (%s): %w: %s", name, f.Arch, err, lastLine(out))
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return nil, fmt.Errorf("download debian package %q (%s): got %d files", name, f.Arch, len(debs))
	}
	p, err := Inspect(ctx, debs[0])
	if err != nil {
		return nil, err
	}
	final := filepath.Join(f.debDir(), fmt.Sprintf("%s_%s_%s.deb", p.Name, strings.ReplaceAll(p.Version, ":", "%3a"), p.Arch))
	if err := os.Rename(debs[0], final); err != nil {
		return nil, fmt.Errorf("store %s: %w", final, err)
	}
	p.Path = final
	return p, nil
}

// FetchFollowing fetches name, and when it is a metapackage whose first dependency starts with
// prefix (linux-image-cloud-amd64 → linux-image-6.1.0-NN-cloud-amd64), the package it points at.
func (f *Fetcher) FetchFollowing(ctx context.Context, name, prefix string) (*Package, error) {
	unlock, err := f.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	p, err := f.fetchLocked(ctx, name)
	if err != nil {
		return nil, err
	}
	depends, err := field(ctx, p.Path, "Depends")
	if err != nil {
		return nil, err
	}
	first := strings.TrimSpace(strings.SplitN(depends, ",", 2)[0])
	first = strings.TrimSpace(strings.SplitN(first, "(", 2)[0])
	first = strings.TrimSpace(strings.SplitN(first, "|", 2)[0])
	if first == "" || !strings.HasPrefix(first, prefix) || first == name {
		return p, nil
	}
	return f.fetchLocked(ctx, first)
}

func (f *Fetcher) cached(name string) (*Package, error) {
	debs, _ := filepath.Glob(filepath.Join(f.debDir(), name+"_*_"+f.Arch+".deb"))
	debs = append(debs, mustGlob(filepath.Join(f.debDir(), name+"_*_all.deb"))...)
	if len(debs) == 0 {
		return nil, fmt.Errorf("no cached .deb for %s", name)
	}
	sort.Strings(debs)
	p, err := Inspect(context.Background(), debs[len(debs)-1])
	if err != nil {
		return nil, err
	}
	return p, nil
}

func mustGlob(pattern string) []string {
	m, _ := filepath.Glob(pattern)
	return m
}

// Inspect reads a .deb's name, version and architecture and hashes it.
func Inspect(ctx context.Context, deb string) (*Package, error) {
	out, err := run(ctx, "", "dpkg-deb", "--showformat=${Package}\\n${Version}\\n${Architecture}\\n", "-W", deb)
	if err != nil {
		return nil, fmt.Errorf("read package fields of %s: %w: %s", deb, err, lastLine(out))
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		return nil, fmt.Errorf("read package fields of %s: unexpected output %q", deb, out)
	}
	sum, err := FileSHA256(deb)
	if err != nil {
		return nil, err
	}
	return &Package{Name: lines[0], Version: lines[1], Arch: lines[2], Path: deb, SHA256: sum}, nil
}

func field(ctx context.Context, deb, name string) (string, error) {
	out, err := run(ctx, "", "dpkg-deb", "-f", deb, name)
	if err != nil {
		return "", fmt.Errorf("read %s of %s: %w: %s", name, deb, err, lastLine(out))
	}
	return strings.TrimSpace(out), nil
}

// Unpack extracts the package once into the cache and returns the directory. Extraction goes to a
// temporary directory renamed into place, so an interrupted unpack is never mistaken for a
// finished one.
func (f *Fetcher) Unpack(ctx context.Context, p *Package) (string, error) {
	dir := filepath.Join(f.Cache, "unpacked", p.Arch, p.Name+"_"+strings.ReplaceAll(p.Version, ":", "%3a"))
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", filepath.Dir(dir), err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".unpack-")
	if err != nil {
		return "", fmt.Errorf("create unpack dir: %w", err)
	}
	if out, err := run(ctx, "", "dpkg-deb", "-x", p.Path, tmp); err != nil {
		os.RemoveAll(tmp)
		return "", fmt.Errorf("unpack %s: %w: %s", p.Path, err, lastLine(out))
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Stat(dir); serr == nil { // a concurrent unpack won
			return dir, nil
		}
		return "", fmt.Errorf("store unpacked %s: %w", dir, err)
	}
	return dir, nil
}

// ExtractInto unpacks the package over dir (e.g. a sysroot shared by several packages).
func ExtractInto(ctx context.Context, p *Package, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if out, err := run(ctx, "", "dpkg-deb", "-x", p.Path, dir); err != nil {
		return fmt.Errorf("unpack %s into %s: %w: %s", p.Path, dir, err, lastLine(out))
	}
	return nil
}

// FileSHA256 returns the hex sha256 of a file.
func FileSHA256(path string) (string, error) {
	fd, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer fd.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fd); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func run(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "DEBIAN_FRONTEND=noninteractive")
	var buf bytes.Buffer
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	err := cmd.Run()
	if errors.Is(err, exec.ErrNotFound) {
		return "", fmt.Errorf("%s is not installed (run make deps)", name)
	}
	return buf.String(), err
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if l := strings.TrimSpace(lines[i]); l != "" && !strings.HasPrefix(l, "W:") {
			return l
		}
	}
	return strings.TrimSpace(s)
}
