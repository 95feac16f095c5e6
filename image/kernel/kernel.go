// Package kernel locates a Linux kernel and its modules (an unpacked Debian linux-image package or
// a directory laid out like one) and computes the closure of the modules a profile asks for.
//
// Debian bookworm's linux-image packages ship no modules.dep, so dependencies are read from each
// module's own .modinfo section ("depends="), which works the same for every architecture and
// needs no depmod for the target.
package kernel

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Kernel is a kernel image plus its module tree.
type Kernel struct {
	Release    string // uname -r, the name of the lib/modules directory
	Image      string // path of vmlinuz
	ModulesDir string // path of lib/modules/<Release>

	index   map[string]string // module name → path relative to ModulesDir
	builtin map[string]bool
}

// Module is one loadable module in the closure.
type Module struct {
	Name string
	Path string   // relative to ModulesDir, e.g. kernel/drivers/block/virtio_blk.ko
	Deps []string // names of the modules it needs, loaded before it
}

// FromRoot finds the kernel in a directory laid out like an unpacked linux-image package:
// boot/vmlinuz-<release> and lib/modules/<release>/ (or usr/lib/modules).
func FromRoot(root string) (*Kernel, error) {
	images, _ := filepath.Glob(filepath.Join(root, "boot", "vmlinuz-*"))
	if len(images) != 1 {
		return nil, fmt.Errorf("kernel in %s: want exactly one boot/vmlinuz-*, found %d", root, len(images))
	}
	release := strings.TrimPrefix(filepath.Base(images[0]), "vmlinuz-")
	for _, base := range []string{"lib/modules", "usr/lib/modules"} {
		dir := filepath.Join(root, base, release)
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			return New(images[0], dir)
		}
	}
	return nil, fmt.Errorf("kernel in %s: no lib/modules/%s directory", root, release)
}

// New uses the given kernel image and module directory (lib/modules/<release>).
func New(image, modulesDir string) (*Kernel, error) {
	if st, err := os.Stat(image); err != nil || st.IsDir() {
		return nil, fmt.Errorf("kernel image %s: not a file", image)
	}
	if st, err := os.Stat(modulesDir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("kernel modules %s: not a directory", modulesDir)
	}
	k := &Kernel{Release: filepath.Base(modulesDir), Image: image, ModulesDir: modulesDir,
		index: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(modulesDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		switch {
		case strings.HasSuffix(name, ".ko"):
			rel, _ := filepath.Rel(modulesDir, p)
			k.index[Normalize(strings.TrimSuffix(name, ".ko"))] = rel
		case strings.HasSuffix(name, ".ko.xz"), strings.HasSuffix(name, ".ko.zst"), strings.HasSuffix(name, ".ko.gz"):
			return fmt.Errorf("kernel modules %s: compressed module %s is not supported; use a kernel with plain .ko modules", modulesDir, name)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if data, err := os.ReadFile(filepath.Join(modulesDir, "modules.builtin")); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				k.builtin[Normalize(strings.TrimSuffix(filepath.Base(line), ".ko"))] = true
			}
		}
	}
	if len(k.index) == 0 {
		return nil, fmt.Errorf("kernel modules %s: no modules found", modulesDir)
	}
	return k, nil
}

// Normalize maps a module name to the kernel's canonical spelling (dashes become underscores).
func Normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }

// Builtin reports whether the module is compiled into the kernel.
func (k *Kernel) Builtin(name string) bool { return k.builtin[Normalize(name)] }

// Has reports whether the kernel has a module file of that name (not built in).
func (k *Kernel) Has(name string) bool {
	_, ok := k.index[Normalize(name)]
	return ok
}

