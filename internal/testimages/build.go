package testimages

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"ingot.dev/ingot/image/debpkg"
	"ingot.dev/ingot/image/initramfs"
	"ingot.dev/ingot/internal/cachedir"
)

// sources are this package's code and the stand-ins' code: the stand-ins are built from them, and
// all of it but the tests goes into the cache key, so a change to a recipe or a stand-in rebuilds
// the images.
//
//go:embed *.go cmd
var sources embed.FS

// Debian packages every image set is made of.
var debs = []string{"busybox-static", "busybox", "libc6"}

// Options tune Build.
type Options struct {
	// Arches to build, as Debian and Go name them: "amd64", "arm64". Default: the host's.
	Arches []string
	// Cache is ingot's cache root (Debian packages, and built images under testimages/).
	// Default cachedir.Default().
	Cache string
	// NoCache builds without reading or writing cached images (Debian packages still come from
	// the cache); the reproducibility test compares such a build with the cached one.
	NoCache bool
	Log     *slog.Logger
}

// Image is one reference as critest names it and the multi-platform index served under it.
type Image struct {
	Ref   string
	Index v1.ImageIndex
}

// Build builds every servable image of the catalog for opts.Arches and returns them by reference,
// in catalog order. Images are cached per architecture under Cache/testimages/<arch>-<hash>, where
// the hash covers the Debian packages, the Go toolchain and this package's sources.
func Build(ctx context.Context, opts Options) ([]Image, error) {
	if len(opts.Arches) == 0 {
		opts.Arches = []string{hostArch()}
	}
	if opts.Cache == "" {
		opts.Cache = cachedir.Default()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	byArch := map[string]map[string]v1.Image{}
	for _, arch := range opts.Arches {
		imgs, err := buildArch(ctx, opts, arch)
		if err != nil {
			return nil, err
		}
		byArch[arch] = imgs
	}
	indexes := map[string]v1.ImageIndex{}
	for _, r := range Recipes() {
		idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
		for _, arch := range opts.Arches {
			img := byArch[arch][r.Name]
			if img == nil {
				return nil, fmt.Errorf("test image %s for %s: missing from the build", r.Name, arch)
			}
			p := platform(arch)
			idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
		}
		indexes[r.Name] = idx
	}
	var out []Image
	for _, e := range Catalog() {
		if e.Image == "" {
			continue
		}
		idx, ok := indexes[e.Image]
		if !ok {
			return nil, fmt.Errorf("catalog entry %s: no recipe named %q", e.Ref, e.Image)
		}
		out = append(out, Image{Ref: e.Ref, Index: idx})
	}
	return out, nil
}

func hostArch() string { return runtime.GOARCH }

func platform(arch string) v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: arch}
	if arch == "arm64" {
		p.Variant = "v8"
	}
	return p
}

// inputs are what one architecture's images are made of.
type inputs struct {
	arch          string
	busyboxStatic []byte   // Debian busybox-static: every applet but sh
	applets       []string // its applet names
	shell         tree     // Debian's dynamic busybox as /bin/sh, with the libc it needs
	standin       []byte   // cmd/standin for arch
	webserver     []byte   // cmd/webserver for arch
}

