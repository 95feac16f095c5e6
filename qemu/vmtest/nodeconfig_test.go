package vmtest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"ingot.dev/ingot/image/configdrive"
	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/qemu"
)

// nodeTOML is a node config naming the node and giving eth0 a static address in place of the
// dev profile's DHCP.
func nodeTOML(hostname, addr string) string {
	return "hostname = \"" + hostname + "\"\n\n[sysctls]\n\"vm.swappiness\" = \"7\"\n\n" +
		"[[network.interface]]\nname = \"eth0\"\naddresses = [\"" + addr + "\"]\n"
}

// configDrive writes a config drive as `ingot node-config drive` does.
func configDrive(t *testing.T, path string, f configdrive.Format, data string) {
	t.Helper()
	if err := configdrive.Write(path, f, []byte(data), 0); err != nil {
		t.Fatal(err)
	}
}

// nodeFacts is what a node says about itself from the console shell.
type nodeFacts struct {
	hostname, machineID, eth0, hosts, osRelease, keptMode, swappiness string
}

func facts(t *testing.T, vm *VM) nodeFacts {
	t.Helper()
	vm.Prompt(shellTimeout)
	return nodeFacts{
		hostname:   vm.MustShell("hostname", shellTimeout),
		machineID:  vm.MustShell("cat /etc/machine-id", shellTimeout),
		eth0:       vm.MustShell("ip -4 addr show dev eth0", shellTimeout),
		hosts:      vm.MustShell("cat /etc/hosts", shellTimeout),
		osRelease:  vm.MustShell("cat /etc/os-release", shellTimeout),
		keptMode:   vm.MustShell("stat -c %a /var/lib/ingot/node /var/lib/ingot/node/node.toml", shellTimeout),
		swappiness: vm.MustShell("cat /proc/sys/vm/swappiness", shellTimeout),
	}
}

func powerOff(t *testing.T, vm *VM, archName string) {
	t.Helper()
	vm.PowerOff(archName, qemu.BootDirect)
	vm.WaitExit(powerTimeout)
	vm.AssertCleanConsole()
}

var machineIDRe = regexp.MustCompile(`^[0-9a-f]{32}$`)

// TestNodeConfig boots one dev image as three nodes: one configured through fw_cfg, one through
// a vfat config drive, one through an ISO 9660 drive named by ingot.node=. Each takes its hostname, static address and sysctl from its node.toml and makes
// its own machine-id; a reboot without the source keeps the identity; a config with a bad key
// boots anyway with the console naming the key.
func TestNodeConfig(t *testing.T) {
	testgate.Short(t, "VM boots")
	for _, archName := range []string{"amd64", "arm64"} {
		t.Run(archName, func(t *testing.T) { testNodeConfig(t, archName) })
	}
}

