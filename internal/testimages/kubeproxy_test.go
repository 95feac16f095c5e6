package testimages

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"ingot.dev/ingot/cluster"
	"ingot.dev/ingot/image/bundle"
	"ingot.dev/ingot/image/debpkg"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
)

var (
	kubeProxyOnce sync.Once
	kubeProxyImg  Image
	kubeProxyErr  error
)

// kubeProxyGate skips unless arch's Debian packages and kube-proxy build can be had. One package
// stands for all: they come from one archive, and each fetch runs apt-get (a second each).
func kubeProxyGate(t *testing.T, arch string) {
	t.Helper()
	testgate.Short(t, "building the kube-proxy image")
	f := &debpkg.Fetcher{Cache: cachedir.Default(), Arch: arch}
	if _, err := f.Fetch(t.Context(), "nftables"); err != nil {
		testgate.Skip(t, "Debian's nftables for "+arch+" is not available: "+err.Error())
	}
	if _, err := bundle.KubernetesBuild(arch, "kube-proxy").Run(t.Context(),
		filepath.Join(cachedir.Default(), "tools", "kube-proxy-"+bundle.KubernetesVersion+"-"+arch)); err != nil {
		testgate.Skip(t, "kube-proxy cannot be built for "+arch+": "+err.Error())
	}
}

// kubeProxyHost builds (or loads from the cache) the host-arch kube-proxy image once per test binary.
func kubeProxyHost(t *testing.T) Image {
	t.Helper()
	kubeProxyGate(t, runtime.GOARCH)
	kubeProxyOnce.Do(func() {
		start := time.Now()
		kubeProxyImg, kubeProxyErr = KubeProxy(context.Background(), Options{})
		t.Logf("kube-proxy image in %v", time.Since(start).Round(time.Millisecond))
	})
	if kubeProxyErr != nil {
		t.Fatal(kubeProxyErr)
	}
	return kubeProxyImg
}

// platformImage is idx's image for linux/arch, failing unless idx holds exactly the arches given.
func platformImage(t *testing.T, idx v1.ImageIndex, arch string, arches ...string) v1.Image {
	t.Helper()
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	var img v1.Image
	for _, d := range m.Manifests {
		got = append(got, d.Platform.String())
		if d.Platform.Architecture == arch {
			if img, err = idx.Image(d.Digest); err != nil {
				t.Fatal(err)
			}
		}
	}
	var want []string
	for _, a := range arches {
		p := platform(a)
		want = append(want, p.String())
	}
	if !slices.Equal(got, want) || img == nil {
		t.Fatalf("index platforms %q, want %q", got, want)
	}
	return img
}

type imageFile struct {
	hdr  *tar.Header
	data []byte
}

// imageFiles reads an image's merged file system.
func imageFiles(t *testing.T, img v1.Image) map[string]imageFile {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]imageFile{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimSuffix(h.Name, "/")] = imageFile{h, b}
	}
}

// unlinked lists what ld.so would not find in the image: for every dynamically linked ELF file,
// its interpreter and each DT_NEEDED library searched in Debian's multiarch and plain library
// directories, symlinks followed. It also rejects ELF files built for another machine.
func unlinked(files map[string]imageFile, triplet string, machine elf.Machine) []string {
	resolve := func(p string) bool {
		for range 16 {
			p = strings.TrimPrefix(path.Clean("/"+p), "/")
			f, ok := files[p]
			switch {
			case !ok:
				return false
			case f.hdr.Typeflag == tar.TypeSymlink:
				if path.IsAbs(f.hdr.Linkname) {
					p = f.hdr.Linkname
				} else {
					p = path.Join(path.Dir(p), f.hdr.Linkname)
				}
			case f.hdr.Typeflag == tar.TypeLink:
				p = f.hdr.Linkname
			default:
				return f.hdr.Typeflag == tar.TypeReg && len(f.data) > 0
			}
		}
		return false
	}
	var problems []string
	for _, p := range slices.Sorted(maps.Keys(files)) {
		f := files[p]
		if f.hdr.Typeflag != tar.TypeReg || !bytes.HasPrefix(f.data, []byte(elf.ELFMAG)) {
			continue
		}
		ef, err := elf.NewFile(bytes.NewReader(f.data))
		if err != nil {
			problems = append(problems, fmt.Sprintf("/%s: %v", p, err))
			continue
		}
		if ef.Machine != machine {
			problems = append(problems, fmt.Sprintf("/%s is for %v", p, ef.Machine))
		}
		for _, prog := range ef.Progs {
			if prog.Type == elf.PT_INTERP {
				b, _ := io.ReadAll(prog.Open())
				if interp := string(bytes.TrimRight(b, "\x00")); !resolve(interp) {
					problems = append(problems, fmt.Sprintf("/%s: interpreter %s missing", p, interp))
				}
			}
		}
		libs, err := ef.ImportedLibraries()
		if err != nil {
			problems = append(problems, fmt.Sprintf("/%s: %v", p, err))
		}
	lib:
		for _, l := range libs {
			for _, d := range []string{"lib/" + triplet, "usr/lib/" + triplet, "lib", "usr/lib"} {
				if resolve(d + "/" + l) {
					continue lib
				}
			}
			problems = append(problems, fmt.Sprintf("/%s: %s missing", p, l))
		}
		ef.Close()
	}
	return problems
}