func buildArch(ctx context.Context, opts Options, arch string) (map[string]v1.Image, error) {
	if arch != "amd64" && arch != "arm64" {
		return nil, fmt.Errorf("test images for %s: only amd64 and arm64 are supported", arch)
	}
	f := &debpkg.Fetcher{Cache: opts.Cache, Arch: arch, Log: opts.Log}
	h := sha256.New()
	fmt.Fprintf(h, "ingot testimages\narch %s\n", arch)
	dirs := map[string]string{}
	for _, name := range debs {
		p, err := f.Fetch(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("test images for %s: %w", arch, err)
		}
		fmt.Fprintf(h, "deb %s %s %s\n", p.Name, p.Version, p.SHA256)
		if dirs[name], err = f.Unpack(ctx, p); err != nil {
			return nil, fmt.Errorf("test images for %s: %w", arch, err)
		}
	}
	goVersion, err := goEnv(ctx, "GOVERSION")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(h, "go %s\nepoch %d\n", goVersion, epoch().Unix())
	if err := hashSources(h); err != nil {
		return nil, err
	}
	key := hex.EncodeToString(h.Sum(nil))[:20]
	dir := filepath.Join(opts.Cache, "testimages", arch+"-"+key)
	log := opts.Log.With("arch", arch, "cache", dir)

	if !opts.NoCache {
		imgs, err := loadLayout(dir)
		if err == nil {
			log.Debug("test images from cache")
			return imgs, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("cached test images unreadable, rebuilding", "err", err)
		}
	}

	in := &inputs{arch: arch}
	if in.busyboxStatic, err = os.ReadFile(filepath.Join(dirs["busybox-static"], "bin/busybox")); err != nil {
		return nil, fmt.Errorf("test images for %s: %w", arch, err)
	}
	if in.applets, err = initramfs.BusyboxApplets(in.busyboxStatic); err != nil {
		return nil, fmt.Errorf("test images for %s: %w", arch, err)
	}
	if in.shell, err = shellTree(dirs["busybox"], dirs["libc6"]); err != nil {
		return nil, fmt.Errorf("test images for %s: %w", arch, err)
	}
	bins, err := buildStandins(ctx, arch)
	if err != nil {
		return nil, err
	}
	in.standin, in.webserver = bins["standin"], bins["webserver"]

	imgs, err := buildImages(in)
	if err != nil || opts.NoCache {
		return imgs, err
	}
	if err := storeLayout(dir, imgs); err != nil {
		return nil, err
	}
	log.Info("built test images", "images", len(imgs))
	pruneCache(dir, log)
	// Serve from the cache: its layers are files, not tar streams compressed again on every read.
	return loadLayout(dir)
}

func hashSources(h io.Writer) error {
	return fs.WalkDir(sources, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, "_test.go") {
			return err
		}
		b, err := sources.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "file %s %d\n", p, len(b))
		_, err = h.Write(b)
		return err
	})
}

// epoch is the mtime of every file and the creation time of every image: SOURCE_DATE_EPOCH, or
// the Unix epoch.
func epoch() time.Time {
	if s, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil {
		return time.Unix(s, 0).UTC()
	}
	return time.Unix(0, 0).UTC()
}

// baseTree is the busybox base layer: Debian's static busybox with every applet hard-linked in
// /bin as Docker's busybox image has them, except the shell; Debian's dynamically linked busybox
// as /bin/sh, because the static build's ash runs applets internally (FEATURE_SH_STANDALONE)
// instead of executing /bin/ls, and critest's MaskedPaths spec masks /bin/ls; the stand-ins for
// the applets Debian leaves out (ipcs, ipcmk, pgrep); Docker busybox's /etc/passwd and /etc/group.
func baseTree(in *inputs) tree {
	t := tree{}
	for _, d := range []string{"bin", "dev", "etc", "home", "proc", "root", "run", "sys", "usr/sbin", "usr/bin", "var/run", "var/www", "var/spool/mail"} {
		t.dir(d, 0o755)
	}
	t.dir("root", 0o700)
	t.dir("tmp", 0o1777)
	t.file("bin/busybox", 0o755, in.busyboxStatic)
	for _, a := range in.applets {
		switch a {
		case "busybox", "sh", "ash", "ipcs", "ipcmk", "pgrep":
			continue
		}
		t.hardlink("bin/"+a, "bin/busybox")
	}
	for p, n := range in.shell {
		t[p] = n
	}
	t.hardlink("bin/ash", "bin/sh")
	t.file("bin/ipcs", 0o755, in.standin)
	t.hardlink("bin/ipcmk", "bin/ipcs")
	t.hardlink("bin/pgrep", "bin/ipcs")
	t.file("etc/passwd", 0o644, []byte(passwd))
	t.file("etc/group", 0o644, []byte(group))
	return t
}

