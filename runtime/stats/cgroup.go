// Package stats reads the resource usage the CRI reports for pods and containers: a cgroup v2
// directory's CPU, memory, process and pressure counters, and the interface counters of a
// network namespace. It only reads; it never changes a cgroup or a namespace.
package stats

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Cgroup is a cgroup v2 directory's usage at one moment.
type Cgroup struct {
	CPU    CPU
	Memory Memory
	// Pids is pids.current: the tasks (processes and threads) in the cgroup and below.
	Pids uint64
	// Pressure of each resource (cpu, memory, io); nil where the kernel has no PSI.
	CPUPressure, MemoryPressure, IOPressure *Pressure

	Throttling   Throttling
	MemoryDetail MemoryDetail
	PidsMax      uint64   // pids.max; 0: no limit
	IO           []Device // per block device, as the kernel lists them
	Procs        []int    // cgroup.procs: the processes in the cgroup itself
}

// CPU is cpu.stat's time, in nanoseconds (the kernel counts microseconds).
type CPU struct {
	UsageNanos, UserNanos, SystemNanos uint64
}

// Memory is memory.current, memory.stat and memory.max in the terms the kubelet uses.
type Memory struct {
	Usage uint64 // memory.current: every charged byte, page cache included
	// WorkingSet is Usage less inactive file pages, which the kernel reclaims first: what the
	// kubelet compares against limits and evicts by.
	WorkingSet      uint64
	RSS             uint64 // anonymous memory (memory.stat anon)
	Cache           uint64 // page cache (memory.stat file)
	PageFaults      uint64
	MajorPageFaults uint64
	Limit           uint64 // memory.max; 0: no limit ("max")
}

// Available is the limit less the working set; 0 when there is no limit.
func (m Memory) Available() uint64 {
	if m.Limit == 0 || m.WorkingSet >= m.Limit {
		return 0
	}
	return m.Limit - m.WorkingSet
}

// Pressure is one resource's PSI lines (cpu.pressure, memory.pressure, io.pressure).
type Pressure struct {
	Some, Full PressureLine
}

// PressureLine is one PSI line: stall averages in percent and the total stall in microseconds.
type PressureLine struct {
	Avg10, Avg60, Avg300 float64
	TotalMicros          uint64
}

// Read reads the cgroup at path (as in a spec's cgroupsPath, "/ingot.pods/<pod>") below root,
// where the cgroup file systems are mounted (/sys/fs/cgroup): the unified (v2) hierarchy when
// root is one (it has cgroup.controllers), else the v1 cpuacct, memory and pids hierarchies —
// ingot nodes run v2, but the runtime also serves stats on v1 hosts (tests, critest).
func Read(root, path string) (Cgroup, error) {
	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		return ReadCgroup(filepath.Join(root, path))
	}
	return readV1(root, path)
}

// v1UnlimitedMemory: v1 reports "no limit" as a page-rounded huge number, not "max".
const v1UnlimitedMemory = 1 << 62

// clockTicks is USER_HZ, the unit of v1's cpuacct.stat: 100 on every Linux architecture.
const clockTicks = 100

