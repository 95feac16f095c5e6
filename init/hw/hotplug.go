package hw

import (
	"bytes"
	"context"
	"fmt"

	"golang.org/x/sys/unix"
)

// Uevent is one kernel uevent: its action (add, remove, bind, …) and its KEY=value pairs.
type Uevent struct {
	Action string
	Env    map[string]string
}

// ParseUevent parses a kernel uevent message: "ACTION@DEVPATH\0KEY=value\0…". Messages from udev
// (they start "libudev") are not the kernel's and are refused.
func ParseUevent(b []byte) (Uevent, error) {
	parts := bytes.Split(bytes.TrimRight(b, "\x00"), []byte{0})
	if len(parts) == 0 || !bytes.Contains(parts[0], []byte("@")) {
		return Uevent{}, fmt.Errorf("uevent: no ACTION@DEVPATH header")
	}
	ev := Uevent{Env: map[string]string{}}
	for _, p := range parts[1:] {
		k, v, ok := bytes.Cut(p, []byte("="))
		if ok {
			ev.Env[string(k)] = string(v)
		}
	}
	ev.Action = ev.Env["ACTION"]
	if ev.Action == "" {
		return Uevent{}, fmt.Errorf("uevent: no ACTION")
	}
	return ev, nil
}

// Hotplug listens for the kernel's uevents until ctx ends and loads, for every device added with a
// modalias, the modules m matches. Only messages the kernel sent are read (sender port 0):
// anything in the node's network namespace may send to the uevent group. report hears each
// module a device got, and each failure.
func Hotplug(ctx context.Context, m *Matcher, l *Loader, report func(modalias, module string, err error)) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_KOBJECT_UEVENT)
	if err != nil {
		return fmt.Errorf("uevent socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: 1}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("uevent socket: bind: %w", err)
	}
	defer unix.Close(fd)
	// A blocked recvfrom does not end when another goroutine closes the socket: wake every
	// second to see whether ctx has ended.
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 1}); err != nil {
		return fmt.Errorf("uevent socket: %w", err)
	}
	buf := make([]byte, 16<<10)
	for {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			if err == unix.EINTR || err == unix.EAGAIN || err == unix.ENOBUFS {
				continue // ENOBUFS: events were dropped; later ones still come
			}
			return fmt.Errorf("uevent socket: %w", err)
		}
		if nl, ok := from.(*unix.SockaddrNetlink); !ok || nl.Pid != 0 {
			continue
		}
		ev, err := ParseUevent(buf[:n])
		if err != nil || ev.Action != "add" || ev.Env["MODALIAS"] == "" {
			continue
		}
		alias := ev.Env["MODALIAS"]
		for _, mod := range m.Modules(alias) {
			if !l.Known(mod) {
				go func() { report(alias, mod, l.Ensure(mod)) }()
			}
		}
	}
}
