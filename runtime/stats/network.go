package stats

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"ingot.dev/ingot/netsetup/netns"
)

// Interface is one network interface's counters since it was created.
type Interface struct {
	Name                                    string
	RxBytes, RxPackets, RxErrors, RxDropped uint64
	TxBytes, TxPackets, TxErrors, TxDropped uint64
}

// Network reads the interface counters of the network namespace at path (a pinned namespace
// file or /proc/PID/ns/net). It reads /proc/thread-self/net/dev from a thread inside the
// namespace: /sys/class/net would show the namespace sysfs was mounted in, not the thread's.
func Network(path string) ([]Interface, error) {
	var out []Interface
	err := netns.Do(path, func() error {
		f, err := os.Open("/proc/thread-self/net/dev")
		if err != nil {
			return err
		}
		defer f.Close()
		out, err = ParseNetDev(f)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("network counters of %s: %w", path, err)
	}
	return out, nil
}

// ParseNetDev parses /proc/net/dev: two header lines, then "name: 16 counters" per interface
// (receive bytes packets errs drop fifo frame compressed multicast, then transmit bytes packets
// errs drop fifo colls carrier compressed).
func ParseNetDev(r io.Reader) ([]Interface, error) {
	var out []Interface
	sc := bufio.NewScanner(r)
	for n := 0; sc.Scan(); n++ {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if n < 2 || !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 16 {
			return nil, fmt.Errorf("net/dev line %q: %d counters, want 16", sc.Text(), len(f))
		}
		var v [16]uint64
		for i := range v {
			var err error
			if v[i], err = strconv.ParseUint(f[i], 10, 64); err != nil {
				return nil, fmt.Errorf("net/dev interface %s: %w", strings.TrimSpace(name), err)
			}
		}
		out = append(out, Interface{Name: strings.TrimSpace(name),
			RxBytes: v[0], RxPackets: v[1], RxErrors: v[2], RxDropped: v[3],
			TxBytes: v[8], TxPackets: v[9], TxErrors: v[10], TxDropped: v[11]})
	}
	return out, sc.Err()
}