// checkKubeProxyFiles checks one architecture's image: its config, kube-proxy static for arch,
// nft with everything it links, and that the check itself notices a dropped library.
func checkKubeProxyFiles(t *testing.T, img v1.Image, arch string) {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OS != "linux" || cfg.Architecture != arch {
		t.Errorf("config platform %s/%s, want linux/%s", cfg.OS, cfg.Architecture, arch)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/usr/local/bin/kube-proxy"}) || len(cfg.Config.Cmd) != 0 {
		t.Errorf("entrypoint %q cmd %q", cfg.Config.Entrypoint, cfg.Config.Cmd)
	}
	if !slices.Equal(cfg.Config.Env, []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}) {
		t.Errorf("env %q", cfg.Config.Env)
	}

	triplet, machine, err := archABI(arch)
	if err != nil {
		t.Fatal(err)
	}
	files := imageFiles(t, img)
	for _, p := range []string{"usr/local/bin/kube-proxy", "usr/sbin/nft", "etc/protocols", "etc/services"} {
		f, ok := files[p]
		if !ok || f.hdr.Typeflag != tar.TypeReg || len(f.data) == 0 {
			t.Errorf("image lacks /%s", p)
			continue
		}
		if strings.Contains(p, "bin/") && f.hdr.Mode&0o111 != 0o111 {
			t.Errorf("/%s mode %o, not executable", p, f.hdr.Mode)
		}
	}
	if f, ok := files["usr/local/bin/kube-proxy"]; ok {
		ef, err := elf.NewFile(bytes.NewReader(f.data))
		if err != nil {
			t.Fatal(err)
		}
		libs, _ := ef.ImportedLibraries()
		if ef.Machine != machine || len(libs) != 0 || slices.ContainsFunc(ef.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP }) {
			t.Errorf("kube-proxy is %v linking %q, want static %v", ef.Machine, libs, machine)
		}
	}
	if f, ok := files["usr/sbin/nft"]; ok {
		ef, err := elf.NewFile(bytes.NewReader(f.data))
		if err != nil {
			t.Fatal(err)
		}
		libs, _ := ef.ImportedLibraries()
		if !slices.Contains(libs, "libnftables.so.1") {
			t.Errorf("nft links %q, not libnftables.so.1: not Debian's nft?", libs)
		}
	}
	if p := unlinked(files, triplet, machine); len(p) != 0 {
		t.Errorf("libraries missing from the %s image:\n%s", arch, strings.Join(p, "\n"))
	}

	// Drop one library nft reaches only through libnftables (libmnl, whose symlink stays): the
	// check must notice.
	mnl := ""
	for p, f := range files {
		if strings.HasPrefix(path.Base(p), "libmnl.so.0.") && f.hdr.Typeflag == tar.TypeReg {
			mnl = p
		}
	}
	if mnl == "" {
		t.Fatalf("no libmnl.so.0.* in the %s image", arch)
	}
	dropped := maps.Clone(files)
	delete(dropped, mnl)
	if p := unlinked(dropped, triplet, machine); !slices.ContainsFunc(p, func(s string) bool { return strings.HasSuffix(s, ": libmnl.so.0 missing") }) {
		t.Errorf("with /%s dropped, the check found only %q", mnl, p)
	}
}

func TestKubeProxyImage(t *testing.T) {
	kp := kubeProxyHost(t)
	if kp.Ref != cluster.DefaultKubeProxyImage {
		t.Errorf("ref %q, want cluster.DefaultKubeProxyImage %q", kp.Ref, cluster.DefaultKubeProxyImage)
	}
	checkKubeProxyFiles(t, platformImage(t, kp.Index, runtime.GOARCH, runtime.GOARCH), runtime.GOARCH)
}

