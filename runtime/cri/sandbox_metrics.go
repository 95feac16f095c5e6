package cri

import (
	"context"
	"path/filepath"
	"strconv"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/stats"
	"ingot.dev/ingot/runtime/store"
)

// The metrics below are the cAdvisor names the kubelet serves on /metrics/cadvisor when its
// PodAndContainerStatsFromCRI gate takes them from the runtime (ListMetricDescriptors once,
// ListPodSandboxMetrics per scrape) instead of from cAdvisor: every name critest v1.37 expects but
// hugetlb, PSI, ulimits, cpu quota and memory reservation. The main ones:
//
//	container_cpu_usage_seconds_total, _user_, _system_   counter  cpu.stat (whole seconds)
//	container_memory_usage_bytes                           gauge    memory.current
//	container_memory_working_set_bytes                     gauge    memory.current - inactive_file
//	container_memory_rss, container_memory_cache           gauge    memory.stat anon, file
//	container_spec_memory_limit_bytes                      gauge    memory.max (0: none)
//	container_threads                                      gauge    pids.current (tasks, not processes)
//	container_start_time_seconds                           gauge    the container's start (containers only)
//	container_network_{receive,transmit}_{bytes,packets,errors,packets_dropped}_total
//	                                                       counter  the pod's namespace, per interface
//
// Besides: CFS periods and throttling (cpu.stat, cpu.max, cpu.weight as shares), memory detail
// (kernel, mapped file, peak, swap, failcnt, oom kills, page faults by type), pids.max, the
// processes in cgroup.procs with their fds and sockets from /proc, per-device I/O (io.stat or
// blkio), and each container's writable layer (statfs and a bounded du of upper/).
//
// Label keys are id (the container's or pod's id), name (the container's or pod's name) and
// image (the container's image; "" for a pod); network metrics add interface. The kubelet adds
// namespace, pod and container itself, so the runtime must not send those. CRI values are
// integers: seconds counters are truncated to whole seconds, as containerd and CRI-O do.
// Each pod reports its cgroup's CPU and memory and its network under Metrics, and each
// container its own cgroup's under ContainerMetrics.

var (
	metricLabels    = []string{"id", "name", "image"}
	netMetricLabels = []string{"id", "name", "image", "interface"}
)

// sample is one reading of a pod's or container's cgroup with what is counted from its
// processes.
type sample struct {
	cg           stats.Cgroup
	fds, sockets uint64
}

type cgroupMetric struct {
	name, help string
	typ        runtimeapi.MetricType
	value      func(sample) uint64
}

const (
	counter = runtimeapi.MetricType_COUNTER
	gauge   = runtimeapi.MetricType_GAUGE
)

