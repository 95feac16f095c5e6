package vmtest

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"ingot.dev/ingot/image/debpkg"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/critest"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/internal/testimages"
	"ingot.dev/ingot/profiles"
	"ingot.dev/ingot/qemu"
)

// The guest's view of the host: QEMU's guestfwd rules send these addresses to the test.
const (
	guestRegistry = "10.0.2.100:5000" // the test registry (internal/testimages)
	guestFiles    = "10.0.2.100:5001" // files for the guest (GET) and from it (POST)
)

// criSocket is the node's own runtime, as the dev image starts it.
const criSocket = "unix:///run/ingot/ingot.sock"

// smokeFocus is critest's smoke subset: runtime info, pod and container lifecycle, image pull and
// exec (ExecSync and the streaming Exec).
const smokeFocus = `Runtime info|basic operations on PodSandbox|basic operations on container|` +
	`public image with(out)? tag should be pulled|exec with tty=false and stdin=false`

// TestCritestInVM runs critest v1.37 inside the dev VM against the node's own runtime at
// /run/ingot/ingot.sock: critest, ipcmk (the HostIpc specs run it on the node) and the test
// images reach the guest through guestfwd rules, and the guest posts the report back. Every
// failing spec fails the test. INGOT_CRITEST_VM=full (make critest-vm) runs the whole suite on
// amd64 and the smoke subset on arm64; otherwise (make test) the smoke subset on amd64 only.
// INGOT_CRITEST_FOCUS, when set, is the ginkgo focus of every run instead.
func TestCritestInVM(t *testing.T) {
	testgate.Short(t, "VM boots")
	full := os.Getenv("INGOT_CRITEST_VM") == "full"
	runs := []struct{ arch, focus string }{{"amd64", smokeFocus}}
	if full {
		runs = []struct{ arch, focus string }{{"amd64", ""}, {"arm64", smokeFocus}}
	}
	if f := os.Getenv("INGOT_CRITEST_FOCUS"); f != "" {
		for i := range runs {
			runs[i].focus = f
		}
	}
	for _, r := range runs {
		t.Run(r.arch, func(t *testing.T) { testCritestInVM(t, r.arch, r.focus) })
	}
}

