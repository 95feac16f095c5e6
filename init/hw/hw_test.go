package hw

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"ingot.dev/ingot/init/kmod"
)

// sysfs builds a directory laid out like /sys: devices with a modalias, a subsystem link, and a
// driver link when bound.
type sysfs struct {
	t   *testing.T
	dir string
}

func (s sysfs) device(rel, subsystem, modalias, driver string) {
	d := filepath.Join(s.dir, "devices", rel)
	if err := os.MkdirAll(d, 0o755); err != nil {
		s.t.Fatal(err)
	}
	os.WriteFile(filepath.Join(d, "modalias"), []byte(modalias+"\n"), 0o444)
	bus := filepath.Join(s.dir, "bus", subsystem)
	os.MkdirAll(filepath.Join(bus, "devices"), 0o755)
	os.Symlink(d, filepath.Join(bus, "devices", filepath.Base(rel)))
	if driver != "" {
		os.MkdirAll(filepath.Join(bus, "drivers", driver), 0o755)
		os.Symlink(filepath.Join(bus, "drivers", driver), filepath.Join(d, "driver"))
	}
}

func modules(t *testing.T) (*kmod.Deps, []kmod.Alias) {
	dir := t.TempDir()
	dep := strings.Join([]string{
		"kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko",
		"kernel/drivers/virtio/virtio_pci_modern_dev.ko:",
		"kernel/drivers/virtio/virtio.ko:",
		"kernel/drivers/net/virtio_net.ko: kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko",
		"kernel/net/core/failover.ko:",
		"kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko",
		"kernel/drivers/nvme/host/nvme-core.ko:",
		"kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko:",
		"kernel/drivers/broken.ko:",
	}, "\n") + "\n"
	alias := strings.Join([]string{
		"alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci",
		"alias virtio:d00000001v* virtio_net",
		"alias pci:v*d*sv*sd*bc01sc08i02* nvme",
		"alias pci:v00008086d000010D3sv*sd*bc*sc*i* e1000e",
		"alias pci:v0000ABCDd*sv*sd*bc*sc*i* broken",
		"alias pci:v00008086d00001234sv*sd*bc*sc*i* notshipped",
		"alias acpi*:PNP0A08:* broken",
	}, "\n") + "\n"
	os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644)
	os.WriteFile(filepath.Join(dir, "modules.alias"), []byte(alias), 0o644)
	deps, err := kmod.ReadDeps(dir)
	if err != nil {
		t.Fatal(err)
	}
	aliases, err := kmod.ReadAliases(dir)
	if err != nil {
		t.Fatal(err)
	}
	return deps, aliases
}

func TestMatcher(t *testing.T) {
	m := NewMatcher(modules(t))
	for alias, want := range map[string][]string{
		"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00": {"virtio_pci"},
		"pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02": {"nvme"},
		"pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00": {"e1000e"},
		"pci:v00008086d00001234sv00008086sd00000000bc02sc00i00": nil, // the image does not ship it
		"virtio:d00000001v00001AF4":                             {"virtio_net"},
		"virtio:d00000002v00001AF4":                             nil,
		"acpi:PNP0A08:PNP0A03:":                                 {"broken"}, // a pattern whose prefix has a wildcard
		"platform:serial8250":                                   nil,
	} {
		if got := m.Modules(alias); !slices.Equal(got, want) {
			t.Errorf("Modules(%s) = %v, want %v", alias, got, want)
		}
	}
}

// recorder is a fake module loader: it records loads and checks each module's dependencies
// were loaded before it.
type recorder struct {
	t      *testing.T
	deps   *kmod.Deps
	mu     sync.Mutex
	loaded []string
	fail   map[string]bool
	onLoad func(name string)
}

func (r *recorder) load(path, params string) error {
	name := kmod.Name(path)
	needs, _ := r.deps.Needs(name)
	r.mu.Lock()
	for _, n := range needs {
		if !slices.Contains(r.loaded, n) {
			r.t.Errorf("%s loaded before its dependency %s", name, n)
		}
	}
	if slices.Contains(r.loaded, name) {
		r.t.Errorf("%s loaded twice", name)
	}
	r.loaded = append(r.loaded, name)
	r.mu.Unlock()
	if r.fail[name] {
		return errors.New("load module " + name + ": invalid argument")
	}
	if r.onLoad != nil {
		r.onLoad(name)
	}
	return nil
}

