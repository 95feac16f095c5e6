package vmtest

import (
	"context"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/init/api/apiv1"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/pki"
	"ingot.dev/ingot/profiles"
	"ingot.dev/ingot/qemu"
)

// upgradeArches are the arches TestUpgradeInVM runs on: the one INGOT_E2E_ARCH names (make
// e2e-upgrade ARCH=…), amd64 when it is unset (make test).
func upgradeArches() []string {
	if a := os.Getenv("INGOT_E2E_ARCH"); a != "" {
		return []string{a}
	}
	return []string{"amd64"}
}

// TestUpgradeInVM swaps a node's image through its API, booted from its disk by UEFI: image 1 in
// slot a; `ingot ctl upgrade` to image 2, which boots in slot b, passes its health checks and is
// committed, with a file written under image 1 still there; then to image 3, whose runtime
// refuses its config, so it never becomes healthy: the node marks it bad and is back on image 2
// with no step from the test, and says why; then `ingot ctl rollback` by hand to image 1.
func TestUpgradeInVM(t *testing.T) {
	testgate.Short(t, "VM boots")
	for _, archName := range upgradeArches() {
		t.Run(archName, func(t *testing.T) { testUpgradeInVM(t, archName) })
	}
}

// upgradeProfile is the dev profile with a health deadline, and when badRoot is set a runtime
// config whose root the runtime cannot create (the root filesystem is read-only): a config it
// refuses at start, which the build accepts.
func upgradeProfile(t *testing.T, path string, healthS int, badRoot bool) {
	t.Helper()
	_, raw, err := profiles.Builtin("dev")
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	if badRoot {
		const old = "\nconfig = \"\"\n"
		if !strings.Contains(s, old) {
			t.Fatalf("the dev profile no longer has %q", old)
		}
		s = strings.Replace(s, old, "\nconfig = '''\nversion = 2\nroot = \"/usr/lib/ingot-unwritable\"\n'''\n", 1)
	}
	s += fmt.Sprintf("\n[upgrade]\nhealth_timeout_s = %d\n", healthS)
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// swapRig is what the image swap tests share: the ingot CLI, the images by version, the PKI
// and a node.toml with the [api] table.
type swapRig struct {
	ingot, pki, nodeToml string
	images               map[string]string
}

// newSwapRig builds the ingot CLI, the images versions names (version → profile file), and the
// node API's certificates.
func newSwapRig(t *testing.T, archName string, versions map[string]string) *swapRig {
	t.Helper()
	ctx := context.Background()
	tmp := t.TempDir()
	r := &swapRig{ingot: filepath.Join(tmp, "ingot"), pki: filepath.Join(tmp, "pki"), nodeToml: filepath.Join(tmp, "node.toml"), images: map[string]string{}}
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", r.ingot, "../../cmd/ingot").CombinedOutput(); err != nil {
		t.Fatalf("build ingot: %v\n%s", err, out)
	}
	for _, v := range slices.Sorted(maps.Keys(versions)) {
		dir := filepath.Join(tmp, "image-"+v)
		start := time.Now()
		if out, err := exec.CommandContext(ctx, r.ingot, "build", "--profile", versions[v], "--arch", archName, "--out", dir,
			"--version", v, "--node", NodeBinary(archName)).CombinedOutput(); err != nil {
			t.Fatalf("ingot build --version %s: %v\n%s", v, err, out)
		}
		t.Logf("%s: image %s built in %s", archName, v, time.Since(start).Round(time.Second))
		r.images[v] = dir
	}
	now := time.Now()
	for _, err := range []error{
		pki.Init(r.pki, now),
		pki.Node(r.pki, "swap-node", []net.IP{net.IPv4(127, 0, 0, 1)}, nil, now),
		pki.Client(r.pki, "admin", pki.RoleAdmin, now),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	table, err := pki.APITable(r.pki, "swap-node", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(r.nodeToml, append([]byte("hostname = \"swap-node\"\n\n"), table...), 0o600); err != nil {
		t.Fatal(err)
	}
	return r
}

// boot starts the node from disk (a copy of image v's disk.raw when it does not exist yet) by
// UEFI, its API forwarded to addr.
func (r *swapRig) boot(t *testing.T, v, disk, addr string) *VM {
	t.Helper()
	if _, err := os.Stat(disk); err != nil {
		if err := qemu.CopySparse(filepath.Join(r.images[v], "disk.raw"), disk); err != nil {
			t.Fatal(err)
		}
	}
	return BootWith(t, qemu.Config{Image: r.images[v], Boot: qemu.BootUEFI, Memory: 1536, Disk: disk,
		HostFwd: []string{fmt.Sprintf("tcp:%s-:%d", addr, apiv1.DefaultPort)},
		FwCfg:   map[string]string{"opt/ingot/node.toml": r.nodeToml}})
}

func testUpgradeInVM(t *testing.T, archName string) {
	RequireVM(t, archName)
	ctx := context.Background()
	tmp := t.TempDir()
	good, bad := filepath.Join(tmp, "upgrade.toml"), filepath.Join(tmp, "upgrade-bad.toml")
	upgradeProfile(t, good, 240, false)
	upgradeProfile(t, bad, 45, true)
	r := newSwapRig(t, archName, map[string]string{"1": good, "2": good, "3": bad})
	ingot, dir, images := r.ingot, r.pki, r.images
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	vm := r.boot(t, "1", filepath.Join(tmp, "disk.raw"), addr)
	vm.WaitReady(bootTimeout)
	vm.Prompt(shellTimeout)
	vm.MustShell("echo kept-across-swaps > /var/lib/swap-test && sync", shellTimeout)

	ctl := func(args ...string) (string, error) {
		c, cancel := context.WithTimeout(ctx, 10*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(c, ingot, append([]string{"ctl", "--node", addr, "--pki", dir}, args...)...).CombinedOutput()
		return string(out), err
	}
	must := func(args ...string) string {
		t.Helper()
		out, err := ctl(args...)
		if err != nil {
			t.Fatalf("ingot ctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	// statusUntil polls ingot ctl status until it shows every one of want.
	statusUntil := func(timeout time.Duration, want ...string) string {
		t.Helper()
		deadline := time.Now().Add(timeout)
		var out string
		for time.Now().Before(deadline) {
			var err error
			if out, err = ctl("status"); err == nil {
				missing := false
				for _, w := range want {
					missing = missing || !strings.Contains(out, w)
				}
				if !missing {
					return out
				}
			}
			time.Sleep(time.Second)
		}
		t.Fatalf("ingot ctl status never showed %q; last:\n%s", want, out)
		return ""
	}
	if out := must("status"); !strings.Contains(out, "slot a (ingot-a.conf)") || !strings.Contains(out, "version 1,") {
		t.Fatalf("status on image 1:\n%s", out)
	}

	// 1 → 2: committed.
	start := time.Now()
	out := must("upgrade", "--image", images["2"])
	if !strings.Contains(out, "written to slot b") {
		t.Fatalf("upgrade to 2: %s", out)
	}
	vm.WaitFor("upgrade installed; rebooting into it slot=b version=2", shellTimeout)
	rebooted := vm.cur.offset
	vm.WaitReady(bootTimeout)
	t.Logf("%s: swap downtime, upgrade call to %q on slot b: %s", archName, ReadyLine, time.Since(start).Round(time.Millisecond))
	// The commit and `node ready` race: the health gate commits as soon as the runtime answers,
	// and PID 1 prints ready once it has seen the same. Look from the reboot on.
	wctx, cancel := context.WithTimeout(ctx, bootTimeout)
	_, err := vm.Console.WaitFor(wctx, rebooted, "upgrade committed slot=b version=2")
	cancel()
	if err != nil {
		t.Fatalf("no commit of slot b: %v\n%s", err, tail(vm.Console.Output(), 3000))
	}
	st := statusUntil(time.Minute, "slot b (ingot-b.conf)", "version 2,", "upgrade   committed: slot a → b, version 2")
	if strings.Contains(st, "on trial") {
		t.Fatalf("committed slot still on trial:\n%s", st)
	}
	vm.Prompt(shellTimeout)
	if got := vm.MustShell("cat /var/lib/swap-test", shellTimeout); got != "kept-across-swaps" {
		t.Fatalf("the file written on image 1 reads %q on image 2", got)
	}
	if got := vm.MustShell("ls /run/ingot/esp 2>/dev/null | wc -l", shellTimeout); got != "0" {
		t.Fatalf("the ESP stays mounted after the swap")
	}

	// 2 → 3: its runtime never starts, so its health checks fail and the node goes back to 2.
	start = time.Now()
	must("upgrade", "--image", images["3"])
	vm.WaitFor("slot on trial: health checks before commit slot=a version=3", bootTimeout)
	vm.WaitFor("upgrade failed its health checks; rebooting into the previous slot slot=a", 2*time.Minute)
	vm.WaitFor("upgrade rolled back slot=b failed_slot=a failed_version=3", bootTimeout)
	vm.WaitReady(bootTimeout)
	t.Logf("%s: a failing image's round trip, upgrade call to %q back on slot b: %s", archName, ReadyLine, time.Since(start).Round(time.Millisecond))
	st = statusUntil(time.Minute, "slot b (ingot-b.conf)", "version 2,", "upgrade   rolled back: slot b → a, version 3", "health check failed on slot a: the CRI runtime did not answer Status in time")
	t.Logf("%s: status after the rollback:\n%s", archName, st)

	// By hand back to image 1, still committed in slot a? No: slot a now holds image 3, which
	// failed; rollback refuses it.
	if out, err := ctl("rollback"); err == nil || !strings.Contains(out, "slot a has no boot entry") {
		t.Fatalf("rollback to a failed slot: %v\n%s", err, out)
	}
	// Upgrade to 1 again, then roll back by hand to 2.
	must("upgrade", "--image", images["1"], "--wait", "6m")
	statusUntil(time.Minute, "slot a (ingot-a.conf)", "version 1,")
	must("rollback")
	vm.WaitFor("rolling back by request from_slot=a to_slot=b", shellTimeout)
	vm.WaitReady(bootTimeout)
	statusUntil(time.Minute, "slot b (ingot-b.conf)", "version 2,", "upgrade   rolled back: slot a → b")

	must("poweroff")
	vm.WaitExit(powerTimeout)
	vm.AssertCleanConsole()
}

// TestUpgradePowerCutInVM cuts the power (kills QEMU) at points of image swaps the test picks,
// then boots the same disk again, each time: after the first MiB of an upload; a quarter, half
// and nine tenths into it (the node writes the slot as the bytes arrive); once it was all sent, while the node checks and renames the slot and writes its entry;
// just after the node answered (entry written, reboot under way); and in the new slot's trial
// boot, before its commit. Every boot after a cut must reach `node ready` on a good slot: the
// one it ran, committed, or the new one on trial, which then commits.
func TestUpgradePowerCutInVM(t *testing.T) {
	testgate.Short(t, "VM boots")
	for _, archName := range upgradeArches() {
		t.Run(archName, func(t *testing.T) { testUpgradePowerCut(t, archName) })
	}
}

func testUpgradePowerCut(t *testing.T, archName string) {
	RequireVM(t, archName)
	ctx := context.Background()
	tmp := t.TempDir()
	good := filepath.Join(tmp, "upgrade.toml")
	upgradeProfile(t, good, 240, false)
	r := newSwapRig(t, archName, map[string]string{"1": good, "2": good})
	disk := filepath.Join(tmp, "disk.raw")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tc, _, err := pki.ClientTLS(r.pki, "admin")
	if err != nil {
		t.Fatal(err)
	}
	tc.ServerName = "127.0.0.1"

	const mib = 1 << 20
	type cut struct {
		name string
		// at reports, as the upload goes, whether to cut now (sent bytes of size); nil when the
		// cut comes after the node answered: at once, or at a console line.
		at   func(sent, size int64) bool
		line string
	}
	cuts := []cut{
		{name: "after 1 MiB of the upload", at: func(sent, size int64) bool { return sent >= mib }},
		{name: "a quarter into the upload", at: func(sent, size int64) bool { return sent >= size/4 }},
		{name: "half-way through the upload", at: func(sent, size int64) bool { return sent >= size/2 }},
		{name: "nine tenths into the upload", at: func(sent, size int64) bool { return sent >= size*9/10 }},
		{name: "all sent, the node still writing", at: func(sent, size int64) bool { return sent == size }},
		{name: "just after the node answered"},
		{name: "in the new slot's trial boot", line: "slot on trial: health checks before commit"},
	}
	version := "1"
	vm := r.boot(t, version, disk, addr)
	vm.WaitReady(bootTimeout)
	for _, c := range cuts {
		target := map[string]string{"1": "2", "2": "1"}[version]
		m, err := manifest.Read(r.images[target])
		if err != nil {
			t.Fatal(err)
		}
		var uki manifest.Output
		for _, o := range m.Outputs {
			if o.Name == manifest.FileUKI {
				uki = o
			}
		}
		f, err := os.Open(filepath.Join(r.images[target], manifest.FileUKI))
		if err != nil {
			t.Fatal(err)
		}
		client, err := apiv1.Dial(addr, tc)
		if err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		kill := func() { once.Do(func() { vm.Kill(); vm.Wait() }) }
		c2, cancel := context.WithTimeout(ctx, 10*time.Minute)
		_, uerr := client.Upgrade(c2, &apiv1.UpgradeHeader{Version: m.Version, BuildID: m.BuildID, Profile: m.Profile, Arch: m.Arch, Size: uki.Size, SHA256: uki.SHA256}, f,
			func(sent int64) {
				if c.at != nil && c.at(sent, uki.Size) {
					kill()
				}
			})
		cancel()
		f.Close()
		client.Close()
		if c.at == nil {
			if uerr != nil {
				t.Fatalf("%s: the upgrade failed before the cut: %v", c.name, uerr)
			}
			if c.line != "" {
				vm.WaitFor(c.line, bootTimeout)
			}
			kill()
		}
		select {
		case <-vm.Done():
		default:
			t.Fatalf("%s: the cut never came (upgrade: %v)", c.name, uerr)
		}
		vm = r.boot(t, version, disk, addr)
		vm.WaitReady(bootTimeout)
		out := vm.Console.Output()
		switch {
		case strings.Contains(out, "slot on trial: health checks before commit"):
			deadline := time.Now().Add(bootTimeout)
			for !strings.Contains(vm.Console.Output(), "upgrade committed") {
				if time.Now().After(deadline) {
					t.Fatalf("%s: the new slot on trial was never committed:\n%s", c.name, tail(vm.Console.Output(), 3000))
				}
				time.Sleep(time.Second)
			}
			t.Logf("%s: cut %s: back up on image %s (on trial, then committed)", archName, c.name, target)
			version = target
		default:
			t.Logf("%s: cut %s: back up on image %s", archName, c.name, version)
		}
		if strings.Contains(out, "EXT4-fs error") || strings.Contains(out, "FAT-fs (") && strings.Contains(out, "error") {
			t.Fatalf("%s: filesystem errors after the cut:\n%s", c.name, tail(out, 3000))
		}
		st, err := apiv1.Dial(addr, tc)
		if err != nil {
			t.Fatal(err)
		}
		sctx, scancel := context.WithTimeout(ctx, time.Minute)
		s, err := st.Status(sctx)
		scancel()
		st.Close()
		if err != nil || s.Version != version || s.Boot.TriesLeft != -1 {
			t.Fatalf("%s: status %+v, %v; want image %s committed", c.name, s, err, version)
		}
	}
	if version != "1" {
		t.Logf("%s: ends on image %s", archName, version)
	}
	vm.Powerdown()
	vm.WaitExit(powerTimeout)
	vm.AssertCleanConsole()
}