func testCritestInVM(t *testing.T, archName, focus string) {
	RequireVM(t, archName)
	ctx := context.Background()
	start := time.Now()
	bin, err := critest.BuildCritest(ctx, cachedir.Default(), archName)
	if err != nil {
		t.Fatal(err)
	}
	imgs, err := testimages.Build(ctx, testimages.Options{Arches: []string{archName}})
	if err != nil {
		testgate.Skip(t, "cannot build the test images: "+err.Error())
	}
	ipcmk, err := imageFile(imgs, "registry.k8s.io/e2e-test-images/busybox:1.29-2", archName, "bin/ipcmk")
	if err != nil {
		t.Fatal(err)
	}
	logs := os.Getenv("INGOT_CRITEST_LOGS")
	if logs == "" {
		logs = filepath.Join(os.TempDir(), "ingot-critest-vm-"+archName)
	}
	os.RemoveAll(logs)
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	ipcmkPath := filepath.Join(t.TempDir(), "ipcmk")
	if err := os.WriteFile(ipcmkPath, ipcmk, 0o755); err != nil {
		t.Fatal(err)
	}
	aa := appArmorTools(t, archName)
	files := serveFiles(t, map[string]string{"critest": bin, "ipcmk": ipcmkPath, "apparmor.tar.gz": aa}, logs)

	profile := filepath.Join(t.TempDir(), "critest-dev.toml")
	if err := os.WriteFile(profile, devWithMirrors(t), 0o644); err != nil {
		t.Fatal(err)
	}
	img := Image(t, profile, archName)
	vm := BootWith(t, qemu.Config{Image: img, Boot: qemu.BootDirect, Memory: 2048,
		GuestFwd: []string{registryFwd(t, imgs, guestRegistry), relayFwd(t, guestFiles, files)}})
	vm.WaitReady(bootTimeout)
	vm.Prompt(shellTimeout)
	t.Logf("%s: built and booted in %s", archName, time.Since(start).Round(time.Second))

	const fetch = 5 * time.Minute
	vm.MustShell("mkdir -p /tmp/bin && cd /tmp", shellTimeout)
	for _, f := range []string{"critest", "ipcmk"} {
		vm.MustShell(fmt.Sprintf("wget -q -O /tmp/bin/%s http://%s/%s && chmod 755 /tmp/bin/%s", f, guestFiles, f, f), fetch)
	}
	// critest's AppArmor specs load their profiles with `sudo apparmor_parser -r -W FILE` on the
	// node, which has neither: Debian's parser runs from /tmp/aa with its own ld.so and libc,
	// its includes from /tmp/aa/etc/apparmor.d and Debian's parser.conf (policy features) moved
	// there too, and sudo is only exec (the shell is root).
	// apparmor_parser and the runtime's check of loaded profiles need securityfs; init mounts it
	// (the guard below only matters for an image from before it did).
	vm.MustShell(fmt.Sprintf("mkdir -p /tmp/aa && wget -q -O - http://%s/apparmor.tar.gz | tar -xzf - -C /tmp/aa", guestFiles), fetch)
	vm.MustShell(`printf '#!/bin/sh\nexec "$@"\n' >/tmp/bin/sudo && `+
		`printf '#!/bin/sh\nexec /tmp/aa/lib/ld.so --library-path /tmp/aa/lib /tmp/aa/sbin/apparmor_parser --base /tmp/aa/etc/apparmor.d --config-file /tmp/aa/parser.conf "$@"\n' >/tmp/bin/apparmor_parser && `+
		`echo policy-features=/tmp/aa/usr/share/apparmor-features/features >/tmp/aa/parser.conf && `+
		`chmod 755 /tmp/bin/sudo /tmp/bin/apparmor_parser && `+
		`{ grep -q ' /sys/kernel/security ' /proc/mounts || mount -t securityfs securityfs /sys/kernel/security; }`, shellTimeout)
	var extra []string
	if focus != "" {
		extra = []string{"-ginkgo.focus=" + focus}
	}
	args := append([]string{"-runtime-endpoint", criSocket, "-image-endpoint", criSocket}, critest.Args("/tmp/report.json", false, extra)...)
	run := time.Now()
	// The report, not critest's exit status, says how the specs went; a run without one broke.
	vm.Shell("PATH=/tmp/bin:$PATH /tmp/bin/critest "+shellQuote(args)+" >/tmp/critest.log 2>&1", 90*time.Minute)
	took := time.Since(run)
	vm.Shell("ingot-node logs runtime >/tmp/daemon.log 2>&1", shellTimeout)
	for _, f := range []string{"critest.log", "daemon.log", "report.json"} {
		vm.Shell(fmt.Sprintf("wget -q -O /dev/null --post-file=/tmp/%s http://%s/%s", f, guestFiles, f), fetch)
	}
	sum, err := critest.ReadReport(filepath.Join(logs, "report.json"))
	if err != nil {
		t.Fatalf("%v; critest's output is in %s", err, logs)
	}
	t.Logf("%s VM: %s (critest ran %s; report, critest.log and daemon.log in %s)", archName, sum, took.Round(time.Second), logs)
	for _, f := range sum.Failures {
		t.Errorf("FAILED %s\n    %s\n    at %s", f.Spec, firstLine(f.Message), f.Where)
	}
	if sum.Passed == 0 {
		t.Errorf("no spec passed: %s", sum)
	}
	vm.PowerOff(archName, qemu.BootDirect)
	vm.WaitExit(powerTimeout)
	vm.AssertCleanConsole()
}

// devWithMirrors is the built-in dev profile with the test registry, as the guest reaches it,
// as the mirror of every registry critest pulls from, and a larger state partition for the
// images it pulls.
func devWithMirrors(t testing.TB) []byte {
	t.Helper()
	_, raw, err := profiles.Builtin("dev")
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	for old, repl := range map[string]string{
		"\nconfig = \"\"\n": "\nconfig = '''\nversion = 2\n\n" + testimages.MirrorsTOML(guestRegistry) + "'''\n",
		"state_mib = 256":   "state_mib = 1024",
	} {
		if !strings.Contains(s, old) {
			t.Fatalf("the dev profile no longer has %q", old)
		}
		s = strings.Replace(s, old, repl, 1)
	}
	return []byte(s)
}

