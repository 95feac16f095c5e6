package critest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupMounts lists the mount points of every cgroup hierarchy (v1 controllers, named v1
// hierarchies and the v2 unified one) from a mountinfo file.
func cgroupMounts(mountinfo io.Reader) []string {
	var out []string
	sc := bufio.NewScanner(mountinfo)
	for sc.Scan() {
		// "36 25 0:31 / /sys/fs/cgroup/cpu rw,nosuid - cgroup cgroup rw,cpu"
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		f, p := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(p) < 1 || (p[0] != "cgroup" && p[0] != "cgroup2") {
			continue
		}
		out = append(out, unescapeMount(f[4]))
	}
	sort.Strings(out)
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// removeCgroups removes the run's cgroup root from every hierarchy, deepest directories first.
// A cgroup whose last process is still exiting is busy for a moment: retry for a few seconds.
func removeCgroups(root string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	mounts := cgroupMounts(f)
	f.Close()
	var errs []error
	for _, mp := range mounts {
		if err := removeTree(filepath.Join(mp, root), 5*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// removeTree rmdirs dir and every directory below it (cgroup directories hold only kernel
// files, which go with them).
func removeTree(dir string, patience time.Duration) error {
	deadline := time.Now().Add(patience)
	for {
		var dirs []string
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		if len(dirs) == 0 {
			return nil
		}
		var last error
		for i := len(dirs) - 1; i >= 0; i-- { // WalkDir lists parents before children
			if err := unix.Rmdir(dirs[i]); err != nil && err != unix.ENOENT {
				last = fmt.Errorf("remove cgroup %s: %w", dirs[i], err)
			}
		}
		if last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return last
		}
		time.Sleep(100 * time.Millisecond)
	}
}
