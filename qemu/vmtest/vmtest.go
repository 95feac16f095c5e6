// Package vmtest is the harness for whole-image tests: it builds images with the real pipeline,
// boots them under QEMU, waits for console lines and runs shell commands through the dev
// profile's serial console. Tests that cannot run here (no QEMU, no node binary) skip with one
// sentence, or fail under CI=true.
package vmtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"ingot.dev/ingot/image/arch"
	"ingot.dev/ingot/image/build"
	"ingot.dev/ingot/image/debpkg"
	"ingot.dev/ingot/image/disk"
	"ingot.dev/ingot/image/initramfs"
	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/image/uki"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/profiles"
	"ingot.dev/ingot/qemu"
)

// ReadyLine is what a booted node prints on its console.
const ReadyLine = "ingot: node ready"

// BinDir is where `make build` put the node binaries: $INGOT_BIN or <repo>/bin.
func BinDir() string {
	if d := os.Getenv("INGOT_BIN"); d != "" {
		return d
	}
	dir, _ := os.Getwd()
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return filepath.Join(d, "bin")
		}
	}
	return "bin"
}

// RequireVM skips (or fails in CI) unless QEMU for a, its firmware and the node binary exist.
func RequireVM(t testing.TB, archName string) arch.Arch {
	t.Helper()
	a, err := arch.Lookup(archName)
	if err != nil {
		t.Fatal(err)
	}
	testgate.RequireCommand(t, a.QEMU)
	if _, err := os.Stat(NodeBinary(archName)); err != nil {
		testgate.Skip(t, "the node binary "+NodeBinary(archName)+" is not built (run make build)")
	}
	return a
}

// NodeBinary is the node binary for an arch.
func NodeBinary(archName string) string { return filepath.Join(BinDir(), "ingot-node-"+archName) }

// Build builds a built-in profile (or a profile file) for an arch into dir.
func Build(t testing.TB, profile, archName, dir string) *manifest.Manifest {
	t.Helper()
	p, raw, err := profiles.Builtin(profile)
	if err != nil {
		raw, err = os.ReadFile(profile)
		if err != nil {
			t.Fatalf("profile %s: %v", profile, err)
		}
		if p, err = profiles.Parse(profile, raw); err != nil {
			t.Fatal(err)
		}
	}
	m, err := build.Run(context.Background(), build.Options{
		Profile: p, ProfileTOML: raw, Arch: archName, Out: dir, Cache: cachedir.Default(), NodeBinary: NodeBinary(archName),
	})
	if err != nil {
		t.Fatalf("build %s for %s: %v", profile, archName, err)
	}
	return m
}

var (
	imagesMu sync.Mutex
	images   = map[string]string{}
)

// RequireUEFI is RequireVM for a boot through UEFI firmware: it also skips (fails in CI) when
// the arch's firmware is not installed.
func RequireUEFI(t testing.TB, archName string) {
	t.Helper()
	a := RequireVM(t, archName)
	if _, err := qemu.FindFirmware(a); err != nil {
		testgate.Skip(t, err.Error())
	}
}

// Image builds a built-in profile for an arch once per test binary and returns its directory.
func Image(t testing.TB, profile, archName string) string {
	t.Helper()
	imagesMu.Lock()
	defer imagesMu.Unlock()
	key := strings.TrimSuffix(filepath.Base(profile), ".toml") + "-" + archName
	if dir, ok := images[key]; ok {
		return dir
	}
	base := os.Getenv("INGOT_VMTEST_DIR")
	if base == "" {
		base = filepath.Join(os.TempDir(), "ingot-vmtest")
	}
	dir := filepath.Join(base, key)
	Build(t, profile, archName, dir)
	images[key] = dir
	return dir
}

// VM is a booted test VM.
type VM struct {
	*qemu.VM
	t   testing.TB
	cur *cursor // shared with the views In makes
}

// cursor is how far a test has read the console.
type cursor struct {
	offset  int // console output already consumed
	started int // where the output of the command Start typed begins
}

// In is v for a subtest: its failures end that subtest only. Both read the same console and
// share how far it was read.
func (v *VM) In(t testing.TB) *VM { return &VM{VM: v.VM, t: t, cur: v.cur} }

// Boot starts an image with a fresh copy of its disk. The VM is killed when the test ends.
func Boot(t testing.TB, image, boot string) *VM {
	t.Helper()
	return BootWith(t, qemu.Config{Image: image, Boot: boot})
}