var cgroupMetrics = []cgroupMetric{
	{"container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", counter,
		func(s sample) uint64 { return s.cg.CPU.UsageNanos / uint64(time.Second) }},
	{"container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", counter,
		func(s sample) uint64 { return s.cg.CPU.UserNanos / uint64(time.Second) }},
	{"container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", counter,
		func(s sample) uint64 { return s.cg.CPU.SystemNanos / uint64(time.Second) }},
	{"container_cpu_cfs_periods_total", "Number of elapsed enforcement period intervals.", counter,
		func(s sample) uint64 { return s.cg.Throttling.Periods }},
	{"container_cpu_cfs_throttled_periods_total", "Number of throttled period intervals.", counter,
		func(s sample) uint64 { return s.cg.Throttling.ThrottledPeriods }},
	{"container_cpu_cfs_throttled_seconds_total", "Total time duration the container has been throttled.", counter,
		func(s sample) uint64 { return s.cg.Throttling.ThrottledNanos / uint64(time.Second) }},
	{"container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed.", gauge,
		func(s sample) uint64 { return s.cg.Memory.Usage }},
	{"container_memory_working_set_bytes", "Current working set in bytes.", gauge,
		func(s sample) uint64 { return s.cg.Memory.WorkingSet }},
	{"container_memory_rss", "Size of RSS in bytes.", gauge,
		func(s sample) uint64 { return s.cg.Memory.RSS }},
	{"container_memory_cache", "Number of bytes of page cache memory.", gauge,
		func(s sample) uint64 { return s.cg.Memory.Cache }},
	{"container_memory_kernel_usage", "Size of kernel memory allocated in bytes.", gauge,
		func(s sample) uint64 { return s.cg.MemoryDetail.Kernel }},
	{"container_memory_mapped_file", "Size of memory mapped files in bytes.", gauge,
		func(s sample) uint64 { return s.cg.MemoryDetail.MappedFile }},
	{"container_memory_max_usage_bytes", "Maximum memory usage recorded in bytes.", gauge,
		func(s sample) uint64 { return s.cg.MemoryDetail.MaxUsage }},
	{"container_memory_swap", "Container swap usage in bytes.", gauge,
		func(s sample) uint64 { return s.cg.MemoryDetail.Swap }},
	{"container_memory_failcnt", "Number of memory usage hits limits.", counter,
		func(s sample) uint64 { return s.cg.MemoryDetail.Failcnt }},
	{"container_oom_events_total", "Count of out of memory events observed for the container.", counter,
		func(s sample) uint64 { return s.cg.MemoryDetail.OOMEvents }},
	{"container_spec_memory_limit_bytes", "Memory limit for the container.", gauge,
		func(s sample) uint64 { return s.cg.Memory.Limit }},
	{"container_spec_memory_swap_limit_bytes", "Memory swap limit for the container.", gauge,
		func(s sample) uint64 { return s.cg.MemoryDetail.SwapLimit }},
	{"container_spec_cpu_period", "CPU period of the container.", gauge,
		func(s sample) uint64 { return s.cg.Throttling.PeriodMicros }},
	{"container_spec_cpu_shares", "CPU share of the container.", gauge,
		func(s sample) uint64 { return s.cg.Throttling.Shares }},
	{"container_threads", "Number of threads running inside the container.", gauge,
		func(s sample) uint64 { return s.cg.Pids }},
	{"container_threads_max", "Maximum number of threads allowed inside the container, 0 if unlimited.", gauge,
		func(s sample) uint64 { return s.cg.PidsMax }},
	{"container_processes", "Number of processes running inside the container.", gauge,
		func(s sample) uint64 { return uint64(len(s.cg.Procs)) }},
	{"container_file_descriptors", "Number of open file descriptors for the container.", gauge,
		func(s sample) uint64 { return s.fds }},
	{"container_sockets", "Number of open sockets for the container.", gauge,
		func(s sample) uint64 { return s.sockets }},
}

// lastSeenMetric is the time of the reading: every metric here is read at the scrape.
const lastSeenMetric = "container_last_seen"

// memoryFailures is memory.stat's page fault counters by failure_type. v2's memory.stat and
// v1's total_* counters both include the cgroups below, so scope "hierarchy" and "container"
// carry the same value (ingot's containers have no cgroups below them).
var memoryFailures = []struct {
	typ   string
	value func(stats.Memory) uint64
}{
	{"pgfault", func(m stats.Memory) uint64 { return m.PageFaults }},
	{"pgmajfault", func(m stats.Memory) uint64 { return m.MajorPageFaults }},
}

const memoryFailuresMetric = "container_memory_failures_total"

// deviceMetric is a block device's I/O by the cgroup (label device, its /dev name).
type deviceMetric struct {
	name, help string
	value      func(stats.Device) uint64
}

var deviceMetrics = []deviceMetric{
	{"container_fs_reads_bytes_total", "Cumulative count of bytes read.", func(d stats.Device) uint64 { return d.ReadBytes }},
	{"container_fs_reads_total", "Cumulative count of reads completed.", func(d stats.Device) uint64 { return d.Reads }},
	{"container_fs_writes_bytes_total", "Cumulative count of bytes written.", func(d stats.Device) uint64 { return d.WriteBytes }},
	{"container_fs_writes_total", "Cumulative count of writes completed.", func(d stats.Device) uint64 { return d.Writes }},
}

const blkioMetric = "container_blkio_device_usage_total"

// layerMetrics describe a container's writable layer (label device: the file system's
// major:minor); pods have none.
var layerMetrics = []struct {
	name, help string
	value      func(stats.Filesystem) uint64
}{
	{"container_fs_usage_bytes", "Number of bytes that are consumed by the container on this filesystem.", func(f stats.Filesystem) uint64 { return f.Usage }},
	{"container_fs_limit_bytes", "Number of bytes that can be consumed by the container on this filesystem.", func(f stats.Filesystem) uint64 { return f.Limit }},
	{"container_fs_inodes_total", "Number of Inodes.", func(f stats.Filesystem) uint64 { return f.InodesTotal }},
	{"container_fs_inodes_free", "Number of available Inodes.", func(f stats.Filesystem) uint64 { return f.InodesFree }},
}

