package testimages

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
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
	"github.com/pelletier/go-toml/v2"

	"ingot.dev/ingot/image/debpkg"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
)

func TestCatalogMatchesRecipes(t *testing.T) {
	recipes := map[string]bool{}
	for _, r := range Recipes() {
		if recipes[r.Name] {
			t.Errorf("recipe %s defined twice", r.Name)
		}
		recipes[r.Name] = true
	}
	used := map[string]bool{}
	paths := map[string]string{} // mirror path → image
	for _, e := range Catalog() {
		repo, id, err := MirrorPath(e.Ref)
		if err != nil {
			t.Error(err)
			continue
		}
		if e.Image == "" {
			if !strings.Contains(e.Ref, "@sha256:") {
				t.Errorf("%s: only digest-pinned references may be unservable", e.Ref)
			}
			continue
		}
		if !recipes[e.Image] {
			t.Errorf("%s: no recipe %q", e.Ref, e.Image)
		}
		used[e.Image] = true
		if prev, ok := paths[repo+":"+id]; ok && prev != e.Image {
			t.Errorf("%s: mirror path %s:%s also serves %s", e.Ref, repo, id, prev)
		}
		paths[repo+":"+id] = e.Image
	}
	for r := range recipes {
		if !used[r] {
			t.Errorf("recipe %s is served under no reference", r)
		}
	}
}

func TestMirrorPath(t *testing.T) {
	for _, tc := range []struct{ ref, repo, id string }{
		{"registry.k8s.io/e2e-test-images/busybox:1.29-2", "e2e-test-images/busybox", "1.29-2"},
		{"gcr.io/k8s-staging-cri-tools/test-image-latest", "k8s-staging-cri-tools/test-image-latest", "latest"},
		{"k8s.gcr.io/pause:3.9", "pause", "3.9"},
		{"busybox", "library/busybox", "latest"},
		{"docker.io/library/nginx:1", "library/nginx", "1"},
		{"public.ecr.aws/docker/library/busybox:1-musl", "docker/library/busybox", "1-musl"},
		{"gcr.io/x/y@sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf", "x/y",
			"sha256:9700f9a2f5bf2c45f2f605a0bd3bce7cf37420ec9d3ed50ac2758413308766bf"},
	} {
		repo, id, err := MirrorPath(tc.ref)
		if err != nil || repo != tc.repo || id != tc.id {
			t.Errorf("MirrorPath(%q) = %q, %q, %v; want %q, %q", tc.ref, repo, id, err, tc.repo, tc.id)
		}
	}
	if _, _, err := MirrorPath("UPPER/case"); err == nil {
		t.Error("MirrorPath accepted an invalid reference")
	}
}

func TestMirrorsTOML(t *testing.T) {
	var cfg struct {
		Plugins map[string]struct {
			Registry struct {
				Mirrors map[string]struct{ Endpoint []string }
			}
		}
	}
	if err := toml.Unmarshal([]byte(MirrorsTOML("127.0.0.1:5000")), &cfg); err != nil {
		t.Fatal(err)
	}
	mirrors := cfg.Plugins["io.containerd.grpc.v1.cri"].Registry.Mirrors
	want := []string{"gcr.io", "k8s.gcr.io", "public.ecr.aws", "registry.k8s.io"}
	var got []string
	for h, m := range mirrors {
		got = append(got, h)
		if !slices.Equal(m.Endpoint, []string{"http://127.0.0.1:5000"}) {
			t.Errorf("mirror %s endpoints = %v", h, m.Endpoint)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("mirrored hosts = %v, want %v", got, want)
	}
}

func TestHostsDir(t *testing.T) {
	dir := t.TempDir()
	if err := WriteHostsDir(dir, "10.0.2.100:5000"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "registry.k8s.io", "hosts.toml"))
	if err != nil {
		t.Fatal(err)
	}
	var h struct {
		Server string
		Host   map[string]struct{ Capabilities []string }
	}
	if err := toml.Unmarshal(b, &h); err != nil {
		t.Fatal(err)
	}
	if h.Server != "https://registry.k8s.io" || !slices.Equal(h.Host["http://10.0.2.100:5000"].Capabilities, []string{"pull", "resolve"}) {
		t.Errorf("hosts.toml = %s", b)
	}
	if got := HostsTOML("index.docker.io", "a:1"); !strings.Contains(got, `server = "https://registry-1.docker.io"`) {
		t.Errorf("Docker Hub hosts.toml = %s", got)
	}
}

