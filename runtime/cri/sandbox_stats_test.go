package cri

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// fakeCgroup writes a cgroup v2 directory under the server's (fake) cgroup mount.
func fakeCgroup(t *testing.T, s *Server, path string, files map[string]string) {
	t.Helper()
	dir := filepath.Join(s.cgroupFS, path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// podWithCgroup is a running pod with one running container, both with fake cgroups.
func podWithCgroup(t *testing.T) *Server {
	s := newTestServer(t)
	s.cgroupFS = t.TempDir()
	fakeCgroup(t, s, "/", map[string]string{"cgroup.controllers": "cpu memory pids\n"}) // a v2 root
	sh := newFakeShim()
	addPod(t, s, podA, sh)
	s.mu.Lock()
	sb := s.sandboxes[podA]
	sb.CgroupParent = "/ingot.pods/" + podA
	cfg, _ := proto.Marshal(&runtimeapi.PodSandboxConfig{Metadata: &runtimeapi.PodSandboxMetadata{Name: "web", Namespace: "default", Uid: "u1"},
		Labels: map[string]string{"app": "web"}})
	sb.Config = cfg
	s.mu.Unlock()
	addContainer(t, s, ctrX, podA, sh)
	fakeCgroup(t, s, sb.CgroupParent, map[string]string{
		"cpu.stat": "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\n", "memory.current": "8388608\n",
		"memory.stat": "anon 2097152\nfile 4194304\ninactive_file 3145728\npgfault 50\npgmajfault 2\n",
		"memory.max":  "16777216\n", "pids.current": "4\n",
	})
	fakeCgroup(t, s, filepath.Join(sb.CgroupParent, ctrX), map[string]string{
		"cpu.stat": "usage_usec 2000000\nnr_periods 10\nnr_throttled 4\nthrottled_usec 3500000\n",
		"cpu.max":  "20000 100000\n", "cpu.weight": "39\n",
		"memory.current": "4194304\n", "memory.max": "max\n", "pids.current": "2\n", "pids.max": "1024\n",
		"memory.stat": "kernel 65536\nfile_mapped 8192\npgfault 30\npgmajfault 1\n",
		"memory.peak": "5242880\n", "memory.swap.current": "4096\n", "memory.swap.max": "max\n",
		"memory.events": "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\n",
		"io.stat":       "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n",
		// The test process stands in for the container's: its fds and sockets are counted.
		"cgroup.procs": fmt.Sprintf("%d\n", os.Getpid()),
	})
	return s
}

// TestPodSandboxStats: a pod's stats are its cgroup's (working set less inactive file pages,
// available against memory.max, process count) with its containers'; a second reading has a
// CPU rate; a filter on labels picks the pod and one on another label none.
func TestPodSandboxStats(t *testing.T) {
	s := podWithCgroup(t)
	ctx := context.Background()
	resp, err := s.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: podA[:6]})
	if err != nil {
		t.Fatal(err)
	}
	st := resp.GetStats()
	l := st.GetLinux()
	if st.GetAttributes().GetId() != podA || st.GetAttributes().GetMetadata().GetName() != "web" {
		t.Errorf("attributes = %v", st.GetAttributes())
	}
	if got := l.GetCpu().GetUsageCoreNanoSeconds().GetValue(); got != 3e9 {
		t.Errorf("cpu usage = %d ns, want 3e9", got)
	}
	if l.GetCpu().GetUsageNanoCores() != nil {
		t.Errorf("a first reading has a rate: %v", l.GetCpu().GetUsageNanoCores())
	}
	m := l.GetMemory()
	if m.GetWorkingSetBytes().GetValue() != 5<<20 || m.GetUsageBytes().GetValue() != 8<<20 || m.GetRssBytes().GetValue() != 2<<20 ||
		m.GetAvailableBytes().GetValue() != 11<<20 || m.GetPageFaults().GetValue() != 50 || m.GetMajorPageFaults().GetValue() != 2 {
		t.Errorf("memory = %v, want working set 5 MiB, usage 8 MiB, rss 2 MiB, available 11 MiB, faults 50/2", m)
	}
	if l.GetProcess().GetProcessCount().GetValue() != 4 {
		t.Errorf("processes = %v, want 4", l.GetProcess())
	}
	if l.GetNetwork() != nil {
		t.Errorf("network counters for a pod without a network namespace: %v", l.GetNetwork())
	}
	if len(l.GetContainers()) != 1 || l.GetContainers()[0].GetAttributes().GetId() != ctrX {
		t.Errorf("containers in the pod's stats: %v", l.GetContainers())
	}

	// One more second of CPU over the time between the readings: a non-zero rate.
	fakeCgroup(t, s, "/ingot.pods/"+podA, map[string]string{"cpu.stat": "usage_usec 4000000\n"})
	list, err := s.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{
		Filter: &runtimeapi.PodSandboxStatsFilter{LabelSelector: map[string]string{"app": "web"}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetStats()) != 1 || list.GetStats()[0].GetLinux().GetCpu().GetUsageNanoCores().GetValue() == 0 {
		t.Fatalf("ListPodSandboxStats = %v, want the pod with a CPU rate", list.GetStats())
	}
	list, err = s.ListPodSandboxStats(ctx, &runtimeapi.ListPodSandboxStatsRequest{
		Filter: &runtimeapi.PodSandboxStatsFilter{LabelSelector: map[string]string{"app": "db"}}})
	if err != nil || len(list.GetStats()) != 0 {
		t.Errorf("ListPodSandboxStats app=db = %v, %v; want none", list.GetStats(), err)
	}

	// A stopped pod has no usage.
	s.mu.Lock()
	s.sandboxes[podA].Ready = false
	s.mu.Unlock()
	_, err = s.PodSandboxStats(ctx, &runtimeapi.PodSandboxStatsRequest{PodSandboxId: podA})
	wantCode(t, "PodSandboxStats of a stopped pod", err, codes.FailedPrecondition, podA)
}

// TestPodSandboxMetrics: every metric ListPodSandboxMetrics reports has a descriptor, with as
// many label values as the descriptor has keys, and the values are the cgroups'.
func TestPodSandboxMetrics(t *testing.T) {
	s := podWithCgroup(t)
	ctx := context.Background()
	// What the container wrote: its writable layer's usage counts it.
	upper := filepath.Join(s.ctrDir(ctrX), "upper")
	if err := os.WriteFile(filepath.Join(upper, "data"), make([]byte, 64<<10), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a socket of the "container's" process
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d, err := s.ListMetricDescriptors(ctx, &runtimeapi.ListMetricDescriptorsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	for _, m := range d.GetDescriptors() {
		keys[m.GetName()] = m.GetLabelKeys()
		if slices.ContainsFunc(m.GetLabelKeys(), func(k string) bool { return k == "namespace" || k == "pod" || k == "container" }) {
			t.Errorf("%s has a label the kubelet adds itself: %v", m.GetName(), m.GetLabelKeys())
		}
	}
	resp, err := s.ListPodSandboxMetrics(ctx, &runtimeapi.ListPodSandboxMetricsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetPodMetrics()) != 1 {
		t.Fatalf("pod metrics = %v, want one pod", resp.GetPodMetrics())
	}
	pm := resp.GetPodMetrics()[0]
	values := map[string]uint64{}
	check := func(owner string, ms []*runtimeapi.Metric) {
		for _, m := range ms {
			k, ok := keys[m.GetName()]
			if !ok || len(k) != len(m.GetLabelValues()) {
				t.Errorf("%s metric %s: labels %v, descriptor keys %v", owner, m.GetName(), m.GetLabelValues(), k)
			}
			key := owner + " " + m.GetName()
			switch m.GetName() {
			case "container_memory_failures_total":
				key += " " + strings.Join(m.GetLabelValues()[3:], " ")
			case "container_blkio_device_usage_total":
				key += " " + m.GetLabelValues()[6]
			}
			values[key] = m.GetValue().GetValue()
		}
	}
	check("pod", pm.GetMetrics())
	if len(pm.GetContainerMetrics()) != 1 || pm.GetContainerMetrics()[0].GetContainerId() != ctrX {
		t.Fatalf("container metrics = %v", pm.GetContainerMetrics())
	}
	check("ctr", pm.GetContainerMetrics()[0].GetMetrics())
	want := map[string]uint64{
		"ctr container_cpu_cfs_periods_total": 10, "ctr container_cpu_cfs_throttled_periods_total": 4,
		"ctr container_cpu_cfs_throttled_seconds_total": 3, "ctr container_spec_cpu_period": 100000,
		"ctr container_spec_cpu_shares":     998, // weight 39 is what the kubelet makes of 1024 shares
		"ctr container_memory_kernel_usage": 65536, "ctr container_memory_mapped_file": 8192,
		"ctr container_memory_max_usage_bytes": 5 << 20, "ctr container_memory_swap": 4096,
		"ctr container_spec_memory_swap_limit_bytes": 0, "ctr container_memory_failcnt": 5,
		"ctr container_oom_events_total": 1, "ctr container_threads_max": 1024, "ctr container_processes": 1,
		"ctr container_memory_failures_total pgmajfault hierarchy": 1, "ctr container_memory_failures_total pgfault container": 30,
		"ctr container_fs_reads_bytes_total": 4096, "ctr container_fs_writes_total": 2,
		"ctr container_blkio_device_usage_total Write": 8192,
		"pod container_cpu_usage_seconds_total":        3, "pod container_cpu_user_seconds_total": 2,
		"pod container_memory_working_set_bytes": 5 << 20, "pod container_spec_memory_limit_bytes": 16 << 20,
		"pod container_threads": 4, "ctr container_cpu_usage_seconds_total": 2, "ctr container_memory_usage_bytes": 4 << 20,
		"ctr container_spec_memory_limit_bytes": 0, "ctr container_threads": 2,
	}
	for k, v := range want {
		if got, ok := values[k]; !ok || got != v {
			t.Errorf("%s = %d (reported: %v), want %d", k, got, ok, v)
		}
	}
	for _, k := range []string{"ctr container_file_descriptors", "ctr container_sockets", "ctr container_fs_limit_bytes",
		"ctr container_fs_inodes_total", "ctr container_fs_inodes_free"} {
		if values[k] == 0 {
			t.Errorf("%s = 0, want the test process's / the file system's count", k)
		}
	}
	if got := values["ctr container_fs_usage_bytes"]; got < 64<<10 {
		t.Errorf("container_fs_usage_bytes = %d, want at least the 64 KiB written to the layer", got)
	}
	if got := int64(values["ctr container_last_seen"]); got < time.Now().Unix()-60 {
		t.Errorf("container_last_seen = %d, want about now", got)
	}
	// Every name critest (cri-tools v1.37 pkg/validate/pod.go) expects of a running container,
	// but for those it lists as not implemented by any runtime (hugetlb, pressure, ulimits,
	// cpu quota, memory reservation).
	for _, name := range criTestMetricNames {
		if _, ok := keys[name]; !ok {
			t.Errorf("no descriptor for %s", name)
		}
		if strings.HasPrefix(name, "container_network_") {
			continue // the fake pod has no network namespace: the integration test reads eth0
		}
		found := false
		for k := range values {
			if strings.HasPrefix(k, "ctr "+name) || strings.HasPrefix(k, "pod "+name) {
				found = true
			}
		}
		if !found {
			t.Errorf("no value for %s", name)
		}
	}
}

var criTestMetricNames = []string{
	"container_blkio_device_usage_total", "container_cpu_cfs_periods_total", "container_cpu_cfs_throttled_periods_total",
	"container_cpu_cfs_throttled_seconds_total", "container_cpu_system_seconds_total", "container_cpu_usage_seconds_total",
	"container_cpu_user_seconds_total", "container_file_descriptors", "container_fs_inodes_free", "container_fs_inodes_total",
	"container_fs_limit_bytes", "container_fs_reads_bytes_total", "container_fs_reads_total", "container_fs_usage_bytes",
	"container_fs_writes_bytes_total", "container_fs_writes_total", "container_last_seen", "container_memory_cache",
	"container_memory_failcnt", "container_memory_failures_total", "container_memory_kernel_usage",
	"container_memory_mapped_file", "container_memory_max_usage_bytes", "container_memory_rss", "container_memory_swap",
	"container_memory_usage_bytes", "container_memory_working_set_bytes", "container_network_receive_bytes_total",
	"container_network_receive_errors_total", "container_network_receive_packets_dropped_total",
	"container_network_receive_packets_total", "container_network_transmit_bytes_total",
	"container_network_transmit_errors_total", "container_network_transmit_packets_dropped_total",
	"container_network_transmit_packets_total", "container_oom_events_total", "container_processes", "container_sockets",
	"container_spec_cpu_period", "container_spec_cpu_shares", "container_spec_memory_limit_bytes",
	"container_spec_memory_swap_limit_bytes", "container_start_time_seconds", "container_threads", "container_threads_max",
}
