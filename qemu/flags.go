package qemu

import (
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
)

// Guest networks.
const (
	// NetRestricted is QEMU user networking with restrict=on: the guest reaches nothing outside
	// the VM except what forwarding rules allow. Tests always use it.
	NetRestricted = "restricted"
	// NetUser is plain QEMU user networking (NAT): the guest reaches whatever the host reaches,
	// so it can pull images from a public registry.
	NetUser = "user"
)

// ParseForward turns "HOSTPORT:GUESTPORT" into a QEMU hostfwd rule for TCP, bound to the host's
// loopback only: a forwarded port (the API server, the node API) is never offered to the host's
// network.
func ParseForward(s string) (string, error) {
	host, guest, ok := strings.Cut(s, ":")
	if !ok {
		return "", fmt.Errorf("--forward %q: want HOSTPORT:GUESTPORT", s)
	}
	for _, p := range []struct{ what, v string }{{"host", host}, {"guest", guest}} {
		if n, err := strconv.Atoi(p.v); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("--forward %q: %s port %s is not a port (1-65535)", s, p.what, p.v)
		}
	}
	return "tcp:127.0.0.1:" + host + "-:" + guest, nil
}

// ParseSize reads a disk size: bytes, or a number with K, M, G or T (powers of 1024, optionally
// spelt KiB, MiB, GiB, TiB).
func ParseSize(s string) (int64, error) {
	num, mult := s, float64(1)
	for i, u := range []string{"K", "M", "G", "T"} {
		for _, suffix := range []string{u + "iB", u} {
			if v, ok := strings.CutSuffix(s, suffix); ok {
				num, mult = v, math.Pow(1024, float64(i+1))
				break
			}
		}
		if num != s {
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v <= 0 || math.IsInf(v, 0) || strings.ContainsAny(num, " +eExXpP_") {
		return 0, fmt.Errorf("size %q: want a positive number of bytes or a number with K, M, G or T", s)
	}
	return int64(v * mult), nil
}

// WorkingDisk makes dst, the VM's own copy of the image's disk src, when it does not exist yet or
// fresh is set; an existing copy holds the node's state and is used as it is. A new copy is grown
// (sparsely) to size bytes when size is larger than src; the node then grows its state partition
// into the new space on first boot. size 0 keeps the image's size; a smaller size is an error,
// since a disk only grows.
func WorkingDisk(src, dst string, fresh bool, size int64) error {
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("working disk: %w", err)
	}
	if size != 0 && size < st.Size() {
		return fmt.Errorf("--disk-size %d bytes is smaller than the image's disk %s (%d bytes)", size, src, st.Size())
	}
	if _, err := os.Stat(dst); err == nil && !fresh {
		return nil
	}
	if err := CopySparse(src, dst); err != nil {
		return fmt.Errorf("working disk %s: %w", dst, err)
	}
	if size > st.Size() {
		if err := os.Truncate(dst, size); err != nil {
			return fmt.Errorf("working disk %s: grow to %d bytes: %w", dst, size, err)
		}
	}
	return nil
}

// EmptyDisk makes dst a sparse disk of size bytes filled with zeros, unless it exists and fresh
// is false (a disk something was written to is kept across runs).
func EmptyDisk(dst string, size int64, fresh bool) error {
	if size <= 0 {
		return fmt.Errorf("empty disk %s: size %d", dst, size)
	}
	if _, err := os.Stat(dst); err == nil && !fresh {
		return nil
	}
	f, err := os.Create(dst)
	if err != nil {
		return fmt.Errorf("empty disk: %w", err)
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("empty disk %s: %w", dst, err)
	}
	return f.Close()
}
