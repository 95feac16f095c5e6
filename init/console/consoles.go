package console

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Consoles writes to every console the kernel was given (console= on its command line), so a
// machine with both a screen and a serial port shows PID 1's log on each: the kernel sends its
// own messages to all of them, but a process's writes to /dev/console reach only the last one.
// It starts with the writer it is made with (PID 1's stdout, /dev/console) and adds the others
// when Attach reads the kernel's list, once /sys and /dev are mounted.
type Consoles struct {
	mu    sync.Mutex
	ws    []io.Writer
	names []string
}

// NewConsoles returns Consoles writing to primary (/dev/console) alone.
func NewConsoles(primary io.Writer) *Consoles {
	return &Consoles{ws: []io.Writer{primary}}
}

// Write writes p to every console. Only the primary's error is returned: a screen that cannot be
// written must not stop the log reaching the serial port a test or an operator reads.
func (c *Consoles) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.ws[0].Write(p)
	for _, w := range c.ws[1:] {
		w.Write(p)
	}
	return n, err
}

// Attach opens, under devDir, each console in the kernel's active list (sysfs's
// class/tty/console/active: names separated by spaces, /dev/console's last) besides the last,
// which is the primary already. It returns the names now written to, the primary last.
func (c *Consoles) Attach(activeFile, devDir string) ([]string, error) {
	data, err := os.ReadFile(activeFile)
	if err != nil {
		return nil, fmt.Errorf("consoles: %w", err)
	}
	names := strings.Fields(string(data))
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.names) > 0 {
		return c.names, nil // attached already
	}
	var errs []string
	for _, name := range names[:max(len(names)-1, 0)] {
		if strings.ContainsRune(name, '/') || name == "." || name == ".." {
			continue
		}
		// Non-blocking, written with write(2) itself (os.File would wait for the device): a
		// screen whose output is stopped (Scroll Lock, ^S) drops lines rather than stalling
		// PID 1's log on every console.
		p := filepath.Join(devDir, name)
		fd, err := unix.Open(p, unix.O_WRONLY|unix.O_NOCTTY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
		if err != nil {
			errs = append(errs, fmt.Sprintf("open %s: %v", p, err))
			continue
		}
		c.ws = append(c.ws, rawFD(fd))
		c.names = append(c.names, name)
	}
	if len(names) > 0 {
		c.names = append(c.names, names[len(names)-1])
	}
	if len(errs) > 0 {
		return c.names, fmt.Errorf("consoles: %s", strings.Join(errs, "; "))
	}
	return c.names, nil
}

// rawFD writes with write(2) directly, so a non-blocking descriptor fails with EAGAIN instead of
// parking the caller until the device takes more.
type rawFD int

func (fd rawFD) Write(p []byte) (int, error) { return unix.Write(int(fd), p) }