// Closure returns the modules needed to load names, dependencies before the modules that need
// them, each once. Names that are built into the kernel are skipped; a name that is neither a
// module nor built in is an error naming it.
func (k *Kernel) Closure(names []string) ([]Module, error) {
	var out []Module
	done := map[string]bool{}
	visiting := map[string]bool{}
	var visit func(name, from string) error
	visit = func(name, from string) error {
		name = Normalize(name)
		if done[name] {
			return nil
		}
		if visiting[name] {
			return fmt.Errorf("kernel module %s: dependency cycle", name)
		}
		rel, ok := k.index[name]
		if !ok {
			if k.builtin[name] {
				done[name] = true
				return nil
			}
			if from != "" {
				return fmt.Errorf("kernel module %s (needed by %s) does not exist in kernel %s", name, from, k.Release)
			}
			return fmt.Errorf("kernel module %q does not exist in kernel %s", name, k.Release)
		}
		visiting[name] = true
		deps, err := moduleDepends(filepath.Join(k.ModulesDir, rel))
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		visiting[name] = false
		done[name] = true
		var loadable []string
		for _, d := range deps {
			if _, ok := k.index[Normalize(d)]; ok {
				loadable = append(loadable, Normalize(d))
			}
		}
		out = append(out, Module{Name: name, Path: rel, Deps: loadable})
		return nil
	}
	for _, n := range names {
		if err := visit(n, ""); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// moduleDepends reads the depends= entry of a module's .modinfo section.
func moduleDepends(path string) ([]string, error) {
	info, err := modinfo(path)
	if err != nil {
		return nil, err
	}
	if v := info["depends"]; len(v) > 0 && v[0] != "" {
		return strings.Split(v[0], ","), nil
	}
	return nil, nil
}

// modinfo reads a module's .modinfo section: key=value strings, a key may repeat (alias).
func modinfo(path string) (map[string][]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read kernel module %s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("read kernel module %s: no .modinfo section", path)
	}
	data, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read kernel module %s: %w", path, err)
	}
	out := map[string][]string{}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if k, v, ok := bytes.Cut(kv, []byte("=")); ok {
			out[string(k)] = append(out[string(k)], string(v))
		}
	}
	return out, nil
}

// ModulesDep renders the closure as a modules.dep file (the format modprobe and ingot's init read):
// each line names a module and every module it transitively needs, nearest first.
func ModulesDep(mods []Module) []byte {
	byName := map[string]Module{}
	for _, m := range mods {
		byName[m.Name] = m
	}
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	sorted := append([]Module(nil), mods...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Path < sorted[j].Path })
	for _, m := range sorted {
		var deps []string
		seen := map[string]bool{}
		var walk func(names []string)
		walk = func(names []string) {
			for _, n := range names {
				if seen[n] {
					continue
				}
				seen[n] = true
				deps = append(deps, byName[n].Path)
				walk(byName[n].Deps)
			}
		}
		walk(m.Deps)
		fmt.Fprintf(w, "%s:", m.Path)
		for _, d := range deps {
			fmt.Fprintf(w, " %s", d)
		}
		fmt.Fprintln(w)
	}
	w.Flush()
	return buf.Bytes()
}

// ModulesAlias renders modules.alias for mods from each module's own alias= entries, as depmod
// does: Debian's kernel packages do not ship modules.alias (depmod writes it on install), and a
// node's modprobe and PID 1's hardware coldplug resolve what the kernel asks for by alias
// (nft-expr-numgen, net-pf-16-proto-12, a device's modalias) to a module the image carries.
func (k *Kernel) ModulesAlias(mods []Module) ([]byte, error) {
	var out bytes.Buffer
	for _, m := range mods {
		info, err := modinfo(filepath.Join(k.ModulesDir, m.Path))
		if err != nil {
			return nil, fmt.Errorf("kernel modules: %w", err)
		}
		for _, a := range info["alias"] {
			if a != "" && !strings.ContainsAny(a, " \t\n") {
				fmt.Fprintf(&out, "alias %s %s\n", a, m.Name)
			}
		}
	}
	return out.Bytes(), nil
}

// Firmware lists the firmware files mods may load (each module's firmware= entries, paths under
// /lib/firmware), each with the modules that name it, sorted by file.
func (k *Kernel) Firmware(mods []Module) ([]FirmwareFile, error) {
	byName := map[string][]string{}
	for _, m := range mods {
		info, err := modinfo(filepath.Join(k.ModulesDir, m.Path))
		if err != nil {
			return nil, fmt.Errorf("kernel modules: %w", err)
		}
		for _, f := range info["firmware"] {
			// A relative path without .. : it is looked for under /lib/firmware.
			if f == "" || strings.HasPrefix(f, "/") || strings.Contains(f, "..") || strings.ContainsAny(f, " \t\n*?[") {
				continue
			}
			if !slices.Contains(byName[f], m.Name) {
				byName[f] = append(byName[f], m.Name)
			}
		}
	}
	out := make([]FirmwareFile, 0, len(byName))
	for f, ms := range byName {
		out = append(out, FirmwareFile{Path: f, Modules: ms})
	}
	slices.SortFunc(out, func(a, b FirmwareFile) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// FirmwareFile is a firmware file and the modules that may load it.
type FirmwareFile struct {
	Path    string   // under /lib/firmware, e.g. rtl_nic/rtl8168h-2.fw
	Modules []string // e.g. r8169
}