var (
	failureLabels = []string{"id", "name", "image", "failure_type", "scope"}
	blkioLabels   = []string{"id", "name", "image", "device", "major", "minor", "operation"}
	deviceLabels  = []string{"id", "name", "image", "device"}
)

const startTimeMetric = "container_start_time_seconds"

type netMetric struct {
	name, help string
	value      func(stats.Interface) uint64
}

var netMetrics = []netMetric{
	{"container_network_receive_bytes_total", "Cumulative count of bytes received.", func(i stats.Interface) uint64 { return i.RxBytes }},
	{"container_network_receive_packets_total", "Cumulative count of packets received.", func(i stats.Interface) uint64 { return i.RxPackets }},
	{"container_network_receive_errors_total", "Cumulative count of errors encountered while receiving.", func(i stats.Interface) uint64 { return i.RxErrors }},
	{"container_network_receive_packets_dropped_total", "Cumulative count of packets dropped while receiving.", func(i stats.Interface) uint64 { return i.RxDropped }},
	{"container_network_transmit_bytes_total", "Cumulative count of bytes transmitted.", func(i stats.Interface) uint64 { return i.TxBytes }},
	{"container_network_transmit_packets_total", "Cumulative count of packets transmitted.", func(i stats.Interface) uint64 { return i.TxPackets }},
	{"container_network_transmit_errors_total", "Cumulative count of errors encountered while transmitting.", func(i stats.Interface) uint64 { return i.TxErrors }},
	{"container_network_transmit_packets_dropped_total", "Cumulative count of packets dropped while transmitting.", func(i stats.Interface) uint64 { return i.TxDropped }},
}

// ListMetricDescriptors describes every metric ListPodSandboxMetrics reports.
func (s *Server) ListMetricDescriptors(ctx context.Context, r *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	var out []*runtimeapi.MetricDescriptor
	for _, m := range cgroupMetrics {
		out = append(out, &runtimeapi.MetricDescriptor{Name: m.name, Help: m.help, LabelKeys: metricLabels})
	}
	out = append(out, &runtimeapi.MetricDescriptor{Name: startTimeMetric, Help: "Start time of the container since unix epoch in seconds.", LabelKeys: metricLabels},
		&runtimeapi.MetricDescriptor{Name: lastSeenMetric, Help: "Last time a container was seen by the exporter.", LabelKeys: metricLabels},
		&runtimeapi.MetricDescriptor{Name: memoryFailuresMetric, Help: "Cumulative count of memory allocation failures.", LabelKeys: failureLabels},
		&runtimeapi.MetricDescriptor{Name: blkioMetric, Help: "Blkio device bytes usage.", LabelKeys: blkioLabels})
	for _, m := range deviceMetrics {
		out = append(out, &runtimeapi.MetricDescriptor{Name: m.name, Help: m.help, LabelKeys: deviceLabels})
	}
	for _, m := range layerMetrics {
		out = append(out, &runtimeapi.MetricDescriptor{Name: m.name, Help: m.help, LabelKeys: deviceLabels})
	}
	for _, m := range netMetrics {
		out = append(out, &runtimeapi.MetricDescriptor{Name: m.name, Help: m.help, LabelKeys: netMetricLabels})
	}
	return &runtimeapi.ListMetricDescriptorsResponse{Descriptors: out}, nil
}

