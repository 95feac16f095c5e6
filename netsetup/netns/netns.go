// Package netns creates, enters and removes network namespaces pinned as files (a bind mount of
// nsfs, as `ip netns add` makes). The runtime pins a pod's namespace before the pause process
// starts, so the pod network can be set up first and torn down after the pod's processes are
// gone, and a runtime restart finds the namespace by path.
//
// Entering a namespace is done on a locked OS thread that is never handed back to the Go
// scheduler: the thread exits with its goroutine, so no other goroutine can ever run in a
// namespace it did not ask for, even when switching back would fail.
package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// New creates a network namespace pinned at path. The parent directory is created; path must
// not exist yet.
func New(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread leaves with its new namespace when the goroutine ends.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		self := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(self, path, "", unix.MS_BIND, ""); err != nil {
			errc <- fmt.Errorf("bind mount: %w", err)
			return
		}
		errc <- nil
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return fmt.Errorf("netns %s: %w", path, err)
	}
	return nil
}

// Pin bind-mounts an existing namespace (e.g. /proc/<pid>/ns/net) at path, so it outlives the
// process and can be found by path. The parent directory is created; path must not exist yet.
func Pin(source, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	f.Close()
	if err := unix.Mount(source, path, "", unix.MS_BIND, ""); err != nil {
		os.Remove(path)
		return fmt.Errorf("netns %s: pin %s: %w", path, source, err)
	}
	return nil
}

// Remove unmounts and removes a namespace made by New. The namespace itself lives on while a
// process is in it. A missing path is not an error.
func Remove(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netns %s: unmount: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	return nil
}

// Do runs fn on an OS thread inside the network namespace at path (a pinned file or
// /proc/PID/ns/net). Sockets fn opens stay in that namespace after Do returns.
func Do(path string, fn func() error) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("netns %s: %w", path, err)
	}
	defer f.Close()
	return DoFile(f, fn)
}

// DoFile is Do for a namespace file that is already open.
func DoFile(f *os.File, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked; see the package comment
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("netns %s: setns: %w", f.Name(), err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// Is reports whether path is a network namespace file.
func Is(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.NSFS_MAGIC
}