// shellTree takes bin/busybox of Debian's busybox package as bin/sh, with its ELF interpreter
// and the libraries it links (from libc6), symlinks included.
func shellTree(busyboxDir, libcDir string) (tree, error) {
	t := tree{}
	bin := filepath.Join(busyboxDir, "bin/busybox")
	if err := t.copyFrom(busyboxDir, "bin/busybox", "bin/sh", 0o755); err != nil {
		return nil, err
	}
	ef, err := elf.Open(bin)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", bin, err)
	}
	defer ef.Close()
	var want []string
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err != nil {
				return nil, fmt.Errorf("read interpreter of %s: %w", bin, err)
			}
			want = append(want, clean(string(bytes.TrimRight(b, "\x00"))))
		}
	}
	libs, err := ef.ImportedLibraries()
	if err != nil {
		return nil, fmt.Errorf("read libraries of %s: %w", bin, err)
	}
	for _, l := range libs {
		found, _ := filepath.Glob(filepath.Join(libcDir, "lib", "*", l))
		if len(found) != 1 {
			return nil, fmt.Errorf("%s needs %s: found %d copies in libc6", bin, l, len(found))
		}
		rel, _ := filepath.Rel(libcDir, found[0])
		want = append(want, rel)
	}
	for _, p := range want {
		for range 8 { // follow symlinks within the package
			if err := t.copyFrom(libcDir, p, p, 0); err != nil {
				return nil, err
			}
			n := t[clean(p)]
			if n.typ != tar.TypeSymlink {
				break
			}
			if path.IsAbs(n.link) {
				p = clean(n.link)
			} else {
				p = path.Join(path.Dir(clean(p)), n.link)
			}
		}
	}
	return t, nil
}

// buildStandins compiles cmd/standin and cmd/webserver for arch from the embedded sources, in a
// throwaway module, offline and reproducibly.
func buildStandins(ctx context.Context, arch string) (map[string][]byte, error) {
	tmp, err := os.MkdirTemp("", "ingot-standins-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, "go.mod"), []byte("module ingot.invalid/standins\n\ngo 1.26\n"), 0o644); err != nil {
		return nil, err
	}
	names := []string{"standin", "webserver"}
	for _, n := range names {
		b, err := sources.ReadFile("cmd/" + n + "/main.go")
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Join(tmp, n), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(tmp, n, "main.go"), b, 0o644); err != nil {
			return nil, err
		}
	}
	cmd := exec.CommandContext(ctx, goTool(), "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", filepath.Join(tmp, "out")+"/", "./standin", "./webserver")
	cmd.Dir = tmp
	cmd.Env = append(goBuildEnv(), "GOARCH="+arch)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build test stand-ins for %s: %w: %s", arch, err, strings.TrimSpace(string(out)))
	}
	bins := map[string][]byte{}
	for _, n := range names {
		if bins[n], err = os.ReadFile(filepath.Join(tmp, "out", n)); err != nil {
			return nil, fmt.Errorf("build test stand-ins for %s: %w", arch, err)
		}
	}
	return bins, nil
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// goBuildEnv is the environment of the stand-ins' build: static, Linux, no network, no workspace.
func goBuildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		switch k, _, _ := strings.Cut(kv, "="); k {
		case "GOARCH", "GOOS", "CGO_ENABLED", "GOFLAGS", "GOWORK", "GOPROXY", "GOTOOLCHAIN", "GOAMD64", "GOARM64":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "GOOS=linux", "CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off", "GOPROXY=off", "GOTOOLCHAIN=local")
}