// ListPodSandboxMetrics reports the metrics of every running pod and its containers. A pod or
// container whose cgroup cannot be read (stopping right now, or a container not started) is
// left out rather than failing the scrape.
func (s *Server) ListPodSandboxMetrics(ctx context.Context, r *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	var pods []*sandbox
	s.mu.Lock()
	for _, sb := range s.sandboxes {
		if sb.Ready {
			pods = append(pods, sb)
		}
	}
	s.mu.Unlock()
	out := []*runtimeapi.PodSandboxMetrics{}
	for _, sb := range pods {
		u, err := s.readPod(sb)
		if err != nil {
			s.log.Debug("pod left out of the metrics", "pod", sb.ID, "err", err)
			continue
		}
		labels := []string{sb.ID, sb.Name, ""}
		pm := &runtimeapi.PodSandboxMetrics{PodSandboxId: sb.ID, Metrics: cgroupMetricValues(u.cgroup, labels)}
		for _, in := range u.net {
			l := append(labels[:len(labels):len(labels)], in.Name)
			for _, m := range netMetrics {
				pm.Metrics = append(pm.Metrics, metric(m.name, counter, l, m.value(in)))
			}
		}
		for _, c := range s.containersOf(sb.ID) {
			if cm, ok := s.containerMetrics(sb, c); ok {
				pm.ContainerMetrics = append(pm.ContainerMetrics, cm)
			}
		}
		out = append(out, pm)
	}
	return &runtimeapi.ListPodSandboxMetricsResponse{PodMetrics: out}, nil
}

// containerMetrics reads a running container's own cgroup, below its pod's (container_create
// places it at the pod's cgroup parent/<container id>).
func (s *Server) containerMetrics(sb *sandbox, c *store.Container) (*runtimeapi.ContainerMetrics, bool) {
	s.mu.Lock()
	rec, parent := *c, sb.CgroupParent
	s.mu.Unlock()
	if rec.State != store.Running {
		return nil, false
	}
	cg, err := stats.Read(s.cgroupFS, filepath.Join(parent, rec.ID))
	if err != nil {
		s.log.Debug("container left out of the metrics", "container", rec.ID, "err", err)
		return nil, false
	}
	cfg := ctrConfig(&rec)
	labels := []string{rec.ID, cfg.GetMetadata().GetName(), cfg.GetImage().GetImage()}
	ms := cgroupMetricValues(cg, labels)
	ms = append(ms, metric(startTimeMetric, gauge, labels, uint64(rec.StartedAt/int64(time.Second))))
	// The writable layer is upper in the container's directory (mountRootfs). If it cannot be
	// read the metrics still go out, as zeros with device "", so each family stays present.
	layer, err := stats.Layer(filepath.Join(rec.Dir, "upper"))
	if err != nil {
		s.log.Debug("container's writable layer unreadable for metrics", "container", rec.ID, "err", err)
	}
	l := append(labels[:len(labels):len(labels)], layer.Device)
	for _, m := range layerMetrics {
		ms = append(ms, metric(m.name, gauge, l, m.value(layer)))
	}
	return &runtimeapi.ContainerMetrics{ContainerId: rec.ID, Metrics: ms}, true
}

// cgroupMetricValues is every metric read from a cgroup and its processes' /proc entries.
func cgroupMetricValues(c stats.Cgroup, labels []string) []*runtimeapi.Metric {
	smp := sample{cg: c}
	smp.fds, smp.sockets = stats.FDs("/proc", c.Procs)
	var out []*runtimeapi.Metric
	for _, m := range cgroupMetrics {
		out = append(out, metric(m.name, m.typ, labels, m.value(smp)))
	}
	out = append(out, metric(lastSeenMetric, gauge, labels, uint64(time.Now().Unix())))
	for _, f := range memoryFailures {
		for _, scope := range []string{"container", "hierarchy"} {
			out = append(out, metric(memoryFailuresMetric, counter, append(labels[:len(labels):len(labels)], f.typ, scope), f.value(c.Memory)))
		}
	}
	for _, d := range c.IO {
		dev := d.Name()
		l := append(labels[:len(labels):len(labels)], dev)
		for _, m := range deviceMetrics {
			out = append(out, metric(m.name, counter, l, m.value(d)))
		}
		for _, op := range []struct {
			name string
			v    uint64
		}{{"Read", d.ReadBytes}, {"Write", d.WriteBytes}} {
			out = append(out, metric(blkioMetric, counter,
				append(labels[:len(labels):len(labels)], dev, strconv.FormatUint(d.Major, 10), strconv.FormatUint(d.Minor, 10), op.name), op.v))
		}
	}
	return out
}

// metric is one value gathered now (Timestamp 0: not cached, CRI's convention).
func metric(name string, typ runtimeapi.MetricType, labels []string, v uint64) *runtimeapi.Metric {
	return &runtimeapi.Metric{Name: name, MetricType: typ, LabelValues: labels, Value: &runtimeapi.UInt64Value{Value: v}}
}
