package kmod

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// The kernel loads modules on demand by running a modprobe (/proc/sys/kernel/modprobe, by
// default /sbin/modprobe) with the module's name or an alias: nft-expr-numgen for an nftables
// expression, net-pf-16-proto-12 for a netlink family, a device's modalias. On a node that is the
// node binary itself (a symlink named modprobe), resolving against the modules.dep and
// modules.alias the image builder wrote for the modules the image carries.

// Alias is one line of modules.alias: a shell-style pattern and the module it names.
type Alias struct{ Pattern, Module string }

// ReadAliases parses dir/modules.alias; a missing file is no aliases.
func ReadAliases(dir string) ([]Alias, error) {
	f, err := os.Open(filepath.Join(dir, "modules.alias"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read modules.alias: %w", err)
	}
	defer f.Close()
	var out []Alias
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) == 3 && fl[0] == "alias" {
			out = append(out, Alias{Pattern: fl[1], Module: Name(fl[2])})
		}
	}
	return out, sc.Err()
}

// Resolve returns the modules name stands for: itself when the image has a module of that name,
// otherwise every module an alias pattern matching it names, in modules.alias order, each once.
func (d *Deps) Resolve(name string, aliases []Alias) []string {
	if n := Name(name); d.Has(n) {
		return []string{n}
	}
	var out []string
	seen := map[string]bool{}
	for _, a := range aliases {
		if ok, _ := path.Match(a.Pattern, name); ok && d.Has(a.Module) && !seen[a.Module] {
			seen[a.Module] = true
			out = append(out, a.Module)
		}
	}
	return out
}

// Has reports whether the image carries a module of that name.
func (d *Deps) Has(name string) bool {
	_, ok := d.mods[Name(name)]
	return ok
}

// Modprobe is `modprobe [-q] [-b] [--] NAME [PARAM=VALUE...]` as the kernel runs it: it loads
// the module NAME stands for, with its dependencies, from /lib/modules/<release>. It returns the
// exit status: 0 when loaded (or already), 1 when the image has no such module or loading
// failed. Other modprobe modes (-r, -l, --show-depends) are refused with status 2.
func Modprobe(args []string, stderr io.Writer) int {
	quiet := false
	var rest []string
	for i, a := range args {
		if a == "--" {
			rest = append(rest, args[i+1:]...)
			break
		}
		switch {
		case a == "-q" || a == "--quiet":
			quiet = true
		case a == "-b" || a == "--use-blacklist" || a == "-s" || a == "--syslog":
			// No blacklist on a node; messages go to stderr, which the kernel discards.
		case strings.HasPrefix(a, "-"):
			fmt.Fprintf(stderr, "modprobe: %s is not supported (ingot's modprobe only loads modules)\n", a)
			return 2
		default:
			rest = append(rest, a)
		}
	}
	if len(rest) == 0 {
		fmt.Fprintln(stderr, "usage: modprobe [-q] [--] MODULE [PARAM=VALUE...]")
		return 2
	}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		fmt.Fprintln(stderr, "modprobe:", err)
		return 1
	}
	dir := filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
	d, err := ReadDeps(dir)
	if err != nil {
		fmt.Fprintln(stderr, "modprobe:", err)
		return 1
	}
	aliases, err := ReadAliases(dir)
	if err != nil {
		fmt.Fprintln(stderr, "modprobe:", err)
		return 1
	}
	return d.probe(rest[0], strings.Join(rest[1:], " "), aliases, quiet, stderr, Load)
}

// probe loads what name stands for through load (Load, or a test's).
func (d *Deps) probe(name, params string, aliases []Alias, quiet bool, stderr io.Writer, load func(path, params string) error) int {
	mods := d.Resolve(name, aliases)
	if len(mods) == 0 {
		if !quiet {
			fmt.Fprintf(stderr, "modprobe: no module %s in this image\n", name)
		}
		return 1
	}
	status := 0
	for _, m := range mods {
		order, err := d.Order([]string{m})
		if err != nil {
			fmt.Fprintln(stderr, "modprobe:", err)
			status = 1
			continue
		}
		for _, n := range order {
			p := ""
			if n == m {
				p = params
			}
			if err := load(d.Path(n), p); err != nil {
				fmt.Fprintln(stderr, "modprobe:", err)
				status = 1
				break
			}
		}
	}
	return status
}
