// Package boot describes PID 1's boot as data: a Plan is a list of phases, each a list of steps
// (mounts, directories, symlinks, files, sysctls, ...). Steps are values with String(), so the
// plan prints, diffs and unit-tests without root; Run executes them in order and stops at the
// first failure, naming the phase and the step.
package boot

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Step is one action of a boot phase.
type Step interface {
	Do(ctx context.Context) error
	String() string
}

// Phase is a named group of steps. A phase marked Optional logs its failure and boot goes on
// (e.g. sysctls the kernel lacks); every other failure stops the boot.
type Phase struct {
	Name     string
	Steps    []Step
	Optional bool
}

// Plan is the whole boot, in order.
type Plan []Phase

// String renders the plan, one step a line.
func (p Plan) String() string {
	var b strings.Builder
	for _, ph := range p {
		opt := ""
		if ph.Optional {
			opt = " (optional)"
		}
		fmt.Fprintf(&b, "%s%s\n", ph.Name, opt)
		for _, s := range ph.Steps {
			fmt.Fprintf(&b, "  %s\n", s)
		}
	}
	return b.String()
}

// Observer is told about each finished phase (for the console log).
type Observer func(phase string, took time.Duration, err error)

// Run executes the plan. It returns the first error of a non-optional phase.
func (p Plan) Run(ctx context.Context, obs Observer) error {
	for _, ph := range p {
		start := time.Now()
		var firstErr error
		for _, s := range ph.Steps {
			if err := s.Do(ctx); err != nil {
				err = fmt.Errorf("boot phase %s: %s: %w", ph.Name, s, err)
				if !ph.Optional {
					if obs != nil {
						obs(ph.Name, time.Since(start), err)
					}
					return err
				}
				if firstErr == nil {
					firstErr = err
				}
			}
		}
		if obs != nil {
			obs(ph.Name, time.Since(start), firstErr)
		}
	}
	return nil
}

// Mount mounts a filesystem, creating the target directory.
type Mount struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
	// IfExists skips the mount when the target's parent does not exist (e.g. efivarfs without EFI).
	IfExists string
}

func (m Mount) String() string {
	s := fmt.Sprintf("mount %s on %s type %s", m.Source, m.Target, m.FSType)
	var opts []string
	if f := FlagString(m.Flags); f != "" {
		opts = append(opts, f)
	}
	if m.Data != "" {
		opts = append(opts, m.Data)
	}
	if len(opts) > 0 {
		s += " (" + strings.Join(opts, ",") + ")"
	}
	return s
}

// FlagString names the mount flags in f ("nosuid,nodev"), so a plan shows what each mount allows;
// a flag without a name here shows as its hex value.
func FlagString(f uintptr) string {
	// In the order /proc/self/mounts spells them.
	known := []struct {
		flag uintptr
		name string
	}{
		{unix.MS_RDONLY, "ro"},
		{unix.MS_NOSUID, "nosuid"},
		{unix.MS_NODEV, "nodev"},
		{unix.MS_NOEXEC, "noexec"},
		{unix.MS_SYNCHRONOUS, "sync"},
		{unix.MS_NOATIME, "noatime"},
		{unix.MS_NODIRATIME, "nodiratime"},
		{unix.MS_RELATIME, "relatime"},
		{unix.MS_BIND, "bind"},
		{unix.MS_REC, "rec"},
	}
	var names []string
	for _, n := range known {
		if f&n.flag != 0 {
			names = append(names, n.name)
			f &^= n.flag
		}
	}
	if f != 0 {
		names = append(names, fmt.Sprintf("%#x", f))
	}
	return strings.Join(names, ",")
}

// Do performs the mount. A target that is already a mount point of the same type is left alone,
// so a plan can run again after PID 1 re-executes itself.
func (m Mount) Do(ctx context.Context) error {
	if m.IfExists != "" {
		if _, err := os.Stat(m.IfExists); err != nil {
			return nil
		}
	}
	if mounted(m.Target, m.FSType) {
		return nil
	}
	if err := os.MkdirAll(m.Target, 0o755); err != nil {
		return err
	}
	return unix.Mount(m.Source, m.Target, m.FSType, m.Flags, m.Data)
}

func mounted(target, fstype string) bool {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && f[1] == target && f[2] == fstype {
			return true
		}
	}
	return false
}

// Dir creates a directory.
type Dir struct {
	Path string
	Mode os.FileMode
}

func (d Dir) String() string { return fmt.Sprintf("mkdir %s %#o", d.Path, d.Mode) }

func (d Dir) Do(ctx context.Context) error {
	if err := os.MkdirAll(d.Path, d.Mode); err != nil {
		return err
	}
	return os.Chmod(d.Path, d.Mode)
}

// Symlink creates a symbolic link, replacing an existing one.
type Symlink struct{ Target, Link string }

func (s Symlink) String() string { return fmt.Sprintf("ln -s %s %s", s.Target, s.Link) }

func (s Symlink) Do(ctx context.Context) error {
	if cur, err := os.Readlink(s.Link); err == nil && cur == s.Target {
		return nil
	}
	os.Remove(s.Link)
	return os.Symlink(s.Target, s.Link)
}

// WriteFile writes a small file (e.g. /etc/hostname).
type WriteFile struct {
	Path string
	Data string
	Mode os.FileMode
}

func (w WriteFile) String() string { return fmt.Sprintf("write %s (%d bytes)", w.Path, len(w.Data)) }

func (w WriteFile) Do(ctx context.Context) error {
	if err := os.MkdirAll(filepath.Dir(w.Path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(w.Path, []byte(w.Data), w.Mode)
}

// Sysctl sets a kernel parameter through /proc/sys.
type Sysctl struct{ Key, Value string }

func (s Sysctl) String() string { return fmt.Sprintf("sysctl %s=%s", s.Key, s.Value) }

// Path is the /proc/sys file of the key (dots become slashes).
func (s Sysctl) Path() string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(s.Key, ".", "/"))
}

func (s Sysctl) Do(ctx context.Context) error {
	return os.WriteFile(s.Path(), []byte(s.Value), 0)
}

// Hostname sets the kernel's hostname.
type Hostname string

func (h Hostname) String() string { return "hostname " + string(h) }

func (h Hostname) Do(ctx context.Context) error { return unix.Sethostname([]byte(h)) }

// Func is a step implemented by code elsewhere (module loading, the state disk, cgroups).
type Func struct {
	Name string
	Fn   func(ctx context.Context) error
}

func (f Func) String() string { return f.Name }

func (f Func) Do(ctx context.Context) error { return f.Fn(ctx) }