// appArmorTools writes a tar.gz of Debian's apparmor_parser for arch (sbin/), its
// etc/apparmor.d and the policy features it compiles for, and the ld.so (as lib/ld.so) and libc.so.6 it runs with.
func appArmorTools(t testing.TB, archName string) string {
	t.Helper()
	ctx := context.Background()
	f := &debpkg.Fetcher{Cache: cachedir.Default(), Arch: archName}
	unpack := func(name string) string {
		p, err := f.Fetch(ctx, name)
		if err != nil {
			testgate.Skip(t, "cannot fetch "+name+" for critest's AppArmor specs: "+err.Error())
		}
		dir, err := f.Unpack(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		return dir
	}
	aa, libc := unpack("apparmor"), unpack("libc6")
	lds, _ := filepath.Glob(filepath.Join(libc, "lib", "*-linux-gnu", "ld-linux-*.so.*"))
	libcs, _ := filepath.Glob(filepath.Join(libc, "lib", "*-linux-gnu", "libc.so.6"))
	if len(lds) != 1 || len(libcs) != 1 {
		t.Fatalf("libc6 for %s: ld.so %q, libc.so.6 %q", archName, lds, libcs)
	}
	out := filepath.Join(t.TempDir(), "apparmor.tar.gz")
	w, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	add := func(name, src string) {
		fi, err := os.Lstat(src)
		if err != nil {
			t.Fatal(err)
		}
		link := ""
		if fi.Mode()&os.ModeSymlink != 0 {
			if link, err = os.Readlink(src); err != nil {
				t.Fatal(err)
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			t.Fatal(err)
		}
		h.Name = name
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if fi.Mode().IsRegular() {
			data, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			tw.Write(data)
		}
	}
	add("sbin/apparmor_parser", filepath.Join(aa, "sbin/apparmor_parser"))
	add("lib/ld.so", lds[0])
	add("lib/libc.so.6", libcs[0])
	for _, d := range []string{"etc/apparmor.d", "usr/share/apparmor-features"} {
		err := filepath.WalkDir(filepath.Join(aa, d), func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(aa, p)
			add(rel, p)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := errors.Join(tw.Close(), gz.Close(), w.Close()); err != nil {
		t.Fatal(err)
	}
	return out
}

// registryFwd serves imgs from an in-process registry and returns the guestfwd rule that sends
// the guest's connections to guestAddr there.
func registryFwd(t testing.TB, imgs []testimages.Image, guestAddr string) string {
	t.Helper()
	addr, stop, err := testimages.Serve(context.Background(), imgs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return relayFwd(t, guestAddr, addr)
}

// relayFwd is a guestfwd rule that relays each guest connection to guestAddr to hostAddr on the
// host's loopback, through the host's busybox nc from the cache.
func relayFwd(t testing.TB, guestAddr, hostAddr string) string {
	t.Helper()
	f := &debpkg.Fetcher{Cache: cachedir.Default(), Arch: hostArch()}
	p, err := f.Fetch(context.Background(), "busybox-static")
	if err != nil {
		testgate.Skip(t, "cannot fetch busybox-static for the relay: "+err.Error())
	}
	root, err := f.Unpack(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(hostAddr, ":")
	return fmt.Sprintf("tcp:%s-cmd:%s nc %s %s", guestAddr, filepath.Join(root, "bin/busybox"), host, port)
}

// serveFiles serves the files of get (by name) on the host's loopback and stores what the guest
// POSTs to /NAME as dir/NAME; it returns its address.
func serveFiles(t testing.TB, get map[string]string, dir string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := path.Base(r.URL.Path)
		switch r.Method {
		case http.MethodGet:
			p, ok := get[name]
			if !ok {
				http.NotFound(w, r)
				return
			}
			http.ServeFile(w, r, p)
		case http.MethodPost:
			f, err := os.Create(filepath.Join(dir, name))
			if err == nil {
				_, err = io.Copy(f, r.Body)
				err = errors.Join(err, f.Close())
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
			}
		default:
			http.Error(w, "GET or POST", http.StatusMethodNotAllowed)
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// imageFile reads one file from the image ref for arch among imgs, following a hard link.
func imageFile(imgs []testimages.Image, ref, archName, name string) ([]byte, error) {
	for _, im := range imgs {
		if im.Ref != ref {
			continue
		}
		m, err := im.Index.IndexManifest()
		if err != nil {
			return nil, err
		}
		for _, d := range m.Manifests {
			if d.Platform == nil || d.Platform.Architecture != archName {
				continue
			}
			img, err := im.Index.Image(d.Digest)
			if err != nil {
				return nil, err
			}
			return tarFile(img, name)
		}
		return nil, fmt.Errorf("test image %s has no %s image", ref, archName)
	}
	return nil, fmt.Errorf("no test image %s", ref)
}

func tarFile(img v1.Image, name string) ([]byte, error) {
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	seen := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("%s in the image: %w", name, err)
		}
		p := strings.TrimPrefix(path.Clean(h.Name), "/")
		switch h.Typeflag {
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			if err != nil {
				return nil, err
			}
			seen[p] = data
		case tar.TypeLink:
			seen[p] = seen[strings.TrimPrefix(path.Clean(h.Linkname), "/")]
		}
		if data, ok := seen[p]; ok && p == name && data != nil {
			return data, nil
		}
	}
}

// shellQuote joins args for the guest's sh, each in single quotes.
func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
