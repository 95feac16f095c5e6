// Package hw finds the machine's devices and loads the kernel modules they need, as udev's
// coldplug and hotplug do: every device the kernel knows has a modalias in sysfs (pci:v00008086d…,
// virtio:d00000001v…, usb:v…), and the image's modules.alias (written by the builder for the
// modules the image ships) says which module drives it. A profile then ships drivers for a class of
// machines (module sets) without naming what each machine has.
//
// Loading a driver can make new devices appear (a PCI virtio transport creates the virtio devices
// behind it), so Coldplug scans again until a scan loads nothing; devices that appear later (a USB
// stick, a hot-added disk) arrive as uevents, which Hotplug handles the same way.
package hw

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"

	"ingot.dev/ingot/init/kmod"
)

// Device is one device in sysfs that has a modalias.
type Device struct {
	Path      string // under /sys/devices, without that prefix
	Subsystem string // pci, virtio, usb, platform, …
	Modalias  string
	Driver    string   // the driver bound to it now; "" when none
	Modules   []string // the image's modules whose aliases match Modalias
}

// Scan lists the devices on the machine's buses (sys/bus/*/devices) that have a modalias, sorted
// by path. Drivers bind to bus devices only, so this is all a coldplug must look at, and far
// fewer directories than the whole of sys/devices (which matters under emulation). sys is /sys
// on a node, a directory laid out like it in tests.
func Scan(sys string) ([]Device, error) {
	buses, err := os.ReadDir(filepath.Join(sys, "bus"))
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", filepath.Join(sys, "bus"), err)
	}
	devRoot, err := filepath.EvalSymlinks(filepath.Join(sys, "devices"))
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", filepath.Join(sys, "devices"), err)
	}
	seen := map[string]bool{}
	var out []Device
	for _, bus := range buses {
		dir := filepath.Join(sys, "bus", bus.Name(), "devices")
		entries, err := os.ReadDir(dir)
		if err != nil {
			continue // a bus with no devices directory
		}
		for _, e := range entries {
			real, err := filepath.EvalSymlinks(filepath.Join(dir, e.Name()))
			if err != nil || seen[real] {
				continue // a device that went away while we looked
			}
			seen[real] = true
			b, err := os.ReadFile(filepath.Join(real, "modalias"))
			if err != nil {
				continue
			}
			alias := strings.TrimSpace(string(b))
			if alias == "" {
				continue
			}
			rel, err := filepath.Rel(devRoot, real)
			if err != nil || strings.HasPrefix(rel, "..") {
				rel = real
			}
			out = append(out, Device{Path: rel, Subsystem: bus.Name(), Modalias: alias, Driver: linkBase(filepath.Join(real, "driver"))})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func linkBase(p string) string {
	t, err := os.Readlink(p)
	if err != nil {
		return ""
	}
	return path.Base(t)
}

// Matcher resolves modaliases to the image's modules. Aliases are indexed by their bus prefix
// (what comes before the first ':'), so a device is matched against its bus's patterns only: the
// generic kernel's aliases for the metal sets run to thousands.
type Matcher struct {
	deps     *kmod.Deps
	byPrefix map[string][]kmod.Alias
	wild     []kmod.Alias // patterns whose prefix itself has a wildcard
}

// Open reads the image's modules.dep and modules.alias from modulesDir (/lib/modules/<release>).
func Open(modulesDir string) (*kmod.Deps, *Matcher, error) {
	deps, err := kmod.ReadDeps(modulesDir)
	if err != nil {
		return nil, nil, err
	}
	aliases, err := kmod.ReadAliases(modulesDir)
	if err != nil {
		return nil, nil, err
	}
	return deps, NewMatcher(deps, aliases), nil
}

// NewMatcher indexes aliases for the modules deps has.
func NewMatcher(deps *kmod.Deps, aliases []kmod.Alias) *Matcher {
	m := &Matcher{deps: deps, byPrefix: map[string][]kmod.Alias{}}
	for _, a := range aliases {
		if !deps.Has(a.Module) {
			continue
		}
		prefix, _, ok := strings.Cut(a.Pattern, ":")
		if !ok || strings.ContainsAny(prefix, "*?[\\") {
			m.wild = append(m.wild, a)
			continue
		}
		m.byPrefix[prefix] = append(m.byPrefix[prefix], a)
	}
	return m
}

// Modules returns the modules whose aliases match modalias, each once, in modules.alias order.
func (m *Matcher) Modules(modalias string) []string {
	prefix, _, _ := strings.Cut(modalias, ":")
	var out []string
	for _, list := range [][]kmod.Alias{m.byPrefix[prefix], m.wild} {
		for _, a := range list {
			if ok, _ := path.Match(a.Pattern, modalias); ok && !contains(out, a.Module) {
				out = append(out, a.Module)
			}
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Loader loads modules with their dependencies, each at most once however many devices or
// goroutines ask for it, and modules that do not depend on each other at the same time.
type Loader struct {
	Deps *kmod.Deps
	// Load loads one module file (kmod.Load; a test's fake).
	Load func(path, params string) error

	mu    sync.Mutex
	state map[string]*loadState
}

type loadState struct {
	done chan struct{}
	err  error
}

// Ensure loads name after its dependencies and returns when it is loaded (or failed). Concurrent
// calls for one module wait for the same load.
func (l *Loader) Ensure(name string) error { return l.ensure(name, 0) }

func (l *Loader) ensure(name string, depth int) error {
	if depth > 64 {
		return fmt.Errorf("module %s: dependency chain too deep (cycle?)", name)
	}
	l.mu.Lock()
	if l.state == nil {
		l.state = map[string]*loadState{}
	}
	if s, ok := l.state[name]; ok {
		l.mu.Unlock()
		<-s.done
		return s.err
	}
	s := &loadState{done: make(chan struct{})}
	l.state[name] = s
	l.mu.Unlock()
	defer close(s.done)
	deps, err := l.Deps.Needs(name)
	if err != nil {
		s.err = err
		return err
	}
	// Dependencies in parallel: each waits for its own dependencies first.
	errs := make([]error, len(deps))
	var wg sync.WaitGroup
	for i, d := range deps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = l.ensure(d, depth+1)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.err = fmt.Errorf("module %s: %w", name, err)
		return s.err
	}
	s.err = l.Load(l.Deps.Path(name), "")
	return s.err
}

// Known reports whether a load of name has been started (it may have failed).
func (l *Loader) Known(name string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, ok := l.state[name]
	return ok
}

// Loaded reports the modules Ensure has loaded without error, sorted.
func (l *Loader) Loaded() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for n, s := range l.state {
		select {
		case <-s.done:
			if s.err == nil {
				out = append(out, n)
			}
		default:
		}
	}
	sort.Strings(out)
	return out
}

// Result is what a coldplug did.
type Result struct {
	Devices int      // devices with a modalias seen in the last scan
	Loaded  []string // modules loaded for devices, sorted
	Rounds  int      // scans
	Errs    []error  // modules that failed to load (the node boots on without them)
}

// Coldplug matches every device under sys against m and loads what matches, in parallel, then
// scans again while the previous round loaded something new (drivers create devices).
func Coldplug(ctx context.Context, sys string, m *Matcher, l *Loader) (Result, error) {
	var res Result
	tried := map[string]bool{}
	for res.Rounds < 8 {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		devs, err := Scan(sys)
		if err != nil {
			return res, err
		}
		res.Rounds++
		res.Devices = len(devs)
		var want []string
		for _, d := range devs {
			for _, mod := range m.Modules(d.Modalias) {
				if !tried[mod] {
					tried[mod] = true
					want = append(want, mod)
				}
			}
		}
		if len(want) == 0 {
			break
		}
		errs := make([]error, len(want))
		var wg sync.WaitGroup
		for i, mod := range want {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = l.Ensure(mod)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				res.Errs = append(res.Errs, err)
			}
		}
	}
	res.Loaded = l.Loaded()
	return res, nil
}

// Show writes devs as a table: path, subsystem, the driver bound now, the image's modules that
// match, and the modalias; then how many devices have no driver.
func Show(w io.Writer, devs []Device, m *Matcher) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tSUBSYSTEM\tDRIVER\tMODULES\tMODALIAS")
	none := 0
	for _, d := range devs {
		mods := strings.Join(m.Modules(d.Modalias), ",")
		driver := d.Driver
		if driver == "" {
			driver = "-"
			none++
		}
		if mods == "" {
			mods = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Path, d.Subsystem, driver, mods, d.Modalias)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d devices, %d with no driver bound\n", len(devs), none)
	return err
}
