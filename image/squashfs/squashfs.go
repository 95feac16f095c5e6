// Package squashfs writes the image's read-only root filesystem as a zstd-compressed squashfs, the
// payload PID 1 loop-mounts as the node's root, so kubelet and friends are never unpacked into RAM.
//
// It runs Debian's mksquashfs (squashfs-tools 4.5): go-diskfs's squashfs writer makes images the
// kernel does not mount with xz or lz4 and has no symlinks, and no maintained Go library writes
// erofs. The tree is staged in a temporary directory; every owner is root, every timestamp is the
// given mtime, directories are sorted by mksquashfs itself and its output does not depend on the
// number of threads, so the same tree always gives the same bytes. This package never writes
// anything outside its temporary directory.
package squashfs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"ingot.dev/ingot/image/initramfs"
)

// Tool is the program that writes the image; `make deps` installs it (squashfs-tools).
const Tool = "mksquashfs"

// Magic is the first four bytes of a squashfs image (little-endian "hsqs").
const Magic = "hsqs"

// Version returns the path and version of the mksquashfs on PATH ("4.5.1"): the builder records
// them among the image's inputs, since another version may lay the same tree out differently.
func Version(ctx context.Context) (path, version string, err error) {
	path, err = exec.LookPath(Tool)
	if err != nil {
		return "", "", fmt.Errorf("squashfs: %w (install squashfs-tools: make deps)", err)
	}
	out, err := exec.CommandContext(ctx, path, "-version").Output()
	if err != nil {
		return "", "", fmt.Errorf("squashfs: %s -version: %w", path, err)
	}
	// "mksquashfs version 4.5.1 (2022/03/17)"
	f := strings.Fields(string(out))
	if len(f) < 3 || f[0] != Tool || f[1] != "version" {
		return "", "", fmt.Errorf("squashfs: %s -version printed %q, not its version", path, firstLine(string(out)))
	}
	return path, f[2], nil
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// Write returns tree as a squashfs image with every mtime (and the filesystem's creation time) set
// to mtime. Character devices in the tree become pseudo-file definitions, so staging needs no
// mknod and therefore no root.
func Write(ctx context.Context, tree *initramfs.Tree, mtime int64) ([]byte, error) {
	if mtime < 0 || mtime > 1<<32-1 {
		return nil, fmt.Errorf("squashfs: mtime %d does not fit squashfs's unsigned 32-bit timestamps", mtime)
	}
	tool, err := exec.LookPath(Tool)
	if err != nil {
		return nil, fmt.Errorf("squashfs: %w (install squashfs-tools: make deps)", err)
	}
	tmp, err := os.MkdirTemp("", "ingot-squashfs-")
	if err != nil {
		return nil, fmt.Errorf("squashfs: staging directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	stage := filepath.Join(tmp, "root")
	pseudo, err := stageTree(tree, stage)
	if err != nil {
		return nil, err
	}
	out := filepath.Join(tmp, "root.sqfs")
	args := []string{stage, out, "-noappend", "-quiet", "-no-progress", "-comp", "zstd",
		"-all-root", "-no-xattrs", "-reproducible",
		"-all-time", strconv.FormatInt(mtime, 10), "-mkfs-time", strconv.FormatInt(mtime, 10)}
	if pseudo != "" {
		pf := filepath.Join(tmp, "pseudo")
		if err := os.WriteFile(pf, []byte(pseudo), 0o644); err != nil {
			return nil, fmt.Errorf("squashfs: %w", err)
		}
		args = append(args, "-pf", pf)
	}
	cmd := exec.CommandContext(ctx, tool, args...)
	// mksquashfs refuses SOURCE_DATE_EPOCH together with -all-time/-mkfs-time; the times given
	// here already are the build's SOURCE_DATE_EPOCH.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SOURCE_DATE_EPOCH=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("squashfs: %s: %w: %s", Tool, err, strings.TrimSpace(output.String()))
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("squashfs: %w", err)
	}
	return data, nil
}

// stageTree lays tree out under dir and returns the pseudo-file definitions for what a plain
// directory cannot hold without root (character devices).
func stageTree(tree *initramfs.Tree, dir string) (string, error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", fmt.Errorf("squashfs: staging directory: %w", err)
	}
	var pseudo strings.Builder
	var dirs []initramfs.Node
	err := tree.Each(func(n initramfs.Node) error {
		p := filepath.Join(dir, n.Path)
		switch {
		case n.Mode.IsDir():
			// Modes are set once everything is written: a 0500 directory would refuse its children.
			dirs = append(dirs, n)
			return os.Mkdir(p, 0o755)
		case n.Mode&os.ModeSymlink != 0:
			return os.Symlink(string(n.Data), p)
		case n.Mode&os.ModeCharDevice != 0:
			// "name c mode uid gid major minor", the name relative to the image's root.
			fmt.Fprintf(&pseudo, "%s c %o 0 0 %d %d\n", strings.TrimPrefix(n.Path, "/"), n.Mode.Perm(), n.Major, n.Minor)
			return nil
		case n.Mode.IsRegular():
			if err := os.WriteFile(p, n.Data, 0o600); err != nil {
				return err
			}
			return os.Chmod(p, n.Mode.Perm()) // the umask does not apply to chmod
		}
		return fmt.Errorf("unsupported file type %v", n.Mode.Type())
	})
	if err != nil {
		return "", fmt.Errorf("squashfs: staging the tree: %w", err)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Chmod(filepath.Join(dir, dirs[i].Path), dirs[i].Mode.Perm()); err != nil {
			return "", fmt.Errorf("squashfs: staging the tree: %w", err)
		}
	}
	return pseudo.String(), nil
}
