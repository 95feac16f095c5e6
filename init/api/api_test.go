package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"ingot.dev/ingot/init/api/apiv1"
	"ingot.dev/ingot/init/supervise"
	"ingot.dev/ingot/pki"
)

// fixture is a node API served on loopback with a real PKI: alice (admin) and bob (reader)
// from the node's CA, mallory (admin) from another.
type fixture struct {
	dir, other string
	addr       string
	logDir     string

	mu       sync.Mutex
	power    []string
	received []byte
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	now := time.Now()
	f := &fixture{dir: filepath.Join(t.TempDir(), "pki"), other: filepath.Join(t.TempDir(), "other"), logDir: t.TempDir()}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(pki.Init(f.dir, now))
	must(pki.Node(f.dir, "node-a", []net.IP{net.IPv4(127, 0, 0, 1)}, nil, now))
	must(pki.Client(f.dir, "alice", pki.RoleAdmin, now))
	must(pki.Client(f.dir, "bob", pki.RoleReader, now))
	must(pki.Init(f.other, now))
	must(pki.Client(f.other, "mallory", pki.RoleAdmin, now))

	read := func(p string) []byte {
		b, err := os.ReadFile(filepath.Join(f.dir, p))
		must(err)
		return b
	}
	tc, err := TLS{Cert: read("nodes/node-a.crt"), Key: read("nodes/node-a.key"), ClientCA: read(pki.FileCA)}.Config()
	must(err)
	os.WriteFile(filepath.Join(f.logDir, "runtime.log"), []byte("one\ntwo\nthree\n"), 0o600)
	srv := New(slog.New(slog.NewTextHandler(io.Discard, nil)), tc, Node{
		Services: func() []supervise.Status {
			return []supervise.Status{{Name: "runtime", State: supervise.Running, PID: 42, Since: now}}
		},
		Power: func(reboot bool, reason string) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.power = append(f.power, map[bool]string{true: "reboot", false: "poweroff"}[reboot]+" "+reason)
		},
		Upgrade: func(ctx context.Context, h apiv1.UpgradeHeader, r io.Reader) (string, error) {
			b, err := io.ReadAll(r)
			f.mu.Lock()
			f.received = b
			f.mu.Unlock()
			if err != nil {
				return "", err
			}
			return "b", nil
		},
		Started:       now.Add(-time.Minute),
		ServiceLogDir: f.logDir,
		RuntimeSocket: filepath.Join(t.TempDir(), "none.sock"),
		OSRelease:     writeTemp(t, "ID=ingot\nVERSION_ID=0\nIMAGE_ID=dev\nBUILD_ID=abc123\n"),
		EFIVars:       filepath.Join(t.TempDir(), "no-efi", "efivars"),
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	f.addr = ln.Addr().String()
	return f
}

func writeTemp(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (f *fixture) dial(t *testing.T, dir, client string) *apiv1.Client {
	t.Helper()
	tc, _, err := pki.ClientTLS(dir, client)
	if err != nil {
		t.Fatal(err)
	}
	return f.dialTLS(t, tc)
}

func (f *fixture) dialTLS(t *testing.T, tc *tls.Config) *apiv1.Client {
	t.Helper()
	c, err := apiv1.Dial(f.addr, tc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestAuthorization(t *testing.T) {
	f := newFixture(t)

	// Who may not call at all: no certificate, another CA's certificate, and the node's own
	// server certificate presented as a client (same CA, but not for client authentication).
	roots, _, err := pki.ClientTLS(f.dir, "alice")
	if err != nil {
		t.Fatal(err)
	}
	noCert := &tls.Config{RootCAs: roots.RootCAs, MinVersion: tls.VersionTLS13}
	mallory, _, err := pki.ClientTLS(f.other, "mallory")
	if err != nil {
		t.Fatal(err)
	}
	mallory.RootCAs = roots.RootCAs // mallory trusts the node; the node must not trust mallory
	nodeCert, err := tls.LoadX509KeyPair(filepath.Join(f.dir, "nodes/node-a.crt"), filepath.Join(f.dir, "nodes/node-a.key"))
	if err != nil {
		t.Fatal(err)
	}
	asNode := &tls.Config{RootCAs: roots.RootCAs, Certificates: []tls.Certificate{nodeCert}, MinVersion: tls.VersionTLS13}
	for name, tc := range map[string]*tls.Config{"no certificate": noCert, "another CA": mallory, "server certificate": asNode} {
		c := f.dialTLS(t, tc)
		if _, err := c.Status(ctx(t)); err == nil {
			t.Errorf("%s: Status answered", name)
		} else if code := status.Code(err); code != codes.Unavailable && code != codes.Unauthenticated {
			t.Errorf("%s: %v; want the handshake refused", name, err)
		}
		if err := c.Reboot(ctx(t), ""); err == nil {
			t.Errorf("%s: Reboot answered", name)
		}
	}

	// A client that does not trust the node's CA does not talk to it.
	alienRoots, _, err := pki.ClientTLS(f.other, "mallory")
	if err != nil {
		t.Fatal(err)
	}
	alice, _, _ := pki.ClientTLS(f.dir, "alice")
	alice.RootCAs = alienRoots.RootCAs
	if _, err := f.dialTLS(t, alice).Status(ctx(t)); err == nil {
		t.Error("a client trusting another CA accepted the node")
	}

	bob := f.dial(t, f.dir, "bob")
	st, err := bob.Status(ctx(t))
	if err != nil {
		t.Fatalf("reader Status: %v", err)
	}
	if st.BuildID != "abc123" || st.Profile != "dev" || st.Boot.Loader != "direct" || len(st.Services) != 1 || st.Services[0].State != "running" || st.Uptime < time.Minute {
		t.Errorf("status %+v", st)
	}
	for name, call := range map[string]func() error{
		"Reboot":      func() error { return bob.Reboot(ctx(t), "") },
		"Poweroff":    func() error { return bob.Poweroff(ctx(t), "") },
		"Pull":        func() error { _, err := bob.Pull(ctx(t), "busybox"); return err },
		"ImageRemove": func() error { return bob.ImageRemove(ctx(t), "busybox") },
		"Upgrade": func() error {
			_, err := bob.Upgrade(ctx(t), &apiv1.UpgradeHeader{Size: 1, SHA256: strings.Repeat("0", 64)}, strings.NewReader("x"), nil)
			return err
		},
		"Rollback": func() error { _, err := bob.Rollback(ctx(t)); return err },
	} {
		err := call()
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `client "bob" has role reader; `+name+" needs admin") {
			t.Errorf("reader %s: %v; want PermissionDenied naming the role", name, err)
		}
	}
	if len(f.power) != 0 {
		t.Fatalf("a refused call reached PID 1: %q", f.power)
	}

	a := f.dial(t, f.dir, "alice")
	if err := a.Reboot(ctx(t), "kernel\x1b[2J update"); err != nil {
		t.Fatalf("admin Reboot: %v", err)
	}
	f.mu.Lock()
	got := strings.Join(f.power, "|")
	f.mu.Unlock()
	if got != "reboot node API: alice (admin): kernel[2J update" {
		t.Errorf("PID 1 was asked %q", got)
	}
	// The runtime calls say plainly that there is no runtime here.
	if _, err := a.Images(ctx(t)); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "runs no CRI runtime") {
		t.Errorf("Images without a runtime: %v", err)
	}
}

func TestUpgradeStream(t *testing.T) {
	f := newFixture(t)
	a := f.dial(t, f.dir, "alice")
	img := bytes.Repeat([]byte("0123456789abcdef"), 200000) // 3.2 MB: several messages
	var sent int64
	rep, err := a.Upgrade(ctx(t), &apiv1.UpgradeHeader{Version: "2", Size: int64(len(img)), SHA256: strings.Repeat("a", 64)}, bytes.NewReader(img), func(n int64) { sent = n })
	if err != nil || rep.Slot != "b" {
		t.Fatalf("upgrade: %+v, %v", rep, err)
	}
	if !bytes.Equal(f.received, img) || sent != int64(len(img)) {
		t.Fatalf("the node received %d bytes of %d (client says %d sent)", len(f.received), len(img), sent)
	}
	for name, c := range map[string]struct {
		size int64
		sum  string
		want string
	}{
		"short":   {int64(len(img)) + 1, strings.Repeat("a", 64), "stopped 1 bytes short"},
		"long":    {int64(len(img)) - 1, strings.Repeat("a", 64), "more than the"},
		"no size": {0, strings.Repeat("a", 64), "image size 0"},
		"bad sum": {int64(len(img)), "xyz", "not 64 hex digits"},
	} {
		_, err := a.Upgrade(ctx(t), &apiv1.UpgradeHeader{Size: c.size, SHA256: c.sum}, bytes.NewReader(img), nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want an error saying %q", name, err, c.want)
		}
	}
}

func TestLogs(t *testing.T) {
	f := newFixture(t)
	c := f.dial(t, f.dir, "bob")
	var out bytes.Buffer
	if err := c.Logs(ctx(t), &apiv1.LogsRequest{Name: "runtime", Tail: 2}, &out); err != nil {
		t.Fatal(err)
	}
	if out.String() != "two\nthree\n" {
		t.Errorf("tail 2: %q", out.String())
	}
	for _, name := range []string{"nosuch", "../etc/passwd"} {
		err := c.Logs(ctx(t), &apiv1.LogsRequest{Name: name}, io.Discard)
		if code := status.Code(err); code != codes.NotFound && code != codes.InvalidArgument {
			t.Errorf("logs %q: %v", name, err)
		}
	}

	// Follow across a rotation: lines written before, during and after are each seen once.
	pollEvery = 20 * time.Millisecond
	fctx, cancel := context.WithCancel(ctx(t))
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- c.Logs(fctx, &apiv1.LogsRequest{Name: "runtime", Follow: true, Tail: 1}, pw)
		pw.Close()
	}()
	lines := make(chan string, 16)
	go func() {
		b := make([]byte, 4096)
		var acc string
		for {
			n, err := pr.Read(b)
			acc += string(b[:n])
			for {
				l, rest, ok := strings.Cut(acc, "\n")
				if !ok {
					break
				}
				lines <- l
				acc = rest
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	next := func() string {
		select {
		case l := <-lines:
			return l
		case <-time.After(5 * time.Second):
			return "<nothing>"
		}
	}
	if l := next(); l != "three" {
		t.Fatalf("first followed line %q", l)
	}
	path := filepath.Join(f.logDir, "runtime.log")
	appendLine := func(s string) {
		fh, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		fh.WriteString(s + "\n")
		fh.Close()
	}
	appendLine("four")
	if l := next(); l != "four" {
		t.Fatalf("after an append: %q", l)
	}
	appendLine("five")
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	appendLine("six")
	for _, want := range []string{"five", "six"} {
		if l := next(); l != want {
			t.Fatalf("across a rotation: %q, want %q", l, want)
		}
	}
	cancel()
	<-done
}

func TestFormatKmsg(t *testing.T) {
	got := string(formatKmsg([]byte("6,339,5140900,-;NET: Registered \\x41F_PACKET\\x0a family\n SUBSYSTEM=net\n")))
	if got != "[    5.140900] NET: Registered AF_PACKET\\x0a family\n" {
		t.Errorf("%q", got)
	}
}
