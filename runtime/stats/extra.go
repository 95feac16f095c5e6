package stats

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// Throttling is the CFS bandwidth counters and the CPU spec a cgroup runs under.
type Throttling struct {
	Periods, ThrottledPeriods uint64 // cpu.stat nr_periods, nr_throttled
	ThrottledNanos            uint64 // cpu.stat throttled_usec (v2) or throttled_time (v1)
	PeriodMicros              uint64 // cpu.max's period (v2) or cpu.cfs_period_us (v1)
	Shares                    uint64 // cpu.shares, or cpu.weight converted back to shares
}

// MemoryDetail is what the kubelet's cAdvisor names report beyond Memory.
type MemoryDetail struct {
	Kernel     uint64 // memory.stat kernel (v2), memory.kmem.usage_in_bytes (v1)
	MappedFile uint64 // memory.stat file_mapped (v2), total_mapped_file (v1)
	MaxUsage   uint64 // memory.peak (v2, 0 on kernels before 5.19), memory.max_usage_in_bytes (v1)
	Swap       uint64 // memory.swap.current (v2), memsw usage less usage (v1)
	SwapLimit  uint64 // memory.swap.max (v2), memory.memsw.limit_in_bytes (v1); 0: none
	// Failcnt counts the times usage hit the limit: memory.events max (v2), memory.failcnt (v1).
	Failcnt   uint64
	OOMEvents uint64 // memory.events oom_kill (v2), memory.oom_control oom_kill (v1)
}

// Device is one block device's I/O by the cgroup: io.stat (v2) or blkio's throttle files (v1).
type Device struct {
	Major, Minor          uint64
	ReadBytes, WriteBytes uint64
	Reads, Writes         uint64
}

// Name is the device's /dev name as /sys/dev/block knows it, or "major:minor" when it has none.
func (d Device) Name() string {
	id := fmt.Sprintf("%d:%d", d.Major, d.Minor)
	if target, err := os.Readlink(filepath.Join("/sys/dev/block", id)); err == nil {
		return "/dev/" + filepath.Base(target)
	}
	return id
}

// weightToShares inverts the kubelet's shares → cpu.weight mapping
// (weight = 1 + (shares-2)*9999/262142), so a pod given 1024 shares reads back about 1024.
func weightToShares(weight uint64) uint64 {
	if weight == 0 {
		return 0
	}
	return 2 + (weight-1)*262142/9999
}

