package testimages

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"ingot.dev/ingot/image/bundle"
	"ingot.dev/ingot/image/debpkg"
	"ingot.dev/ingot/internal/cachedir"
)

// KubeProxyRef is the reference KubeProxy's image is served under: the image `ingot cluster`
// runs kube-proxy from (cluster.DefaultKubeProxyImage), at the release the workers' kubelet is.
const KubeProxyRef = "registry.k8s.io/kube-proxy:" + bundle.KubernetesVersion

// kubeProxyPath is PATH in the image: kube-proxy's nftables backend (sigs.k8s.io/knftables)
// finds nft by exec.LookPath("nft").
const kubeProxyPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// kubeProxyDebs are the Debian packages nft comes from: nftables, and the closure of its Depends
// (dpkg-deb -f PKG.deb Depends, level by level, bookworm). Only the files nft's ELF dependencies
// reach are shipped; the list only says where to look, so a library missing from it fails the
// build naming the library. netbase gives /etc/protocols and /etc/services: without them nft
// still parses "tcp" but lists it back as 6, and kube-proxy, which reads its maps back
// (knftables ListElements) and compares keys as strings, would take its own elements for stale
// ones and delete them.
var kubeProxyDebs = []string{
	"nftables", "libnftables1", "libmnl0", "libnftnl11", "libjansson4", "libgmp10", "libxtables12",
	"libedit2", "libbsd0", "libmd0", "libtinfo6", "libc6", "netbase",
}

// KubeProxy builds the image `ingot cluster` workers run kube-proxy from, served under
// KubeProxyRef, for opts.Arches: an OCI index with one image per architecture. Each holds
//
//	/usr/local/bin/kube-proxy   built from k8s.io/kubernetes at bundle.KubernetesVersion, static
//	/usr/sbin/nft               Debian bookworm's nftables, with its ELF interpreter and every
//	                            library its DT_NEEDED entries reach, where Debian puts them
//	/etc/protocols, /etc/services  Debian's netbase
//
// nft is there because kube-proxy's nftables mode programs the kernel by running `nft -f -`
// (sigs.k8s.io/knftables), not over netlink itself; it needs nft v1.0.1 or later, and bookworm
// has 1.0.6. Nothing else is executed in that mode: conntrack entries are cleared over netlink,
// and the start-up clean-up of iptables and IPVS rules is skipped when iptables and modprobe are
// absent. The entrypoint is /usr/local/bin/kube-proxy; the pod gives the flags.
//
// Images are cached per architecture as an OCI layout under
// Cache/testimages/kube-proxy-<arch>-<hash>, the hash covering the kube-proxy binary, the Debian
// packages and this package's sources: a 79 MB kube-proxy takes seconds to compress, and a layout
// serves its layers as files. Building kube-proxy itself for an architecture the tools cache
// lacks takes minutes.
func KubeProxy(ctx context.Context, opts Options) (Image, error) {
	if len(opts.Arches) == 0 {
		opts.Arches = []string{hostArch()}
	}
	if opts.Cache == "" {
		opts.Cache = cachedir.Default()
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, arch := range opts.Arches {
		img, err := kubeProxyArch(ctx, opts, arch)
		if err != nil {
			return Image{}, err
		}
		p := platform(arch)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p}})
	}
	return Image{Ref: KubeProxyRef, Index: idx}, nil
}