func TestKubeProxyServeAndPull(t *testing.T) {
	imgs := buildHost(t)
	kp := kubeProxyHost(t)
	addr, stop, err := Serve(t.Context(), append(slices.Clone(imgs), kp))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	repo, id, err := MirrorPath(kp.Ref)
	if err != nil || repo != "kube-proxy" || id != bundle.KubernetesVersion {
		t.Fatalf("MirrorPath(%s) = %s, %s, %v", kp.Ref, repo, id, err)
	}
	r, err := name.ParseReference(addr+"/"+repo+":"+id, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(r, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("pull %s: %v", r, err)
	}
	got, _ := idx.Digest()
	want, _ := kp.Index.Digest()
	if got != want {
		t.Errorf("pulled index %s, built %s", got, want)
	}
	img, err := remote.Image(r, remote.WithContext(t.Context()), remote.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}))
	if err != nil {
		t.Fatalf("pull %s for linux/%s: %v", r, runtime.GOARCH, err)
	}
	files := imageFiles(t, img)
	if f := files["usr/local/bin/kube-proxy"]; f.hdr == nil || len(f.data) < 1<<20 {
		t.Error("pulled image lacks /usr/local/bin/kube-proxy")
	}
	// The critest images are still served beside it.
	if _, err := remote.Index(mustRef(t, addr, "registry.k8s.io/pause:3.9"), remote.WithContext(t.Context())); err != nil {
		t.Errorf("pause beside kube-proxy: %v", err)
	}
}

func mustRef(t *testing.T, addr, ref string) name.Reference {
	t.Helper()
	repo, id, err := MirrorPath(ref)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(addr+"/"+repo+":"+id, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestKubeProxyIsReproducible(t *testing.T) {
	cached := kubeProxyHost(t)
	fresh, err := KubeProxy(t.Context(), Options{NoCache: true})
	if err != nil {
		t.Fatal(err)
	}
	a, _ := cached.Index.Digest()
	b, _ := fresh.Index.Digest()
	if a != b {
		t.Errorf("%s from the cache, %s rebuilt", a, b)
	}
}

// TestKubeProxyBothArches builds the two-platform image and checks the other architecture's half
// the way the host's is checked: arm64 nft with arm64 libraries and loader.
func TestKubeProxyBothArches(t *testing.T) {
	other := "arm64"
	if runtime.GOARCH == "arm64" {
		other = "amd64"
	}
	kubeProxyGate(t, runtime.GOARCH)
	kubeProxyGate(t, other)
	start := time.Now()
	kp, err := KubeProxy(t.Context(), Options{Arches: []string{"amd64", "arm64"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("amd64+arm64 kube-proxy image in %v", time.Since(start).Round(time.Millisecond))
	checkKubeProxyFiles(t, platformImage(t, kp.Index, other, "amd64", "arm64"), other)
}

// TestKubeProxyRuns runs the host-arch image's programs in a chroot of its unpacked file system:
// kube-proxy reports its release, and nft, in a private network namespace, loads and lists the
// kind of table kube-proxy's nftables mode writes, in the JSON kube-proxy reads back.
func TestKubeProxyRuns(t *testing.T) {
	testgate.RequireRoot(t)
	for _, c := range []string{"unshare", "chroot"} {
		testgate.RequireCommand(t, c)
	}
	kp := kubeProxyHost(t)
	root := t.TempDir()
	extract(t, platformImage(t, kp.Index, runtime.GOARCH, runtime.GOARCH), root)

	// Each program runs in the chroot; one private network namespace holds them all, so the
	// table nft loads is there for the listing.
	sh := func(script string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "unshare", "-n", "sh", "-euc", script)
		cmd.Env = append(os.Environ(), "ROOT="+root)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v\n%s", script, err, out)
		}
		return string(out)
	}
	if out := sh(`chroot "$ROOT" /usr/local/bin/kube-proxy --version`); out != "Kubernetes "+bundle.KubernetesVersion+"\n" {
		t.Errorf("kube-proxy --version: %q", out)
	}
	// The nft knftables finds: LookPath("nft") on the image's PATH.
	if out := sh(`PATH=` + kubeProxyPath + ` chroot "$ROOT" nft --version`); !strings.HasPrefix(out, "nftables v1.0.6 ") {
		t.Errorf("nft --version: %q", out)
	}
	// A service map as kube-proxy declares one (inet_proto by name, which nft looks up in
	// /etc/protocols), read back as kube-proxy reads it.
	out := sh(`chroot "$ROOT" /usr/sbin/nft -f - <<'EOF'
add table ip kube-proxy { comment "rules for kube-proxy" ; }
add chain ip kube-proxy service-abc
add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; }
add element ip kube-proxy service-ips { 10.96.0.1 . tcp . 443 : goto service-abc }
EOF
chroot "$ROOT" /usr/sbin/nft --json --terse list table ip kube-proxy
chroot "$ROOT" /usr/sbin/nft --json list map ip kube-proxy service-ips`)
	for _, want := range []string{`"name": "service-ips", "table": "kube-proxy", "type": ["ipv4_addr", "inet_proto", "inet_service"]`,
		`"chain": {"family": "ip", "table": "kube-proxy", "name": "service-abc"`,
		`{"concat": ["10.96.0.1", "tcp", 443]}, {"goto": {"target": "service-abc"}}`} {
		if !strings.Contains(out, want) {
			t.Errorf("nft --json list: output lacks %s:\n%s", want, out)
		}
	}
}