func testNodeConfig(t *testing.T, archName string) {
	RequireVM(t, archName)
	img := Image(t, "dev", archName)
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	diskA := filepath.Join(dir, "a.raw")
	if err := qemu.CopySparse(filepath.Join(img, manifest.FileDisk), diskA); err != nil {
		t.Fatal(err)
	}
	fwcfg := map[string]string{"opt/ingot/node.toml": write("a.toml", nodeTOML("node-fwcfg", "10.0.2.51/24"))}

	// Node A, through fw_cfg.
	vm := BootWith(t, qemu.Config{Image: img, Boot: qemu.BootDirect, Disk: diskA, FwCfg: fwcfg})
	took := vm.WaitReady(bootTimeout)
	t.Logf("node A (fw_cfg): QEMU start to ready %d ms", took.Milliseconds())
	a := facts(t, vm)
	console := vm.Console.Output()
	powerOff(t, vm, archName)
	logPhases(t, "node A", console)
	if !strings.Contains(console, "node config read source=fwcfg from=fw_cfg:opt/ingot/node.toml") {
		t.Errorf("node A: console does not say the node config came by fw_cfg")
	}
	if a.hostname != "node-fwcfg" || !machineIDRe.MatchString(a.machineID) || !strings.Contains(a.eth0, "inet 10.0.2.51/24") ||
		!strings.Contains(a.hosts, "node-fwcfg") || a.swappiness != "7" {
		t.Fatalf("node A: %+v", a)
	}
	if a.keptMode != "700\n600" {
		t.Errorf("node A: kept config dir and file modes %q, want 700 and 600", a.keptMode)
	}
	for _, k := range []string{"NAME=", "ID=ingot", "VERSION_ID=", "PRETTY_NAME=", "BUILD_ID="} {
		if !strings.Contains(a.osRelease, k) {
			t.Errorf("node A: /etc/os-release lacks %s:\n%s", k, a.osRelease)
		}
	}

	// Node A again, without the source: the kept config and the same machine-id.
	vm = BootWith(t, qemu.Config{Image: img, Boot: qemu.BootDirect, Disk: diskA})
	vm.WaitReady(bootTimeout)
	a2 := facts(t, vm)
	console = vm.Console.Output()
	powerOff(t, vm, archName)
	if !strings.Contains(console, "node config kept from an earlier boot") {
		t.Errorf("node A reboot: console does not say the kept config was used")
	}
	if a2.hostname != a.hostname || a2.machineID != a.machineID || !strings.Contains(a2.eth0, "inet 10.0.2.51/24") {
		t.Fatalf("node A reboot without source lost its identity: %+v, was %+v", a2, a)
	}

	// Node A with a misspelt key: it boots, the console names the key, the kept config applies.
	bad := map[string]string{"opt/ingot/node.toml": write("bad.toml", "hostname = \"node-typo\"\nhostnme = \"x\"\n")}
	vm = BootWith(t, qemu.Config{Image: img, Boot: qemu.BootDirect, Disk: diskA, FwCfg: bad})
	vm.WaitReady(bootTimeout)
	a3 := facts(t, vm)
	console = vm.Console.Output()
	powerOff(t, vm, archName)
	var rejected []string
	for _, l := range strings.Split(console, "\n") {
		if strings.Contains(l, "node config rejected") {
			rejected = append(rejected, strings.TrimSpace(l))
		}
	}
	if len(rejected) != 1 || !strings.Contains(rejected[0], "fw_cfg:opt/ingot/node.toml:2") || !strings.Contains(rejected[0], "hostnme") {
		t.Errorf("bad key: console lines %q, want one naming fw_cfg:opt/ingot/node.toml:2 and hostnme", rejected)
	} else {
		t.Logf("bad key: %s", rejected[0])
	}
	if a3.hostname != "node-fwcfg" || a3.machineID != a.machineID {
		t.Errorf("bad key: hostname %q machine-id %q, want the kept node-fwcfg %s", a3.hostname, a3.machineID, a.machineID)
	}

	// Node B, a fresh disk of the same image, through a vfat config drive.
	drive := filepath.Join(dir, "config.img")
	configDrive(t, drive, configdrive.VFAT, nodeTOML("node-drive", "10.0.2.52/24"))
	vm = BootWith(t, qemu.Config{Image: img, Boot: qemu.BootDirect, Drives: []string{drive}})
	took = vm.WaitReady(bootTimeout)
	t.Logf("node B (config drive): QEMU start to ready %d ms", took.Milliseconds())
	b := facts(t, vm)
	console = vm.Console.Output()
	powerOff(t, vm, archName)
	if !strings.Contains(console, "node config read source=drive from=/dev/vdb:node.toml") {
		t.Errorf("node B: console does not say the node config came from the drive /dev/vdb")
	}
	if b.hostname != "node-drive" || !machineIDRe.MatchString(b.machineID) || !strings.Contains(b.eth0, "inet 10.0.2.52/24") {
		t.Fatalf("node B: %+v", b)
	}
	if b.machineID == a.machineID {
		t.Errorf("nodes A and B share machine-id %s", a.machineID)
	}
	logPhases(t, "node B", console)

	// Node C: an ISO 9660 config drive that ingot.node=drive names, with a fw_cfg config present
	// that the command line tells the node to ignore.
	iso := filepath.Join(dir, "config.iso")
	configDrive(t, iso, configdrive.ISO, nodeTOML("node-iso", "10.0.2.53/24"))
	vm = BootWith(t, qemu.Config{Image: img, Boot: qemu.BootDirect, Drives: []string{iso}, FwCfg: fwcfg, ExtraCmdline: "ingot.node=drive"})
	vm.WaitReady(bootTimeout)
	c := facts(t, vm)
	console = vm.Console.Output()
	powerOff(t, vm, archName)
	if c.hostname != "node-iso" || !strings.Contains(c.eth0, "inet 10.0.2.53/24") || c.machineID == a.machineID || c.machineID == b.machineID {
		t.Fatalf("node C (ISO drive named by ingot.node=drive): %+v", c)
	}
	logPhases(t, "node C", console)
}

// logPhases logs what reading the node config and loading modules took, for the record of what
// the feature costs at boot.
func logPhases(t *testing.T, node, console string) {
	for _, l := range strings.Split(console, "\n") {
		if strings.Contains(l, "boot phase done phase=node-config") || strings.Contains(l, "boot phase done phase=modules") {
			t.Logf("%s: %s", node, strings.TrimSpace(l))
		}
	}
}