func readExtraV2(dir string, c *Cgroup) error {
	cpu, err := readKeyed(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return err
	}
	c.Throttling = Throttling{Periods: cpu["nr_periods"], ThrottledPeriods: cpu["nr_throttled"], ThrottledNanos: cpu["throttled_usec"] * 1000}
	if data, err := os.ReadFile(filepath.Join(dir, "cpu.max")); err == nil {
		if f := strings.Fields(string(data)); len(f) == 2 {
			if c.Throttling.PeriodMicros, err = strconv.ParseUint(f[1], 10, 64); err != nil {
				return fmt.Errorf("%s: %w", filepath.Join(dir, "cpu.max"), err)
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	w, err := readUint(filepath.Join(dir, "cpu.weight"))
	if err != nil {
		return err
	}
	c.Throttling.Shares = weightToShares(w)

	mem, err := readKeyed(filepath.Join(dir, "memory.stat"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	kernel, ok := mem["kernel"]
	if !ok { // kernels before 5.18 have no "kernel" line: sum its parts
		kernel = mem["kernel_stack"] + mem["pagetables"] + mem["percpu"] + mem["sock"] + mem["slab"]
	}
	d := MemoryDetail{Kernel: kernel, MappedFile: mem["file_mapped"]}
	for name, dst := range map[string]*uint64{"memory.peak": &d.MaxUsage, "memory.swap.current": &d.Swap, "memory.swap.max": &d.SwapLimit} {
		if *dst, err = readUint(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	events, err := readKeyed(filepath.Join(dir, "memory.events"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	d.Failcnt, d.OOMEvents = events["max"], events["oom_kill"]
	c.MemoryDetail = d
	if c.PidsMax, err = readUint(filepath.Join(dir, "pids.max")); err != nil {
		return err
	}
	if c.IO, err = readIOStat(filepath.Join(dir, "io.stat")); err != nil {
		return err
	}
	c.Procs, err = readProcs(filepath.Join(dir, "cgroup.procs"))
	return err
}

func readExtraV1(root, path string, c *Cgroup) error {
	cpuDir := filepath.Join(root, "cpu", path)
	if _, err := os.Stat(cpuDir); err != nil {
		cpuDir = filepath.Join(root, "cpu,cpuacct", path)
	}
	cpu, err := readKeyed(filepath.Join(cpuDir, "cpu.stat"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	c.Throttling = Throttling{Periods: cpu["nr_periods"], ThrottledPeriods: cpu["nr_throttled"], ThrottledNanos: cpu["throttled_time"]}
	if c.Throttling.PeriodMicros, err = readUint(filepath.Join(cpuDir, "cpu.cfs_period_us")); err != nil {
		return err
	}
	if c.Throttling.Shares, err = readUint(filepath.Join(cpuDir, "cpu.shares")); err != nil {
		return err
	}

	memDir := filepath.Join(root, "memory", path)
	mem, err := readKeyed(filepath.Join(memDir, "memory.stat"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	d := MemoryDetail{MappedFile: mem["total_mapped_file"]}
	var memsw uint64
	for name, dst := range map[string]*uint64{"memory.kmem.usage_in_bytes": &d.Kernel, "memory.max_usage_in_bytes": &d.MaxUsage,
		"memory.failcnt": &d.Failcnt, "memory.memsw.usage_in_bytes": &memsw, "memory.memsw.limit_in_bytes": &d.SwapLimit} {
		if *dst, err = readUint(filepath.Join(memDir, name)); err != nil {
			return err
		}
	}
	if memsw > c.Memory.Usage { // memsw counts memory and swap together
		d.Swap = memsw - c.Memory.Usage
	}
	if d.SwapLimit >= v1UnlimitedMemory {
		d.SwapLimit = 0
	}
	oom, err := readKeyed(filepath.Join(memDir, "memory.oom_control"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	d.OOMEvents = oom["oom_kill"]
	c.MemoryDetail = d
	if c.PidsMax, err = readUint(filepath.Join(root, "pids", path, "pids.max")); err != nil {
		return err
	}
	blk := filepath.Join(root, "blkio", path)
	if c.IO, err = readBlkio(filepath.Join(blk, "blkio.throttle.io_service_bytes_recursive"), filepath.Join(blk, "blkio.throttle.io_serviced_recursive")); err != nil {
		return err
	}
	c.Procs, err = readProcs(filepath.Join(root, "pids", path, "cgroup.procs"))
	return err
}

// readIOStat reads io.stat: "8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0" per device.
func readIOStat(path string) ([]Device, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Device
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		var d Device
		if _, err := fmt.Sscanf(f[0], "%d:%d", &d.Major, &d.Minor); err != nil {
			return nil, fmt.Errorf("%s: device %q: %w", path, f[0], err)
		}
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", path, kv, err)
			}
			switch k {
			case "rbytes":
				d.ReadBytes = n
			case "wbytes":
				d.WriteBytes = n
			case "rios":
				d.Reads = n
			case "wios":
				d.Writes = n
			}
		}
		out = append(out, d)
	}
	return out, nil
}

// readBlkio reads v1's blkio bytes and serviced files: "8:0 Read 4096" lines and a Total.
func readBlkio(bytesPath, opsPath string) ([]Device, error) {
	byID := map[[2]uint64]*Device{}
	var order [][2]uint64
	for _, p := range []string{bytesPath, opsPath} {
		data, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for line := range strings.Lines(string(data)) {
			f := strings.Fields(line)
			if len(f) != 3 {
				continue // "Total n"
			}
			var id [2]uint64
			if _, err := fmt.Sscanf(f[0], "%d:%d", &id[0], &id[1]); err != nil {
				return nil, fmt.Errorf("%s: device %q: %w", p, f[0], err)
			}
			n, err := strconv.ParseUint(f[2], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", p, line, err)
			}
			d := byID[id]
			if d == nil {
				d = &Device{Major: id[0], Minor: id[1]}
				byID[id] = d
				order = append(order, id)
			}
			switch {
			case p == bytesPath && f[1] == "Read":
				d.ReadBytes = n
			case p == bytesPath && f[1] == "Write":
				d.WriteBytes = n
			case p == opsPath && f[1] == "Read":
				d.Reads = n
			case p == opsPath && f[1] == "Write":
				d.Writes = n
			}
		}
	}
	var out []Device
	for _, id := range order {
		out = append(out, *byID[id])
	}
	return out, nil
}

// readProcs reads cgroup.procs, the processes (not threads) in the cgroup itself.
func readProcs(path string) ([]int, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []int
	for _, f := range strings.Fields(string(data)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %q: %w", path, f, err)
		}
		out = append(out, pid)
	}
	return out, nil
}

// FDs counts the open file descriptors of pids under procRoot (/proc), and how many of them
// are sockets. A process that exits meanwhile, or whose fd directory cannot be read, counts 0.
func FDs(procRoot string, pids []int) (fds, sockets uint64) {
	for _, pid := range pids {
		dir := filepath.Join(procRoot, strconv.Itoa(pid), "fd")
		ents, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, e := range ents {
			fds++
			if t, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(t, "socket:") {
				sockets++
			}
		}
	}
	return fds, sockets
}

// Filesystem is a container's writable layer: its size and the file system holding it.
type Filesystem struct {
	Device                  string // "major:minor" of the file system holding the layer
	Usage                   uint64 // bytes allocated by the layer's files (at most maxFiles counted)
	Limit                   uint64 // the file system's size
	InodesTotal, InodesFree uint64
}

// maxFiles bounds the walk of a writable layer so one container writing millions of files
// cannot make every scrape slow; past it Usage is a lower bound.
const maxFiles = 100_000

// Layer reads the writable layer at dir: statfs of its file system and a bounded du of it.
func Layer(dir string) (Filesystem, error) {
	var fsys Filesystem
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return fsys, fmt.Errorf("statfs %s: %w", dir, err)
	}
	fsys.Limit = st.Blocks * uint64(st.Bsize)
	fsys.InodesTotal, fsys.InodesFree = st.Files, st.Ffree
	var dst syscall.Stat_t
	if err := syscall.Stat(dir, &dst); err != nil {
		return fsys, fmt.Errorf("stat %s: %w", dir, err)
	}
	fsys.Device = fmt.Sprintf("%d:%d", unixMajor(dst.Dev), unixMinor(dst.Dev))
	n := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // a file removed during the walk
		}
		if n++; n > maxFiles {
			return fs.SkipAll
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if s, ok := info.Sys().(*syscall.Stat_t); ok {
			fsys.Usage += uint64(s.Blocks) * 512
		}
		return nil
	})
	if err != nil {
		return fsys, fmt.Errorf("walk %s: %w", dir, err)
	}
	return fsys, nil
}

func unixMajor(dev uint64) uint64 { return (dev>>8)&0xfff | (dev>>32)&^0xfff }
func unixMinor(dev uint64) uint64 { return dev&0xff | (dev>>12)&^0xff }
