package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// What a runtime and its pods cost, read from /proc and the cgroup tree the same way for ingot
// and for containerd.

// rssKiB reads a process's resident set size.
func rssKiB(pid int) int { return procKiB(fmt.Sprintf("/proc/%d/status", pid), "VmRSS:") }

// pssKiB reads a process's proportional set size: shared pages (the same binary mapped by every
// shim) count once across the processes sharing them, so a sum of PSS is the memory really used.
func pssKiB(pid int) int { return procKiB(fmt.Sprintf("/proc/%d/smaps_rollup", pid), "Pss:") }

func procKiB(path, field string) int {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(l, field); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	return 0
}

// ProgramDir is a directory on a tmpfs mounted for the test (huge=never), for the programs whose
// memory is measured. Where a program's file lives decides how much of it a process maps: ext4
// on recent kernels caches files in large folios, and a process that touches one page of a
// 2 MiB folio of its text maps all of it (FilePmdMapped in smaps), so a daemon run from /tmp
// shows nearly its whole binary as resident. An ingot node runs its binary from the initramfs, a
// tmpfs with small pages; both runtimes compared run from one such copy.
func ProgramDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "mode=0755,huge=never"); err != nil {
		t.Fatalf("tmpfs for the programs measured: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// podMemory is what a runtime's pods cost in processes of their own.
type podMemory struct {
	shims, pauses     int
	shimPSS, pausePSS int // KiB
}

// cgroupMemory is the kernel's side of the pods: what their memory cgroups are charged.
type cgroupMemory struct {
	// charged is memory.current (cgroup v2) or memory.usage_in_bytes (v1): the pods' pages, page
	// cache they read, and kernel memory; kernel is the kernel's part of it: memory.stat's kernel
	// (v2) or memory.kmem.usage_in_bytes (v1): slab, stacks, page tables. Bytes, summed.
	charged, kernel int64
}

// processTable maps every process to its parent.
func processTable() map[int]int {
	parents := map[int]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
		f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:]))
		if len(f) > 1 {
			parents[pid], _ = strconv.Atoi(f[1])
		}
	}
	return parents
}

// ingotShims are the shims of ingot's daemon: its children running the shim role.
func ingotShims(daemonPid int) []int {
	var shims []int
	for pid, ppid := range processTable() {
		if ppid == daemonPid && strings.Contains(cmdline(pid), "\x00shim\x00") {
			shims = append(shims, pid)
		}
	}
	return shims
}

// shimMemory sums the PSS of shims and of their pause processes (the other children are the
// pods' containers: the workload, not the runtime's cost), and what the cgroups of all of the
// shims' children are charged.
func shimMemory(shims []int) (podMemory, cgroupMemory) {
	var m podMemory
	var k cgroupMemory
	children := map[int][]int{}
	for pid, ppid := range processTable() {
		children[ppid] = append(children[ppid], pid)
	}
	cgroups := map[string]bool{}
	for _, shim := range shims {
		m.shims++
		m.shimPSS += pssKiB(shim)
		for _, c := range children[shim] {
			if strings.HasPrefix(cmdline(c), "/pause\x00") {
				m.pauses++
				m.pausePSS += pssKiB(c)
			}
			if cg := memoryCgroupOf(c); cg != "" {
				cgroups[cg] = true
			}
		}
	}
	for cg := range cgroups {
		if cgroupV1 {
			k.charged += readInt(filepath.Join(cg, "memory.usage_in_bytes"))
			k.kernel += readInt(filepath.Join(cg, "memory.kmem.usage_in_bytes"))
			continue
		}
		k.charged += readInt(filepath.Join(cg, "memory.current"))
		if b, err := os.ReadFile(filepath.Join(cg, "memory.stat")); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(l, "kernel "); ok {
					n, _ := strconv.ParseInt(v, 10, 64)
					k.kernel += n
				}
			}
		}
	}
	return m, k
}

// memoryCgroupOf is the directory of a process's memory cgroup: under /sys/fs/cgroup/memory when
// the host mounts the v1 memory controller (hybrid hosts), else in the v2 tree ("" when unknown).
func memoryCgroupOf(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return ""
	}
	v2 := ""
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.SplitN(l, ":", 3)
		if len(f) != 3 {
			continue
		}
		if slices.Contains(strings.Split(f[1], ","), "memory") {
			return filepath.Join("/sys/fs/cgroup/memory", f[2])
		}
		if f[0] == "0" && f[1] == "" {
			v2 = filepath.Join("/sys/fs/cgroup", f[2])
		}
	}
	return v2
}

// cgroupV1 is whether the memory controller is mounted as cgroup v1.
var cgroupV1 = func() bool {
	_, err := os.Stat("/sys/fs/cgroup/memory/memory.usage_in_bytes")
	return err == nil
}()

func readInt(path string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// removeAllPods stops and removes every pod of the runtime at socket, through the CRI.
func removeAllPods(socket string) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return
	}
	defer conn.Close()
	rt := runtimeapi.NewRuntimeServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pods, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return
	}
	for _, p := range pods.Items {
		rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: p.Id})
		rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: p.Id})
	}
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return string(b)
}