func TestLayerTarOrderAndDeterminism(t *testing.T) {
	mk := func() tree {
		tr := tree{}
		tr.file("bin/busybox", 0o755, []byte("bb"))
		tr.hardlink("bin/[", "bin/busybox")
		tr.hardlink("bin/ls", "bin/busybox")
		tr.symlink("lib64/ld.so", "/lib/x/ld.so")
		tr.file("usr/local/bin/nnp", 0o4755, []byte("n"))
		tr.dir("tmp", 0o1777)
		return tr
	}
	a, err := mk().tar(epoch())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := mk().tar(epoch())
	if !bytes.Equal(a, b) {
		t.Error("the same tree gave different tars")
	}
	var names []string
	modes := map[string]int64{}
	tr := tar.NewReader(bytes.NewReader(a))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		modes[h.Name] = h.Mode
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(epoch()) {
			t.Errorf("%s: uid %d gid %d mtime %v", h.Name, h.Uid, h.Gid, h.ModTime)
		}
	}
	want := []string{"bin/", "bin/busybox", "lib64/", "lib64/ld.so", "tmp/", "usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/nnp", "bin/[", "bin/ls"}
	if !slices.Equal(names, want) {
		t.Errorf("tar entries = %q\nwant %q", names, want)
	}
	if modes["usr/local/bin/nnp"] != 0o4755 || modes["tmp/"] != 0o1777 {
		t.Errorf("modes = %v", modes)
	}
	bad := tree{}
	bad.hardlink("bin/ls", "bin/busybox")
	if _, err := bad.tar(epoch()); err == nil {
		t.Error("a hard link to nothing was accepted")
	}
}

var (
	buildOnce sync.Once
	built     []Image
	buildErr  error
)