func goEnv(ctx context.Context, key string) (string, error) {
	cmd := exec.CommandContext(ctx, goTool(), "env", key)
	cmd.Env = goBuildEnv()
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go env %s: %w", key, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// buildImages assembles every recipe for one architecture.
func buildImages(in *inputs) (map[string]v1.Image, error) {
	mtime := epoch()
	base, err := baseTree(in).layer(mtime)
	if err != nil {
		return nil, fmt.Errorf("test image base layer for %s: %w", in.arch, err)
	}
	p := platform(in.arch)
	imgs := map[string]v1.Image{}
	for _, r := range Recipes() {
		img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
		img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
		img, err = mutate.ConfigFile(img, &v1.ConfigFile{
			Architecture: p.Architecture,
			OS:           p.OS,
			Variant:      p.Variant,
			Created:      v1.Time{Time: mtime},
			Config:       r.Config,
			RootFS:       v1.RootFS{Type: "layers"},
		})
		if err != nil {
			return nil, err
		}
		var adds []mutate.Addendum
		if r.Base {
			adds = append(adds, mutate.Addendum{Layer: base, History: v1.History{
				Created: v1.Time{Time: mtime}, CreatedBy: "ingot testimages: busybox base"}})
		}
		if r.extra != nil {
			t := tree{}
			r.extra(t, in)
			l, err := t.layer(mtime)
			if err != nil {
				return nil, fmt.Errorf("test image %s for %s: %w", r.Name, in.arch, err)
			}
			adds = append(adds, mutate.Addendum{Layer: l, History: v1.History{
				Created: v1.Time{Time: mtime}, CreatedBy: "ingot testimages: " + r.From}})
		}
		if img, err = mutate.Append(img, adds...); err != nil {
			return nil, fmt.Errorf("test image %s for %s: %w", r.Name, in.arch, err)
		}
		imgs[r.Name] = img
	}
	return imgs, nil
}

const refNameAnnotation = "org.opencontainers.image.ref.name"

// storeLayout writes the images as an OCI layout, into a temporary directory renamed into place
// so an interrupted build never looks finished.
func storeLayout(dir string, imgs map[string]v1.Image) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".build-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	p, err := layout.Write(tmp, empty.Index)
	if err != nil {
		return fmt.Errorf("write test images to %s: %w", tmp, err)
	}
	names := make([]string, 0, len(imgs))
	for n := range imgs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if err := p.AppendImage(imgs[n], layout.WithAnnotations(map[string]string{refNameAnnotation: n})); err != nil {
			return fmt.Errorf("write test image %s to %s: %w", n, tmp, err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, serr := os.Stat(filepath.Join(dir, "index.json")); serr == nil {
			return nil // a concurrent build stored the same images
		}
		return fmt.Errorf("store test images in %s: %w", dir, err)
	}
	return nil
}

// staleAfter is how long a superseded cache entry is kept: a test binary built from the previous
// sources may still be reading it.
const staleAfter = time.Hour

// pruneCache removes the architecture's other cache entries once they are stale.
func pruneCache(current string, log *slog.Logger) {
	arch, _, _ := strings.Cut(filepath.Base(current), "-")
	old, _ := filepath.Glob(filepath.Join(filepath.Dir(current), arch+"-*"))
	for _, d := range old {
		fi, err := os.Stat(d)
		if d == current || err != nil || time.Since(fi.ModTime()) < staleAfter {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			log.Warn("remove stale test images", "dir", d, "err", err)
		}
	}
}

func loadLayout(dir string) (map[string]v1.Image, error) {
	if _, err := os.Stat(filepath.Join(dir, "index.json")); err != nil {
		return nil, err
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		return nil, err
	}
	idx, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	imgs := map[string]v1.Image{}
	for _, d := range m.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return nil, err
		}
		imgs[d.Annotations[refNameAnnotation]] = img
	}
	for _, r := range Recipes() {
		if imgs[r.Name] == nil {
			return nil, fmt.Errorf("cached test images in %s lack %s", dir, r.Name)
		}
	}
	return imgs, nil
}