// Coldplug loads what the devices need, scans again for the devices a driver created, and keeps
// going past a module that fails.
func TestColdplug(t *testing.T) {
	deps, aliases := modules(t)
	sys := sysfs{t, t.TempDir()}
	sys.device("pci0000:00/0000:00:02.0", "pci", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", "")
	sys.device("pci0000:00/0000:00:03.0", "pci", "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02", "")
	sys.device("pci0000:00/0000:00:04.0", "pci", "pci:v0000ABCDd00000001sv00000000sd00000000bc02sc00i00", "")
	sys.device("platform/serial8250", "platform", "platform:serial8250", "serial8250")
	// A device on no bus, and a bus device without a modalias: neither is listed.
	os.MkdirAll(filepath.Join(sys.dir, "devices", "virtual", "net", "lo"), 0o755)
	os.WriteFile(filepath.Join(sys.dir, "devices", "virtual", "net", "lo", "modalias"), []byte("net:lo\n"), 0o444)
	os.MkdirAll(filepath.Join(sys.dir, "devices", "system", "cpu0"), 0o755)
	os.MkdirAll(filepath.Join(sys.dir, "bus", "cpu", "devices"), 0o755)
	os.Symlink(filepath.Join(sys.dir, "devices", "system", "cpu0"), filepath.Join(sys.dir, "bus", "cpu", "devices", "cpu0"))
	rec := &recorder{t: t, deps: deps, fail: map[string]bool{"broken": true}}
	rec.onLoad = func(name string) {
		if name == "virtio_pci" { // the transport finds the virtio device behind it
			sys.device("pci0000:00/0000:00:02.0/virtio0", "virtio", "virtio:d00000001v00001AF4", "")
		}
	}
	l := &Loader{Deps: deps, Load: rec.load}
	res, err := Coldplug(context.Background(), sys.dir, NewMatcher(deps, aliases), l)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"failover", "nvme", "nvme_core", "virtio", "virtio_net", "virtio_pci", "virtio_pci_modern_dev"}
	if !slices.Equal(res.Loaded, want) {
		t.Errorf("loaded %v, want %v", res.Loaded, want)
	}
	if res.Rounds != 3 || res.Devices != 5 {
		t.Errorf("rounds %d devices %d, want 3 rounds (the last finds nothing new) and 5 devices", res.Rounds, res.Devices)
	}
	if len(res.Errs) != 1 || !strings.Contains(res.Errs[0].Error(), "broken") {
		t.Errorf("errors %v, want the broken module's", res.Errs)
	}
	devs, err := Scan(sys.dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 5 || devs[4].Path != "platform/serial8250" || devs[4].Driver != "serial8250" || devs[4].Subsystem != "platform" || devs[1].Subsystem != "virtio" {
		t.Errorf("scan: %+v", devs)
	}
}

// Many devices asking for one module at once load it once, after its dependencies.
func TestLoaderConcurrent(t *testing.T) {
	deps, _ := modules(t)
	rec := &recorder{t: t, deps: deps}
	l := &Loader{Deps: deps, Load: rec.load}
	var wg sync.WaitGroup
	for range 20 {
		for _, m := range []string{"virtio_net", "virtio_pci", "nvme"} {
			wg.Add(1)
			go func() { defer wg.Done(); l.Ensure(m) }()
		}
	}
	wg.Wait()
	if len(rec.loaded) != 7 {
		t.Errorf("loads %v, want 7 modules once each", rec.loaded)
	}
	if err := l.Ensure("nosuch"); err == nil || !strings.Contains(err.Error(), "nosuch") {
		t.Errorf("a module the image lacks: %v", err)
	}
}

func TestParseUevent(t *testing.T) {
	ev, err := ParseUevent([]byte("add@/devices/pci0000:00/0000:00:05.0\x00ACTION=add\x00DEVPATH=/devices/pci0000:00/0000:00:05.0\x00SUBSYSTEM=pci\x00MODALIAS=pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00\x00SEQNUM=1234\x00"))
	if err != nil || ev.Action != "add" || ev.Env["MODALIAS"] != "pci:v00008086d000010D3sv00008086sd00000000bc02sc00i00" || ev.Env["SUBSYSTEM"] != "pci" {
		t.Fatalf("%+v %v", ev, err)
	}
	for _, bad := range []string{"", "libudev\x00\xfe\xed", "add@/x\x00SUBSYSTEM=pci\x00"} {
		if _, err := ParseUevent([]byte(bad)); err == nil {
			t.Errorf("ParseUevent(%q) took it", bad)
		}
	}
}

func TestShow(t *testing.T) {
	deps, aliases := modules(t)
	var b strings.Builder
	err := Show(&b, []Device{
		{Path: "pci0000:00/0000:00:03.0", Subsystem: "pci", Modalias: "pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02", Driver: "nvme"},
		{Path: "pci0000:00/0000:00:09.0", Subsystem: "pci", Modalias: "pci:v00008086d00001234sv00008086sd00000000bc02sc00i00"},
	}, NewMatcher(deps, aliases))
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"0000:00:03.0  pci        nvme    nvme", "0000:00:09.0  pci        -       -", "2 devices, 1 with no driver bound"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}