// readV1 reads a cgroup from the v1 hierarchies: cpuacct (on its own or mounted with cpu),
// memory (its total_* counters include the cgroups below, as v2's do) and pids.
func readV1(root, path string) (Cgroup, error) {
	var c Cgroup
	cpuDir := filepath.Join(root, "cpuacct", path)
	if _, err := os.Stat(cpuDir); err != nil {
		cpuDir = filepath.Join(root, "cpu,cpuacct", path)
	}
	// cpuacct.usage must be there, as cpu.stat on v2: without it path is no cgroup.
	if _, err := os.Stat(filepath.Join(cpuDir, "cpuacct.usage")); err != nil {
		return c, fmt.Errorf("read cgroup %s (v1): %w", path, err)
	}
	usage, err := readUint(filepath.Join(cpuDir, "cpuacct.usage"))
	if err != nil {
		return c, fmt.Errorf("read cgroup %s (v1): %w", path, err)
	}
	ticks, err := readKeyed(filepath.Join(cpuDir, "cpuacct.stat"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return c, fmt.Errorf("read cgroup %s (v1): %w", path, err)
	}
	c.CPU = CPU{UsageNanos: usage, UserNanos: ticks["user"] * (1e9 / clockTicks), SystemNanos: ticks["system"] * (1e9 / clockTicks)}

	memDir := filepath.Join(root, "memory", path)
	mem, err := readKeyed(filepath.Join(memDir, "memory.stat"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return c, fmt.Errorf("read cgroup %s (v1): %w", path, err)
	}
	c.Memory = Memory{RSS: mem["total_rss"], Cache: mem["total_cache"], PageFaults: mem["total_pgfault"], MajorPageFaults: mem["total_pgmajfault"]}
	if c.Memory.Usage, err = readUint(filepath.Join(memDir, "memory.usage_in_bytes")); err != nil {
		return c, fmt.Errorf("read cgroup %s (v1): %w", path, err)
	}
	if inactive := mem["total_inactive_file"]; inactive < c.Memory.Usage {
		c.Memory.WorkingSet = c.Memory.Usage - inactive
	}
	if c.Memory.Limit, err = readUint(filepath.Join(memDir, "memory.limit_in_bytes")); err != nil {
		return c, fmt.Errorf("read cgroup %s (v1): %w", path, err)
	}
	if c.Memory.Limit >= v1UnlimitedMemory {
		c.Memory.Limit = 0
	}
	if c.Pids, err = readUint(filepath.Join(root, "pids", path, "pids.current")); err != nil {
		return c, fmt.Errorf("read cgroup %s (v1): %w", path, err)
	}
	if err := readExtraV1(root, path, &c); err != nil {
		return c, fmt.Errorf("read cgroup %s (v1): %w", path, err)
	}
	return c, nil
}

// ReadCgroup reads the cgroup v2 directory dir (e.g. /sys/fs/cgroup/kubepods/pod…). cpu.stat
// must be there — without it dir is no cgroup v2 directory; other files a kernel or a disabled
// controller leaves out read as zero.
func ReadCgroup(dir string) (Cgroup, error) {
	var c Cgroup
	cpu, err := readKeyed(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return c, fmt.Errorf("read cgroup %s: %w", dir, err)
	}
	c.CPU = CPU{UsageNanos: cpu["usage_usec"] * 1000, UserNanos: cpu["user_usec"] * 1000, SystemNanos: cpu["system_usec"] * 1000}

	mem, err := readKeyed(filepath.Join(dir, "memory.stat"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return c, fmt.Errorf("read cgroup %s: %w", dir, err)
	}
	c.Memory = Memory{RSS: mem["anon"], Cache: mem["file"], PageFaults: mem["pgfault"], MajorPageFaults: mem["pgmajfault"]}
	if c.Memory.Usage, err = readUint(filepath.Join(dir, "memory.current")); err != nil {
		return c, fmt.Errorf("read cgroup %s: %w", dir, err)
	}
	if inactive := mem["inactive_file"]; inactive < c.Memory.Usage {
		c.Memory.WorkingSet = c.Memory.Usage - inactive
	}
	if c.Memory.Limit, err = readUint(filepath.Join(dir, "memory.max")); err != nil {
		return c, fmt.Errorf("read cgroup %s: %w", dir, err)
	}
	if c.Pids, err = readUint(filepath.Join(dir, "pids.current")); err != nil {
		return c, fmt.Errorf("read cgroup %s: %w", dir, err)
	}
	for name, dst := range map[string]**Pressure{"cpu.pressure": &c.CPUPressure, "memory.pressure": &c.MemoryPressure, "io.pressure": &c.IOPressure} {
		p, err := readPressure(filepath.Join(dir, name))
		if err != nil {
			return c, fmt.Errorf("read cgroup %s: %w", dir, err)
		}
		*dst = p
	}
	if err := readExtraV2(dir, &c); err != nil {
		return c, fmt.Errorf("read cgroup %s: %w", dir, err)
	}
	return c, nil
}

// readKeyed reads a flat keyed file ("key value" lines).
func readKeyed(path string) (map[string]uint64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]uint64{}
	for line := range strings.Lines(string(data)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s: key %s: %w", path, k, err)
		}
		out[k] = n
	}
	return out, nil
}

// readUint reads a single-value file; "max" and a missing file (a controller not enabled for
// the cgroup, or the root cgroup's absent memory.max) read as 0.
func readUint(path string) (uint64, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	s := string(bytes.TrimSpace(data))
	if s == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}

// readPressure reads a PSI file: "some avg10=0.12 avg60=… avg300=… total=…" and a "full" line
// (cpu.pressure has one only on newer kernels). A missing file (no CONFIG_PSI) is nil.
func readPressure(path string) (*Pressure, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var p Pressure
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		var line *PressureLine
		switch fields[0] {
		case "some":
			line = &p.Some
		case "full":
			line = &p.Full
		default:
			continue
		}
		for _, kv := range fields[1:] {
			k, v, _ := strings.Cut(kv, "=")
			var err error
			switch k {
			case "avg10":
				line.Avg10, err = strconv.ParseFloat(v, 64)
			case "avg60":
				line.Avg60, err = strconv.ParseFloat(v, 64)
			case "avg300":
				line.Avg300, err = strconv.ParseFloat(v, 64)
			case "total":
				line.TotalMicros, err = strconv.ParseUint(v, 10, 64)
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %s: %w", path, kv, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &p, nil
}