// BootWith starts a VM from cfg (Image and Boot set; RunDir is filled in, and Disk with a fresh
// copy of the image's disk unless set, or a network, CD or USB boot: a test that boots one disk
// twice passes it).
func BootWith(t testing.TB, cfg qemu.Config) *VM {
	t.Helper()
	image := cfg.Image
	run := t.TempDir()
	if cfg.Disk == "" && cfg.Boot != qemu.BootPXE && cfg.CDROM == "" && cfg.USBStick == "" {
		cfg.Disk = filepath.Join(run, "disk.raw")
		if err := qemu.CopySparse(filepath.Join(image, manifest.FileDisk), cfg.Disk); err != nil {
			t.Fatal(err)
		}
	}
	cfg.RunDir = run
	vm, err := qemu.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		vm.Kill()
		vm.Wait()
		if t.Failed() {
			t.Logf("console:\n%s", tail(vm.Console.Output(), 4000))
		}
	})
	return &VM{VM: vm, t: t, cur: &cursor{}}
}

// WaitFor waits for text in console output not yet consumed and consumes through it.
func (v *VM) WaitFor(text string, timeout time.Duration) {
	v.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	off, err := v.Console.WaitFor(ctx, v.cur.offset, text)
	if err != nil {
		v.t.Fatal(err)
	}
	v.cur.offset = off
}

// WaitReady waits for the ready line and returns the time since QEMU started.
func (v *VM) WaitReady(timeout time.Duration) time.Duration {
	v.t.Helper()
	v.WaitFor(ReadyLine, timeout)
	return time.Since(v.Started)
}

// Prompt presses enter and waits for the console shell's prompt (which may have been printed
// before the ready line, while the runtime was still starting).
func (v *VM) Prompt(timeout time.Duration) {
	v.t.Helper()
	if err := v.Console.Send("\n"); err != nil {
		v.t.Fatal(err)
	}
	v.WaitFor("# ", timeout)
}

// Shell runs a command in the console shell and returns its output. The markers are built by the
// shell (`"@@"E`), so the echo of the typed line never matches them.
func (v *VM) Shell(cmd string, timeout time.Duration) (string, int) {
	v.t.Helper()
	v.Start(cmd, timeout)
	return v.Finish(timeout)
}

// Start types a command into the console shell and returns once the shell runs it, so the test
// can talk to it through the console (Send, WaitFor) before Finish collects its output and exit
// status.
func (v *VM) Start(cmd string, timeout time.Duration) {
	v.t.Helper()
	if err := v.Console.Send(fmt.Sprintf("echo @@\"B\"; %s; echo @@\"E\"$?\n", cmd)); err != nil {
		v.t.Fatal(err)
	}
	v.WaitFor("@@B", timeout)
	v.cur.started = v.cur.offset
}

// Expect waits, between Start and Finish, for text from the command Start typed, and fails at
// once, with the command's output and exit status, if the command ends first.
func (v *VM) Expect(text string, timeout time.Duration) {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		off, err := v.Console.WaitFor(ctx, v.cur.offset, text)
		cancel()
		switch {
		case err == nil:
			v.cur.offset = off
			return
		case !errors.Is(err, context.DeadlineExceeded):
			v.t.Fatal(err)
		case strings.Contains(v.Console.Output()[v.cur.offset:], "@@E"):
			out, code := v.Finish(time.Minute)
			v.t.Fatalf("the command ended (status %d) before printing %q:\n%s", code, text, out)
		case time.Now().After(deadline):
			v.t.Fatalf("waiting %s for %q; last output:\n%s", timeout, text, tail(v.Console.Output()[v.cur.started:], 2000))
		}
	}
}

// Finish waits for the command Start typed to end and returns what it printed since Start (and
// since any WaitFor in between) and its exit status.
func (v *VM) Finish(timeout time.Duration) (string, int) {
	v.t.Helper()
	start := v.cur.started
	v.WaitFor("@@E", timeout)
	end := v.cur.offset - len("@@E")
	// The exit status follows the marker; it may arrive in a later chunk than the marker.
	codeStart := v.cur.offset
	v.WaitFor("\n", timeout)
	out := v.Console.Output()
	body := out[start:end]
	code := -1
	fmt.Sscanf(strings.TrimSpace(out[codeStart:v.cur.offset]), "%d", &code)
	return strings.TrimSpace(strings.ReplaceAll(body, "\r", "")), code
}

// MustShell runs a command that must succeed.
func (v *VM) MustShell(cmd string, timeout time.Duration) string {
	v.t.Helper()
	out, code := v.Shell(cmd, timeout)
	if code != 0 {
		v.t.Fatalf("guest command %q exited %d:\n%s", cmd, code, out)
	}
	return out
}