func kubeProxyArch(ctx context.Context, opts Options, arch string) (v1.Image, error) {
	triplet, machine, err := archABI(arch)
	if err != nil {
		return nil, fmt.Errorf("kube-proxy image for %s: %w", arch, err)
	}
	bins, err := bundle.KubernetesBuild(arch, "kube-proxy").Run(ctx,
		filepath.Join(opts.Cache, "tools", "kube-proxy-"+bundle.KubernetesVersion+"-"+arch))
	if err != nil {
		return nil, fmt.Errorf("kube-proxy image for %s: %w", arch, err)
	}
	kubeProxy, err := os.ReadFile(bins[0])
	if err != nil {
		return nil, fmt.Errorf("kube-proxy image for %s: %w", arch, err)
	}

	f := &debpkg.Fetcher{Cache: opts.Cache, Arch: arch, Log: opts.Log}
	h := sha256.New()
	fmt.Fprintf(h, "ingot testimages kube-proxy\narch %s\nkube-proxy %x\n", arch, sha256.Sum256(kubeProxy))
	var dirs []string
	for _, name := range kubeProxyDebs {
		p, err := f.Fetch(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("kube-proxy image for %s: %w", arch, err)
		}
		fmt.Fprintf(h, "deb %s %s %s\n", p.Name, p.Version, p.SHA256)
		d, err := f.Unpack(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("kube-proxy image for %s: %w", arch, err)
		}
		dirs = append(dirs, d)
	}
	fmt.Fprintf(h, "epoch %d\n", epoch().Unix())
	if err := hashSources(h); err != nil {
		return nil, err
	}
	dir := filepath.Join(opts.Cache, "testimages", "kube-proxy-"+arch+"-"+hex.EncodeToString(h.Sum(nil))[:20])
	log := opts.Log.With("arch", arch, "cache", dir)
	if !opts.NoCache {
		img, err := loadKubeProxy(dir)
		if err == nil {
			log.Debug("kube-proxy image from cache")
			return img, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("cached kube-proxy image unreadable, rebuilding", "err", err)
		}
	}

	start := time.Now()
	root, err := newSysroot(dirs)
	if err != nil {
		return nil, fmt.Errorf("kube-proxy image for %s: %w", arch, err)
	}
	nft := tree{}
	if err := root.copyLinked(nft, "usr/sbin/nft", triplet, machine); err != nil {
		return nil, fmt.Errorf("kube-proxy image for %s: %w", arch, err)
	}
	for _, p := range []string{"etc/protocols", "etc/services"} {
		if _, err := root.copy(nft, p); err != nil {
			return nil, fmt.Errorf("kube-proxy image for %s: %w", arch, err)
		}
	}
	nft.dir("tmp", 0o1777)
	kp := tree{}
	kp.file("usr/local/bin/kube-proxy", 0o755, kubeProxy)

	img, err := kubeProxyImage(arch, nft, kp)
	if err != nil || opts.NoCache {
		return img, err
	}
	if err := storeLayout(dir, map[string]v1.Image{"kube-proxy": img}); err != nil {
		return nil, err
	}
	log.Info("built kube-proxy image", "took", time.Since(start).Round(time.Millisecond))
	pruneKubeProxy(dir, arch, log)
	return loadKubeProxy(dir)
}

// archABI is where Debian puts arch's libraries and the ELF machine its programs are for.
func archABI(arch string) (triplet string, machine elf.Machine, err error) {
	switch arch {
	case "amd64":
		return "x86_64-linux-gnu", elf.EM_X86_64, nil
	case "arm64":
		return "aarch64-linux-gnu", elf.EM_AARCH64, nil
	}
	return "", 0, fmt.Errorf("only amd64 and arm64 are supported")
}

func kubeProxyImage(arch string, nft, kp tree) (v1.Image, error) {
	mtime := epoch()
	p := platform(arch)
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.ConfigFile(img, &v1.ConfigFile{
		Architecture: p.Architecture,
		OS:           p.OS,
		Variant:      p.Variant,
		Created:      v1.Time{Time: mtime},
		Config: v1.Config{
			Env:        []string{"PATH=" + kubeProxyPath},
			Entrypoint: []string{"/usr/local/bin/kube-proxy"},
		},
		RootFS: v1.RootFS{Type: "layers"},
	})
	if err != nil {
		return nil, err
	}
	// Two layers: nft changes with Debian's point releases, kube-proxy with Kubernetes'.
	var adds []mutate.Addendum
	for _, l := range []struct {
		t  tree
		by string
	}{{nft, "ingot testimages: Debian bookworm nftables (nft and its libraries), netbase"},
		{kp, "ingot testimages: kube-proxy " + bundle.KubernetesVersion}} {
		layer, err := l.t.layer(mtime)
		if err != nil {
			return nil, fmt.Errorf("kube-proxy image for %s: %w", arch, err)
		}
		adds = append(adds, mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: mtime}, CreatedBy: l.by}})
	}
	if img, err = mutate.Append(img, adds...); err != nil {
		return nil, fmt.Errorf("kube-proxy image for %s: %w", arch, err)
	}
	return img, nil
}

func loadKubeProxy(dir string) (v1.Image, error) {
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
	if len(m.Manifests) != 1 {
		return nil, fmt.Errorf("cached kube-proxy image %s: %d manifests, want 1", dir, len(m.Manifests))
	}
	return idx.Image(m.Manifests[0].Digest)
}