// buildHost builds (or loads from the cache) the images for the host's architecture once per test
// binary. It skips when Debian's packages cannot be had.
func buildHost(t *testing.T) []Image {
	t.Helper()
	testgate.Short(t, "building the critest images")
	ctx := context.Background()
	f := &debpkg.Fetcher{Cache: cachedir.Default(), Arch: runtime.GOARCH}
	for _, d := range debs {
		if _, err := f.Fetch(ctx, d); err != nil {
			testgate.Skip(t, "Debian package "+d+" is not available: "+err.Error())
		}
	}
	buildOnce.Do(func() {
		start := time.Now()
		built, buildErr = Build(ctx, Options{})
		t.Logf("built test images in %v", time.Since(start).Round(time.Millisecond))
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

func find(t *testing.T, imgs []Image, ref string) Image {
	t.Helper()
	for _, im := range imgs {
		if im.Ref == ref {
			return im
		}
	}
	t.Fatalf("no image %s", ref)
	return Image{}
}

// layerFiles lists the files of an image's merged file system with their tar headers.
func layerFiles(t *testing.T, img v1.Image) map[string]*tar.Header {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	files := map[string]*tar.Header{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		files[strings.TrimSuffix(h.Name, "/")] = h
	}
}

func TestServeAndPull(t *testing.T) {
	imgs := buildHost(t)
	addr, stop, err := Serve(t.Context(), imgs)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()

	host := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	pull := func(ref string) (v1.Image, *v1.ConfigFile, v1.Hash) {
		t.Helper()
		repo, id, err := MirrorPath(ref)
		if err != nil {
			t.Fatal(err)
		}
		r, err := name.ParseReference(addr+"/"+repo+":"+id, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := remote.Index(r, remote.WithContext(t.Context()))
		if err != nil {
			t.Fatalf("pull %s: %v", r, err)
		}
		m, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Manifests) != 1 || m.Manifests[0].Platform == nil || m.Manifests[0].Platform.OS != "linux" ||
			m.Manifests[0].Platform.Architecture != runtime.GOARCH {
			t.Fatalf("%s: index manifests %+v, want one for linux/%s", ref, m.Manifests, runtime.GOARCH)
		}
		img, err := remote.Image(r, remote.WithContext(t.Context()), remote.WithPlatform(host))
		if err != nil {
			t.Fatalf("pull %s for %s: %v", r, host, err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.OS != "linux" || cfg.Architecture != runtime.GOARCH {
			t.Errorf("%s: config platform %s/%s", ref, cfg.OS, cfg.Architecture)
		}
		d, _ := idx.Digest()
		return img, cfg, d
	}

	bb, cfg, _ := pull("registry.k8s.io/e2e-test-images/busybox:1.29-2")
	if !slices.Equal(cfg.Config.Cmd, []string{"sh"}) || cfg.Config.User != "" {
		t.Errorf("busybox config: cmd %q user %q", cfg.Config.Cmd, cfg.Config.User)
	}
	files := layerFiles(t, bb)
	for name, want := range map[string]byte{
		"bin/busybox": tar.TypeReg, "bin/sh": tar.TypeReg, "bin/ipcs": tar.TypeReg,
		"bin/ls": tar.TypeLink, "bin/ipcmk": tar.TypeLink, "bin/pgrep": tar.TypeLink, "bin/ash": tar.TypeLink,
		"bin/pidof": tar.TypeLink, "bin/brctl": tar.TypeLink, "bin/netstat": tar.TypeLink, "bin/top": tar.TypeLink,
		"etc/passwd": tar.TypeReg, "tmp": tar.TypeDir, "lib/" + libTriplet() + "/libc.so.6": tar.TypeReg,
	} {
		h, ok := files[name]
		if !ok {
			t.Errorf("busybox image lacks /%s", name)
			continue
		}
		if h.Typeflag != want {
			t.Errorf("/%s: type %q, want %q", name, h.Typeflag, want)
		}
	}
	if h := files["bin/ls"]; h != nil && h.Linkname != "bin/busybox" {
		t.Errorf("/bin/ls links to %q, want the static busybox", h.Linkname)
	}

	pause, cfg, pauseDigest := pull("registry.k8s.io/pause:3.9")
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/pause"}) || cfg.Config.User != "65535:65535" {
		t.Errorf("pause config: entrypoint %q user %q", cfg.Config.Entrypoint, cfg.Config.User)
	}
	if files := layerFiles(t, pause); len(files) != 1 || files["pause"] == nil {
		t.Errorf("pause image files: %v", files)
	}
	if _, _, d := pull("k8s.gcr.io/pause:3.9"); d != pauseDigest {
		t.Error("pause:3.9 differs between registry.k8s.io and k8s.gcr.io")
	}

	_, cfg, _ = pull("gcr.io/k8s-staging-cri-tools/test-image-user-uid-group")
	if cfg.Config.User != "1003:1004" {
		t.Errorf("test-image-user-uid-group user = %q", cfg.Config.User)
	}
	nginx, cfg, _ := pull("registry.k8s.io/e2e-test-images/nginx:1.14-2")
	if _, ok := cfg.Config.ExposedPorts["80/tcp"]; !ok || cfg.Config.Cmd[0] != "nginx" {
		t.Errorf("nginx config: %+v", cfg.Config)
	}
	if files := layerFiles(t, nginx); files["usr/sbin/nginx"] == nil || files["bin/sh"] == nil {
		t.Error("nginx image lacks /usr/sbin/nginx or /bin/sh")
	}
	nnp, cfg, _ := pull("registry.k8s.io/e2e-test-images/nonewprivs:1.3")
	if h := layerFiles(t, nnp)["usr/local/bin/nnp"]; h == nil || h.Mode&0o4000 == 0 || h.Uid != 0 {
		t.Errorf("nnp is not setuid root: %+v", h)
	}
	if !slices.Equal(cfg.Config.Entrypoint, []string{"/usr/local/bin/nnp"}) {
		t.Errorf("nonewprivs entrypoint %q", cfg.Config.Entrypoint)
	}

	var tags []v1.Hash
	for _, ref := range []string{"test-image-tags:1", "test-image-tags:2", "test-image-tags:3", "test-image-1", "test-image-2"} {
		_, _, d := pull("gcr.io/k8s-staging-cri-tools/" + ref)
		tags = append(tags, d)
	}
	if tags[0] != tags[1] || tags[1] != tags[2] {
		t.Error("test-image-tags:1/2/3 are not one image")
	}
	if tags[3] == tags[4] || tags[3] == tags[0] {
		t.Error("test-image-1 and test-image-2 are not different images")
	}
}

func TestBuildIsReproducible(t *testing.T) {
	cached := buildHost(t)
	fresh, err := Build(context.Background(), Options{NoCache: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(fresh) != len(cached) {
		t.Fatalf("%d images, then %d", len(cached), len(fresh))
	}
	for i := range fresh {
		a, _ := cached[i].Index.Digest()
		b, _ := fresh[i].Index.Digest()
		if a != b {
			t.Errorf("%s: %s from the cache, %s rebuilt", fresh[i].Ref, a, b)
		}
	}
}

// TestBuildBothArches builds the multi-platform set and checks the arm64 half is arm64 throughout,
// down to the dynamic shell's interpreter.
func TestBuildBothArches(t *testing.T) {
	buildHost(t) // gates, and fetches the host's packages
	f := &debpkg.Fetcher{Cache: cachedir.Default(), Arch: "arm64"}
	if runtime.GOARCH != "arm64" {
		f.Arch = "amd64"
	}
	other := f.Arch
	for _, d := range debs {
		if _, err := f.Fetch(t.Context(), d); err != nil {
			testgate.Skip(t, "Debian package "+d+" for "+other+" is not available: "+err.Error())
		}
	}
	imgs, err := Build(t.Context(), Options{Arches: []string{"amd64", "arm64"}})
	if err != nil {
		t.Fatal(err)
	}
	idx := find(t, imgs, "registry.k8s.io/e2e-test-images/busybox:1.29-2").Index
	m, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) != 2 || m.Manifests[0].Platform.String() != "linux/amd64" || m.Manifests[1].Platform.String() != "linux/arm64/v8" {
		t.Fatalf("platforms: %+v", m.Manifests)
	}
	img, err := idx.Image(m.Manifests[1].Digest)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil || cfg.Architecture != "arm64" || cfg.Variant != "v8" {
		t.Fatalf("arm64 config: %+v, %v", cfg, err)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	machine := map[string]elf.Machine{}
	links := map[string]string{}
	interp := ""
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		links[h.Name] = h.Linkname
		if h.Typeflag != tar.TypeReg || !strings.HasPrefix(h.Name, "bin/") {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		ef, err := elf.NewFile(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
		machine[h.Name] = ef.Machine
		for _, p := range ef.Progs {
			if p.Type == elf.PT_INTERP && h.Name == "bin/sh" {
				ib, _ := io.ReadAll(p.Open())
				interp = strings.TrimRight(string(ib), "\x00")
			}
		}
	}
	for _, bin := range []string{"bin/busybox", "bin/sh", "bin/ipcs"} {
		if machine[bin] != elf.EM_AARCH64 {
			t.Errorf("arm64 image: %s is %v", bin, machine[bin])
		}
	}
	if interp != "/lib/ld-linux-aarch64.so.1" {
		t.Errorf("arm64 /bin/sh interpreter %q", interp)
	}
	if _, ok := links[strings.TrimPrefix(interp, "/")]; !ok {
		t.Errorf("arm64 image lacks the interpreter %s", interp)
	}
}

func TestServeRejectsConflicts(t *testing.T) {
	imgs := buildHost(t)
	a := find(t, imgs, "registry.k8s.io/pause:3.9")
	b := find(t, imgs, "registry.k8s.io/e2e-test-images/busybox:1.29-2")
	_, _, err := Serve(t.Context(), []Image{a, {Ref: "k8s.gcr.io/pause:3.9", Index: b.Index}})
	if err == nil || !strings.Contains(err.Error(), "different image") {
		t.Errorf("Serve of two images at one path: %v", err)
	}
}

func libTriplet() string {
	if runtime.GOARCH == "arm64" {
		return "aarch64-linux-gnu"
	}
	return "x86_64-linux-gnu"
}

// extract unpacks an image's file system into dir, hard links, symlinks and modes included.
func extract(t *testing.T, img v1.Image, dir string) {
	t.Helper()
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(p, os.FileMode(h.Mode&0o777)|os.ModeSticky*os.FileMode(h.Mode>>9&1))
		case tar.TypeReg:
			var f *os.File
			if f, err = os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o700); err == nil {
				_, err = io.Copy(f, tr)
				f.Close()
			}
			if err == nil {
				err = os.Chmod(p, os.FileMode(h.Mode&0o777)|os.ModeSetuid*os.FileMode(h.Mode>>11&1))
			}
		case tar.TypeSymlink:
			err = os.Symlink(h.Linkname, p)
		case tar.TypeLink:
			err = os.Link(filepath.Join(dir, h.Linkname), p)
		}
		if err != nil {
			t.Fatalf("extract %s: %v", h.Name, err)
		}
	}
}

// inRoot runs script with root's /bin/sh in a chroot, inside new mount and PID namespaces (plus
// those in flags, e.g. "-i -n") with /proc and /dev mounted, and returns stdout, stderr and the
// exit code.
func inRoot(t *testing.T, root, flags, script string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", "exec unshare -m -p -f "+flags+
		` sh -c 'mount -t proc proc "$ROOT/proc" && mount --rbind /dev "$ROOT/dev" && exec chroot "$ROOT" /bin/sh -c "$SCRIPT"'`)
	cmd.Env = append(os.Environ(), "ROOT="+root, "SCRIPT="+script)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.WaitDelay = 5 * time.Second // a stray grandchild must not hold the pipes open
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// TestImagesBehaveAsCritestExpects runs the host-arch images' programs in a chroot inside private
// namespaces, checking what critest's specs check.
func TestImagesBehaveAsCritestExpects(t *testing.T) {
	testgate.RequireRoot(t)
	for _, c := range []string{"unshare", "chroot", "mount"} {
		testgate.RequireCommand(t, c)
	}
	imgs := buildHost(t)
	platform := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	rootfs := func(ref string) string {
		idx := find(t, imgs, ref).Index
		m, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range m.Manifests {
			if d.Platform.Satisfies(platform) {
				img, err := idx.Image(d.Digest)
				if err != nil {
					t.Fatal(err)
				}
				dir := t.TempDir()
				extract(t, img, dir)
				return dir
			}
		}
		t.Fatalf("%s has no %s image", ref, platform)
		return ""
	}

	bb := rootfs("registry.k8s.io/e2e-test-images/busybox:1.29-2")
	t.Run("dynamic sh runs", func(t *testing.T) {
		out, stderr, code := inRoot(t, bb, "", "echo $(id -u):$(id -nu)")
		if code != 0 || out != "0:root\n" {
			t.Errorf("sh: %q %q exit %d", out, stderr, code)
		}
	})
	t.Run("MaskedPaths /bin/ls", func(t *testing.T) {
		// What runc does for a masked file: bind /dev/null over it.
		_, stderr, code := inRoot(t, bb, "", "mount --bind /dev/null /bin/ls && /bin/sh -c ls")
		if code == 0 || stderr != "/bin/sh: ls: Permission denied\n" {
			t.Errorf("masked ls: stderr %q exit %d", stderr, code)
		}
	})
	t.Run("ipcmk and ipcs", func(t *testing.T) {
		out, stderr, code := inRoot(t, bb, "-i", "ipcs -m && ipcmk -M 1048576 && ipcs -m")
		empty, rest, _ := strings.Cut(out, "Shared memory id: ")
		if code != 0 || strings.ContainsAny(empty, "0123456789") || !strings.Contains(rest, "1048576") ||
			!strings.Contains(empty, "------ Shared Memory Segments --------") {
			t.Errorf("ipcmk/ipcs: %q %q exit %d", out, stderr, code)
		}
	})
	t.Run("pgrep", func(t *testing.T) {
		out, stderr, code := inRoot(t, bb, "", "sleep 30 & sleep 0.2; pgrep sleep; pgrep nosuchprocess || echo none")
		if code != 0 || !strings.HasSuffix(out, "\nnone\n") || len(strings.Fields(out)) != 2 {
			t.Errorf("pgrep: %q %q exit %d", out, stderr, code)
		}
	})

	ng := rootfs("registry.k8s.io/e2e-test-images/nginx:1.14-2")
	t.Run("nginx", func(t *testing.T) {
		out, stderr, code := inRoot(t, ng, "-n", `ip link set lo up; nginx -g "daemon off;" &
while [ ! -f /var/run/nginx.pid ]; do sleep 0.1; done
pid=$(cat /var/run/nginx.pid)
tr "\0" " " < /proc/$pid/cmdline; echo
[ "$(pidof nginx)" = "$pid" ] && echo pidof-ok
wget -q -O - http://127.0.0.1:80/ | grep -o "Welcome to nginx"
kill $pid; wait`)
		for _, want := range []string{"nginx: master process nginx -g daemon off;", "pidof-ok", "Welcome to nginx"} {
			if !strings.Contains(out, want) {
				t.Errorf("nginx: output lacks %q: %q %q exit %d", want, out, stderr, code)
			}
		}
		if code != 0 {
			t.Errorf("nginx did not stop cleanly on SIGTERM: exit %d, %q", code, stderr)
		}
	})
}
