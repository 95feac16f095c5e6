// Package e2fsprogs collects what a node needs to format, check and grow its state partition:
// mke2fs, e2fsck and resize2fs from Debian's e2fsprogs for the target architecture, with the
// shared libraries they link (found by reading their ELF headers, not by a list that could go
// stale) and the dynamic loader. Every image carries them; tests run the same files on the
// host through the same loader (Stage).
package e2fsprogs

import (
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// Programs are the e2fsprogs programs a node runs, installed as /bin/NAME.
var Programs = []string{"mke2fs", "e2fsck", "resize2fs"}

// Packages are the Debian packages the programs and their libraries come from; e2fsprogs first.
var Packages = []string{"e2fsprogs", "libext2fs2", "libcom-err2", "libblkid1", "libuuid1", "libc6"}

// File is one file of the set: Path in the image, Src on the host.
type File struct {
	Path string
	Src  string
	Mode os.FileMode
}

// Unpack returns the directory a Debian package of the target architecture is unpacked in.
type Unpack func(ctx context.Context, pkg string) (string, error)

// Collect returns the programs (in /bin), the libraries they need (at the path their package
// gives them, e.g. /lib/x86_64-linux-gnu/libc.so.6) and the loader (at the path the programs
// name, e.g. /lib64/ld-linux-x86-64.so.2), programs first. Symbolic links in the packages are
// resolved: the image gets each file under the name the loader looks for.
func Collect(ctx context.Context, unpack Unpack) ([]File, error) {
	var roots []string
	for _, p := range Packages {
		dir, err := unpack(ctx, p)
		if err != nil {
			return nil, fmt.Errorf("e2fsprogs: %w", err)
		}
		roots = append(roots, dir)
	}
	var files []File
	var interp string
	needed := map[string]bool{}
	var queue []string
	for _, prog := range Programs {
		src, err := findIn(roots[:1], []string{"sbin/" + prog, "usr/sbin/" + prog})
		if err != nil {
			return nil, fmt.Errorf("e2fsprogs: %s: %w", prog, err)
		}
		files = append(files, File{Path: "/bin/" + prog, Src: src, Mode: 0o755})
		i, libs, err := dynamic(src)
		if err != nil {
			return nil, err
		}
		if interp != "" && i != interp {
			return nil, fmt.Errorf("e2fsprogs: %s asks for loader %s, the others for %s", prog, i, interp)
		}
		interp = i
		queue = append(queue, libs...)
	}
	if interp == "" {
		return nil, errors.New("e2fsprogs: the programs name no dynamic loader")
	}
	for len(queue) > 0 {
		lib := queue[0]
		queue = queue[1:]
		if needed[lib] {
			continue
		}
		needed[lib] = true
		f, err := findLib(roots, lib)
		if err != nil {
			return nil, fmt.Errorf("e2fsprogs: library %s: %w", lib, err)
		}
		files = append(files, f)
		_, libs, err := dynamic(f.Src)
		if err != nil {
			return nil, err
		}
		queue = append(queue, libs...)
	}
	src, err := findIn(roots, []string{strings.TrimPrefix(interp, "/")})
	if err != nil {
		return nil, fmt.Errorf("e2fsprogs: loader %s: %w", interp, err)
	}
	files = append(files, File{Path: interp, Src: src, Mode: 0o755})
	return files, nil
}

// dynamic reads an ELF file's loader (PT_INTERP) and needed libraries (DT_NEEDED).
func dynamic(p string) (string, []string, error) {
	f, err := elf.Open(p)
	if err != nil {
		return "", nil, fmt.Errorf("e2fsprogs: read %s: %w", p, err)
	}
	defer f.Close()
	var interp string
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			b := make([]byte, prog.Filesz)
			if _, err := prog.ReadAt(b, 0); err != nil {
				return "", nil, fmt.Errorf("e2fsprogs: read the loader of %s: %w", p, err)
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		return "", nil, fmt.Errorf("e2fsprogs: read the libraries of %s: %w", p, err)
	}
	return interp, libs, nil
}

// libDirs are where Debian's packages put shared libraries, relative to the root.
var libDirs = []string{"lib/*-linux-gnu", "usr/lib/*-linux-gnu"}

// findLib finds soname in the packages' library directories and returns it as a File.
func findLib(roots []string, soname string) (File, error) {
	for _, root := range roots {
		for _, dir := range libDirs {
			matches, _ := filepath.Glob(filepath.Join(root, dir, soname))
			for _, m := range matches {
				src, err := resolve(root, m)
				if err != nil {
					return File{}, err
				}
				rel, _ := filepath.Rel(root, m)
				return File{Path: "/" + filepath.ToSlash(rel), Src: src, Mode: 0o644}, nil
			}
		}
	}
	return File{}, fmt.Errorf("in none of %s", strings.Join(Packages, ", "))
}

// findIn returns the first of the relative paths found in one of the roots, resolved.
func findIn(roots, rels []string) (string, error) {
	for _, root := range roots {
		for _, rel := range rels {
			p := filepath.Join(root, rel)
			if _, err := os.Lstat(p); err == nil {
				return resolve(root, p)
			}
		}
	}
	return "", fmt.Errorf("no %s in the packages", strings.Join(rels, " or "))
}

// resolve follows symbolic links inside an unpacked package: an absolute target is taken
// relative to the package's root, never the host's.
func resolve(root, p string) (string, error) {
	for range 16 {
		fi, err := os.Lstat(p)
		if err != nil {
			return "", err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			if !fi.Mode().IsRegular() {
				return "", fmt.Errorf("%s is not a regular file", p)
			}
			return p, nil
		}
		target, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(p))
		next := path.Join("/", rel, target)
		if path.IsAbs(target) {
			next = path.Clean(target)
		}
		p = filepath.Join(root, filepath.FromSlash(next))
	}
	return "", fmt.Errorf("%s: too many symbolic links", p)
}

// Stage copies the files under dir, laid out as in the image, and returns the command prefix
// that runs dir's programs on this host through dir's own loader and libraries
// (statedisk.Tools.Run). The files must be of the host's architecture.
func Stage(files []File, dir string) ([]string, error) {
	var interp string
	var dirs []string
	for _, f := range files {
		dst := filepath.Join(dir, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		data, err := os.ReadFile(f.Src)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(dst, data, f.Mode); err != nil {
			return nil, err
		}
		switch {
		case f.Mode&0o111 != 0 && !strings.HasPrefix(f.Path, "/bin/"):
			interp = dst
		case f.Mode&0o111 == 0 && !slices.Contains(dirs, filepath.Dir(dst)):
			dirs = append(dirs, filepath.Dir(dst))
		}
	}
	if interp == "" {
		return nil, errors.New("e2fsprogs: no loader among the files")
	}
	return []string{interp, "--library-path", strings.Join(dirs, ":")}, nil
}
