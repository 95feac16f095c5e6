package vmtest

import (
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/image/debpkg"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/internal/testimages"
	"ingot.dev/ingot/qemu"
)

// TestCRIInVM boots an image with the runtime on each architecture, takes its address by DHCP
// from QEMU's user network, checks that a pod on the built-in pod network reaches the host's
// loopback service through the node, pulls busybox from the
// test registry through a guestfwd rule (the guest reaches nothing else), runs a pod whose
// container prints a line, and reads that line back with crictl logs.
func TestCRIInVM(t *testing.T) {
	testgate.Short(t, "VM boots")
	for _, tc := range []struct {
		name, profile, subnet string
		builtin               bool // ingot's own pod network (masquerade: the pod reaches the host)
	}{
		{"builtin", "testdata/cri.toml", "10.88.", true},
		// tuning is not built in, so the whole conflist runs through the reference plugins.
		{"external-cni", "testdata/cni-external.toml", "10.77.", false},
	} {
		for _, archName := range []string{"amd64", "arm64"} {
			t.Run(tc.name+"/"+archName, func(t *testing.T) { testCRIInVM(t, archName, tc.profile, tc.subnet, tc.builtin) })
		}
	}
}

func testCRIInVM(t *testing.T, archName, profile, subnet string, builtin bool) {
	{
		{
			RequireVM(t, archName)
			imgs, err := testimages.Build(context.Background(), testimages.Options{Arches: []string{archName}})
			if err != nil {
				testgate.Skip(t, "cannot build the test images: "+err.Error())
			}
			addr, stop, err := testimages.Serve(context.Background(), imgs)
			if err != nil {
				t.Fatal(err)
			}
			defer stop()
			_, port, _ := strings.Cut(addr, ":")
			// The host's own busybox from the cache relays each guest connection to the registry.
			f := &debpkg.Fetcher{Cache: cachedir.Default(), Arch: hostArch()}
			p, err := f.Fetch(context.Background(), "busybox-static")
			if err != nil {
				testgate.Skip(t, "cannot fetch busybox-static for the relay: "+err.Error())
			}
			root, err := f.Unpack(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			relay := fmt.Sprintf("tcp:10.0.2.100:5000-cmd:%s nc 127.0.0.1 %s", filepath.Join(root, "bin/busybox"), port)

			img := Image(t, profile, archName)
			vm := BootWith(t, qemu.Config{Image: img, Boot: qemu.BootDirect, GuestFwd: []string{relay}})
			took := vm.WaitReady(bootTimeout)
			t.Logf("%s: QEMU start to %q with the runtime: %d ms", archName, ReadyLine, took.Milliseconds())
			vm.Prompt(shellTimeout)
			// No node config, so no [api]: the node API must not listen.
			if n := vm.MustShell(nodeAPIListening, shellTimeout); n != "0" || !strings.Contains(vm.Console.Output(), "node API off") {
				t.Fatalf("without [api] in a node config: %s sockets listen on the node API's port", n)
			}
			if !strings.Contains(vm.Console.Output(), "dhcp lease interface=eth0 address=10.0.2.15/24") {
				t.Fatalf("the node did not get 10.0.2.15 by DHCP:\n%s", tail(vm.Console.Output(), 3000))
			}
			// The runtime's log is kept for `ingot-node logs`, not echoed on the dev console.
			if out := vm.MustShell("ingot-node logs runtime", shellTimeout); !strings.Contains(out, "CRI runtime serving") {
				t.Fatalf("ingot-node logs runtime lacks the serving line:\n%s", tail(out, 2000))
			}
			if regexp.MustCompile(`(?m)^runtime: `).MatchString(vm.Console.Output()) {
				t.Fatalf("the runtime's log reached the console although the profile does not echo it:\n%s", tail(vm.Console.Output(), 3000))
			}
			if builtin {
				out := vm.MustShell("ingot-node net show", shellTimeout)
				for _, want := range []string{"link bond0 type bond", "master br-test", "link eth0.42 type vlan", "vlan 42 on eth0",
					"addr 192.168.42.2/24", "route 10.42.0.0/16 via 192.168.42.1 dev eth0.42", "addr 10.0.2.15/24"} {
					if !strings.Contains(out, want) {
						t.Fatalf("ingot-node net show lacks %q:\n%s", want, out)
					}
				}
			}
			const long = 4 * time.Minute
			vm.MustShell("crictl pull registry.k8s.io/e2e-test-images/busybox:1.29-2", long)
			vm.MustShell(`echo '{"metadata":{"name":"vm","namespace":"default","uid":"vm-uid"},"log_directory":"/var/log/pods/vm","linux":{}}' > /tmp/pod.json`, shellTimeout)
			vm.MustShell(`echo '{"metadata":{"name":"hello"},"image":{"image":"registry.k8s.io/e2e-test-images/busybox:1.29-2"},"command":["/bin/sh","-c","echo hello-from-a-vm-pod; sleep 600"],"log_path":"hello.log","linux":{}}' > /tmp/ctr.json`, shellTimeout)
			vm.MustShell("POD=$(crictl runp /tmp/pod.json) && CTR=$(crictl create $POD /tmp/ctr.json /tmp/pod.json) && crictl start $CTR", long)
			deadline := time.Now().Add(long)
			for {
				// Shell returns only what the command printed, never the typed line.
				out, _ := vm.Shell("crictl logs $CTR 2>&1", long)
				if strings.Contains(out, "hello-from-a-vm-pod") {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the pod's log line never appeared; last crictl logs: %q", out)
				}
				time.Sleep(2 * time.Second)
			}
			// The pod's pause is runtime/pause's program for this arch: its process holds a page
			// or two (a Go pause held megabytes).
			rss := vm.MustShell(`for d in /proc/[0-9]*; do case "$(readlink $d/exe)" in /pause) grep VmRSS $d/status;; esac; done`, shellTimeout)
			if f := strings.Fields(rss); len(f) != 3 || f[2] != "kB" {
				t.Fatalf("want the VmRSS of the one process running /pause, got %q; the executables running:\n%s",
					rss, vm.MustShell("for d in /proc/[0-9]*; do echo $d $(readlink $d/exe); done", shellTimeout))
			} else if kb, _ := strconv.Atoi(f[1]); kb == 0 || kb > 64 {
				t.Fatalf("the pod's pause process has %s kB resident, want at most 64", f[1])
			}
			// The pod network: an address on cni0, and the pod reaches the host's loopback service
			// through the node (masquerade) and QEMU's guestfwd rule.
			ip := vm.MustShell("crictl inspectp -o go-template --template '{{.status.network.ip}}' $POD", long)
			if !strings.HasPrefix(ip, subnet) {
				t.Fatalf("pod IP %q, want one from %s0.0/16", ip, subnet)
			}
			if builtin {
				if out := vm.MustShell("crictl exec -s $CTR /bin/sh -c 'timeout 30 wget -q -O - http://10.0.2.100:5000/v2/ && echo REACHED-HOST'", long); !strings.Contains(out, "REACHED-HOST") {
					t.Fatalf("the pod did not reach the host's registry through the node: %q", out)
				}
			} else {
				// The reference bridge plugin: the node reaches the pod on the plugin's bridge.
				vm.MustShell("ping -c 1 -W 10 "+ip, long)
				if out := vm.MustShell("ls /var/lib/ingot/cni/cache/results 2>/dev/null || find /var/lib/ingot/cni -type f | head", long); out == "" {
					t.Fatalf("no libcni result cached: the external plugins did not run")
				}
			}
			vm.MustShell("crictl rmp -f $POD", long)
			vm.PowerOff(archName, qemu.BootDirect)
			vm.WaitExit(powerTimeout)
			vm.AssertCleanConsole()
		}
	}
}
