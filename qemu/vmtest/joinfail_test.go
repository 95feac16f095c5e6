package vmtest

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/cluster"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/qemu"
)

// TestKubeletJoinFailuresInVM: a node whose join cannot work says why in one line, on the console
// and in /var/log/kubelet.log, and keeps trying. One control plane, three nodes, each with a node
// config wrong in one way: the CA of another cluster, a bootstrap token that has expired, an API
// server address whose forward reaches nothing. For each, PID 1's line names the fault, the
// kubelet's log holds the same line, and the kubelet's own failed attempts go on piling up in its
// log for 30 s after it, the kubelet still running: it has not given up.
// Like TestClusterE2E it needs the control plane built: INGOT_CLUSTER_TEST=1 or CI=true.
func TestKubeletJoinFailuresInVM(t *testing.T) {
	if os.Getenv("INGOT_CLUSTER_TEST") != "1" && !testgate.InCI() {
		t.Skip("set INGOT_CLUSTER_TEST=1 to build the control plane (slow the first time) and boot nodes that fail to join it")
	}
	testgate.Short(t, "VM boots")
	const archName = "amd64"
	RequireVM(t, archName)
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Minute)
	defer cancel()
	bins, err := cluster.Build(ctx, cachedir.Default())
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(t.TempDir(), "cluster")
	st, err := cluster.Up(ctx, cluster.Options{StateDir: state, Binaries: bins})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cluster.Down(state, false) })
	caPEM, err := os.ReadFile(filepath.Join(state, "pki", cluster.FileCA))
	if err != nil {
		t.Fatal(err)
	}
	admin, err := tls.LoadX509KeyPair(filepath.Join(state, "pki", cluster.FileAdmin+".crt"), filepath.Join(state, "pki", cluster.FileAdmin+".key"))
	if err != nil {
		t.Fatal(err)
	}
	api, err := cluster.NewClient(st.Server, caPEM, &admin)
	if err != nil {
		t.Fatal(err)
	}
	good, err := cluster.CreateBootstrapToken(ctx, api, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	profile := filepath.Join(t.TempDir(), "dev-kubelet.toml")
	if err := os.WriteFile(profile, devWithKubelet(t), 0o644); err != nil {
		t.Fatal(err)
	}
	image := Image(t, profile, archName)
	guestAPI := fmt.Sprintf("%s:%d", cluster.GuestHostIP, st.APIPort)
	hostAPI := fmt.Sprintf("127.0.0.1:%d", st.APIPort)

	// boot starts a node named name that joins with a node config of server, ca and token, its
	// guest's API server address relayed to relayTo on the host.
	boot := func(t *testing.T, name, server string, ca []byte, token cluster.Token, relayTo string) *VM {
		join, err := cluster.JoinConfig(server, ca, token)
		if err != nil {
			t.Fatal(err)
		}
		nodeToml := filepath.Join(t.TempDir(), "node.toml")
		if err := os.WriteFile(nodeToml, append([]byte(fmt.Sprintf("hostname = %q\n\n", name)), join...), 0o600); err != nil {
			t.Fatal(err)
		}
		vm := BootWith(t, qemu.Config{Image: image, Boot: qemu.BootDirect, Memory: 2048,
			FwCfg:    map[string]string{"opt/ingot/node.toml": nodeToml},
			GuestFwd: []string{relayFwd(t, guestAPI, relayTo)}})
		vm.WaitFor("kubelet started", bootTimeout)
		return vm
	}

	t.Run("wrong CA", func(t *testing.T) {
		other, err := cluster.NewPKI(time.Now(), net.IPv4(10, 96, 0, 1))
		if err != nil {
			t.Fatal(err)
		}
		vm := boot(t, "worker-wrong-ca", st.GuestServer, other.CA.CertPEM(), good, hostAPI)
		msg := joinFailure(t, vm, "API server "+st.GuestServer+" presents a certificate not signed by the node config's CA (check [kubernetes] ca)")
		keepsTrying(t, vm, msg, "certificate signed by unknown authority")
	})

	t.Run("expired token", func(t *testing.T) {
		expired, err := cluster.CreateBootstrapToken(ctx, api, time.Now().Add(-time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		vm := boot(t, "worker-expired-token", st.GuestServer, caPEM, expired, hostAPI)
		msg := joinFailure(t, vm, "API server "+st.GuestServer+" refused the bootstrap token (expired, deleted or mistyped: check [kubernetes] bootstrap_token)")
		keepsTrying(t, vm, msg, "Unauthorized")
	})

	t.Run("unreachable", func(t *testing.T) {
		// The guest's forward reaches nothing: the relay's far end ends each connection at
		// once, as a forward or load balancer in front of a stopped API server does. (A closed
		// port would not do: the relay, busybox nc, would print its error into the connection.)
		fwd := hangup(t)
		vm := boot(t, "worker-unreachable", st.GuestServer, caPEM, good, fwd)
		msg := joinFailure(t, vm, "cannot reach the API server "+st.GuestServer+": the connection was closed before TLS was set up")
		keepsTrying(t, vm, msg, "EOF")
	})
}

// joinFailure waits for PID 1's console line "kubelet join: <want…>; retrying" and for the same
// line in the kubelet's log, and returns the message (want and the rest of its line).
func joinFailure(t *testing.T, vm *VM, want string) string {
	t.Helper()
	vm.WaitFor("kubelet join: "+want, bootTimeout)
	took := time.Since(vm.Started)
	from := vm.cur.offset - len(want)
	vm.WaitFor("\n", shellTimeout)
	line := strings.TrimRight(vm.Console.Output()[from:vm.cur.offset], "\r\n")
	msg, ok := strings.CutSuffix(line, "; retrying")
	if !ok {
		t.Fatalf("console line %q does not say PID 1 is retrying", line)
	}
	t.Logf("console %s after QEMU started: kubelet join: %s; retrying", took.Round(time.Second), msg)
	vm.Prompt(shellTimeout)
	if out := vm.MustShell("grep 'ingot: kubelet join:' /var/log/kubelet.log", shellTimeout); !strings.Contains(out, "ingot: kubelet join: "+msg+"\n") && !strings.HasSuffix(out, "ingot: kubelet join: "+msg) {
		t.Fatalf("/var/log/kubelet.log lacks the console's line %q; its join lines:\n%s", msg, out)
	}
	return msg
}

// keepsTrying checks the node has not given up: the kubelet's own log goes on gaining failed
// attempts that say attempt, for at least 30 s after PID 1's line, and the kubelet runs at the end.
func keepsTrying(t *testing.T, vm *VM, msg, attempt string) {
	t.Helper()
	count := func() int {
		out := vm.MustShell(fmt.Sprintf("grep -v ' ingot: ' /var/log/kubelet.log | grep -c %q || true", attempt), shellTimeout)
		n, err := strconv.Atoi(strings.TrimSpace(lastLine(out)))
		if err != nil {
			t.Fatalf("count the kubelet's attempts: %q", out)
		}
		return n
	}
	start, first := time.Now(), count()
	var now int
	deadline := time.Now().Add(3 * time.Minute)
	for {
		now = count()
		if now >= first+2 && time.Since(start) >= 30*time.Second {
			break
		}
		if time.Now().After(deadline) {
			out, _ := vm.Shell("tail -n 30 /var/log/kubelet.log", shellTimeout)
			t.Fatalf("the kubelet's log went from %d to %d lines saying %q in %s: it stopped trying after %q; its tail:\n%s",
				first, now, attempt, time.Since(start).Round(time.Second), msg, out)
		}
		time.Sleep(5 * time.Second)
	}
	pids := vm.MustShell("pidof kubelet || echo none", shellTimeout)
	if strings.Contains(pids, "none") {
		t.Fatalf("the kubelet is not running %s after %q", time.Since(start).Round(time.Second), msg)
	}
	t.Logf("the kubelet's log gained %d failed attempts (%q) in %s; kubelet pid %s",
		now-first, attempt, time.Since(start).Round(time.Second), strings.TrimSpace(lastLine(pids)))
}

// hangup listens on a loopback port that ends each connection at once, with a FIN after reading
// what the peer sent (closing with bytes unread would reset it), and returns its address.
func hangup(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.(*net.TCPConn).CloseWrite()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return l.Addr().String()
}
