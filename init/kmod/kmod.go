// Package kmod loads kernel modules with their dependencies, reading the modules.dep that the image
// builder wrote. Only the modules asked for and what they need are loaded: each module costs
// tens of milliseconds under emulation.
package kmod

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Deps is a parsed modules.dep: module name → its path and the paths it depends on.
type Deps struct {
	dir  string
	mods map[string]entry
}

type entry struct {
	path string
	deps []string // names
}

// Name turns a module path into its name: kernel/drivers/block/virtio_blk.ko → virtio_blk.
func Name(path string) string {
	base := filepath.Base(path)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// ReadDeps parses dir/modules.dep.
func ReadDeps(dir string) (*Deps, error) {
	f, err := os.Open(filepath.Join(dir, "modules.dep"))
	if err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	defer f.Close()
	d := &Deps{dir: dir, mods: map[string]entry{}}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		mod, rest, ok := strings.Cut(text, ":")
		if !ok {
			return nil, fmt.Errorf("modules.dep line %d: missing ':'", line)
		}
		e := entry{path: strings.TrimSpace(mod)}
		for _, dep := range strings.Fields(rest) {
			e.deps = append(e.deps, Name(dep))
		}
		d.mods[Name(e.path)] = e
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	return d, nil
}

// Order returns the module names to load for names, dependencies first, each once.
func (d *Deps) Order(names []string) ([]string, error) {
	var out []string
	done := map[string]bool{}
	var visit func(n string, depth int) error
	visit = func(n string, depth int) error {
		n = strings.ReplaceAll(n, "-", "_")
		if done[n] {
			return nil
		}
		if depth > 64 {
			return fmt.Errorf("module %s: dependency chain too deep (cycle?)", n)
		}
		e, ok := d.mods[n]
		if !ok {
			return fmt.Errorf("module %s: not in modules.dep", n)
		}
		// modules.dep lists transitive dependencies nearest first; load the farthest first.
		for i := len(e.deps) - 1; i >= 0; i-- {
			if err := visit(e.deps[i], depth+1); err != nil {
				return err
			}
		}
		done[n] = true
		out = append(out, n)
		return nil
	}
	for _, n := range names {
		if err := visit(n, 0); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Needs returns the modules name depends on (modules.dep's list: all of them, nearest first).
func (d *Deps) Needs(name string) ([]string, error) {
	e, ok := d.mods[Name(name)]
	if !ok {
		return nil, fmt.Errorf("module %s: not in modules.dep", name)
	}
	return e.deps, nil
}

// Path returns the absolute path of a module's file.
func (d *Deps) Path(name string) string { return filepath.Join(d.dir, d.mods[name].path) }

// Load loads one module file. A module that is already loaded is not an error.
func Load(path, params string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module %s: %w", Name(path), err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), params, 0); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return nil
		}
		return fmt.Errorf("load module %s: %w", Name(path), err)
	}
	return nil
}

// LoadAll loads names and their dependencies in order, returning the names loaded.
func (d *Deps) LoadAll(names []string) ([]string, error) {
	order, err := d.Order(names)
	if err != nil {
		return nil, err
	}
	for _, n := range order {
		if err := Load(d.Path(n), ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}