// PowerOff asks the node to power off: the ACPI power button (system_powerdown), except on arm64
// booted directly, where virt without firmware has no ACPI power button and Debian's kernel no
// gpio-keys driver; there busybox's poweroff in the console shell signals PID 1 (SIGUSR2), which
// takes the same shutdown path.
func (v *VM) PowerOff(archName, boot string) {
	v.t.Helper()
	var err error
	if archName == "arm64" && boot == qemu.BootDirect {
		err = v.Console.Send("poweroff\n")
	} else {
		err = v.Powerdown()
	}
	if err != nil {
		v.t.Fatal(err)
	}
}

// WaitExit waits for QEMU to exit.
func (v *VM) WaitExit(timeout time.Duration) {
	v.t.Helper()
	select {
	case <-v.Done():
	case <-time.After(timeout):
		v.t.Fatalf("QEMU still running %s after the shutdown request", timeout)
	}
}

// AssertCleanConsole fails if the console shows a kernel panic or init's death.
func (v *VM) AssertCleanConsole() {
	v.t.Helper()
	out := v.Console.Output()
	for _, bad := range []string{"Kernel panic", "Attempted to kill init", "panic:"} {
		if strings.Contains(out, bad) {
			v.t.Fatalf("console shows %q:\n%s", bad, tail(out, 3000))
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// FloorLine is what the boot floor's init prints: the floor's ready line.
const FloorLine = "ingot-floor: ready"

// FloorImage writes the image directory of the boot floor for image: the same kernel and command
// line with an initramfs holding only Debian's static busybox, whose /init prints FloorLine and
// powers off. It boots the same ways as image: directly, and under UEFI from a disk laid out like
// image's (same partitions, the same systemd-boot, a UKI made with the same stub as slot A), so a
// floor and a node boot are timed between the same marks on the same devices.
func FloorImage(t testing.TB, image, dir string) {
	t.Helper()
	m, err := manifest.Read(image)
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("floor image of %s: %v", image, err)
		}
	}
	a, err := arch.Lookup(m.Arch)
	must(err)
	prof, _, err := profiles.Builtin(m.Profile)
	must(err)
	f := &debpkg.Fetcher{Cache: cachedir.Default(), Arch: m.Arch}
	unpack := func(name string) string {
		p, err := f.Fetch(context.Background(), name)
		must(err)
		root, err := f.Unpack(context.Background(), p)
		must(err)
		return root
	}
	busybox, sdboot := unpack("busybox-static"), unpack("systemd-boot-efi")

	tree := initramfs.New()
	must(tree.CharDev("/dev/console", 0o600, 5, 1))
	must(tree.CopyFile("/bin/busybox", filepath.Join(busybox, "bin/busybox"), 0o755))
	must(tree.File("/init", []byte("#!/bin/busybox sh\n/bin/busybox echo "+FloorLine+"\n/bin/busybox poweroff -f\n"), 0o755))
	initrd, err := tree.Compressed(0)
	must(err)
	vmlinuz, err := os.ReadFile(filepath.Join(image, manifest.FileKernel))
	must(err)
	stub, err := os.ReadFile(filepath.Join(sdboot, a.EFIStub))
	must(err)
	bootEFI, err := os.ReadFile(filepath.Join(sdboot, a.EFIBoot))
	must(err)
	efi, err := uki.Assemble(stub, []uki.Section{
		{Name: ".osrel", Data: uki.OSRelease(map[string]string{"ID": "ingot-floor", "NAME": "ingot boot floor"})},
		{Name: ".cmdline", Data: []byte(m.Cmdline)},
		{Name: ".linux", Data: vmlinuz},
		{Name: ".initrd", Data: initrd},
	})
	must(err)

	must(os.MkdirAll(dir, 0o755))
	must(os.WriteFile(filepath.Join(dir, manifest.FileInitramfs), initrd, 0o644))
	must(os.WriteFile(filepath.Join(dir, manifest.FileKernel), vmlinuz, 0o644))
	must(os.WriteFile(filepath.Join(dir, manifest.FileUKI), efi, 0o644))
	must(disk.Write(filepath.Join(dir, manifest.FileDisk), disk.Layout{ESPMiB: prof.Disk.ESPMiB, StateMiB: prof.Disk.StateMiB}, []disk.File{
		{Path: a.EFIFallback, Data: bootEFI},
		{Path: "loader/loader.conf", Data: []byte("timeout 0\ndefault ingot-*\neditor no\nconsole-mode keep\n")},
		{Path: build.EntryAPath, Data: []byte("title ingot boot floor\nsort-key ingot\nversion 1\nefi /" + build.SlotAPath + "\n")},
		{Path: build.SlotAPath, Data: efi},
	}))
	data, err := os.ReadFile(filepath.Join(image, manifest.FileManifest))
	must(err)
	must(os.WriteFile(filepath.Join(dir, manifest.FileManifest), data, 0o644))
}

func hostArch() string { return runtime.GOARCH }