// pruneKubeProxy removes arch's other kube-proxy images once they are stale (see staleAfter).
func pruneKubeProxy(current, arch string, log *slog.Logger) {
	old, _ := filepath.Glob(filepath.Join(filepath.Dir(current), "kube-proxy-"+arch+"-*"))
	for _, d := range old {
		fi, err := os.Stat(d)
		if d == current || err != nil || time.Since(fi.ModTime()) < staleAfter {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			log.Warn("remove stale kube-proxy image", "dir", d, "err", err)
		}
	}
}

// sysroot is unpacked Debian packages seen as one file system, as if installed together: each
// path relative to the root maps to the package directory that holds it.
type sysroot map[string]string

func newSysroot(dirs []string) (sysroot, error) {
	s := sysroot{}
	for _, d := range dirs {
		err := filepath.WalkDir(d, func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			rel, err := filepath.Rel(d, p)
			if err != nil {
				return err
			}
			rel = filepath.ToSlash(rel)
			if prev, ok := s[rel]; ok {
				return fmt.Errorf("/%s is in both %s and %s", rel, filepath.Base(prev), filepath.Base(d))
			}
			s[rel] = d
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read unpacked package %s: %w", d, err)
		}
	}
	return s, nil
}

// copy adds rel to t, and, when it is a symlink, what it points at, until a regular file, whose
// path it returns.
func (s sysroot) copy(t tree, rel string) (string, error) {
	start := rel
	for range 16 {
		rel = clean(rel)
		d, ok := s[rel]
		if !ok {
			return "", fmt.Errorf("/%s (for /%s) is in none of the packages", rel, start)
		}
		if err := t.copyFrom(d, rel, rel, 0); err != nil {
			return "", err
		}
		n := t[rel]
		if n.typ != tar.TypeSymlink {
			return rel, nil
		}
		if path.IsAbs(n.link) {
			rel = n.link
		} else {
			rel = path.Join(path.Dir(rel), n.link)
		}
	}
	return "", fmt.Errorf("/%s: too many levels of symbolic links", start)
}

// libDirs are where Debian's ld.so looks for a library without an ld.so.cache, the image having
// none: the multiarch directories first.
func libDirs(triplet string) []string {
	return []string{"lib/" + triplet, "usr/lib/" + triplet, "lib", "usr/lib"}
}

// copyLinked adds the ELF program prog to t with its interpreter and every library it needs,
// transitively, found the way ld.so would find them, symlinks included. A library in none of
// the packages fails the copy naming it and who needs it.
func (s sysroot) copyLinked(t tree, prog, triplet string, machine elf.Machine) error {
	queue := []string{prog}
	done := map[string]bool{}
	for len(queue) > 0 {
		rel := queue[0]
		queue = queue[1:]
		if done[rel] {
			continue
		}
		done[rel] = true
		file, err := s.copy(t, rel)
		if err != nil {
			return err
		}
		interp, libs, err := elfDeps(t[file].data, machine)
		if err != nil {
			return fmt.Errorf("/%s: %w", file, err)
		}
		if interp != "" {
			queue = append(queue, clean(interp))
		}
	lib:
		for _, l := range libs {
			for _, d := range libDirs(triplet) {
				if _, ok := s[d+"/"+l]; ok {
					queue = append(queue, d+"/"+l)
					continue lib
				}
			}
			return fmt.Errorf("/%s needs %s, which none of the Debian packages %s has in %s",
				file, l, strings.Join(kubeProxyDebs, ", "), strings.Join(libDirs(triplet), ", "))
		}
	}
	return nil
}

// elfDeps reads an ELF file's interpreter (PT_INTERP) and needed libraries (DT_NEEDED), checking
// it is built for machine.
func elfDeps(b []byte, machine elf.Machine) (interp string, libs []string, err error) {
	ef, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return "", nil, err
	}
	defer ef.Close()
	if ef.Machine != machine {
		return "", nil, fmt.Errorf("built for %v, not %v", ef.Machine, machine)
	}
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			ib, err := io.ReadAll(p.Open())
			if err != nil {
				return "", nil, fmt.Errorf("read interpreter: %w", err)
			}
			interp = string(bytes.TrimRight(ib, "\x00"))
		}
	}
	if libs, err = ef.ImportedLibraries(); err != nil {
		return "", nil, fmt.Errorf("read needed libraries: %w", err)
	}
	return interp, libs, nil
}
