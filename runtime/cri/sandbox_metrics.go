package cri

import (
	"context"
	"path/filepath"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/stats"
	"ingot.dev/ingot/runtime/store"
)

// The metrics below are the cAdvisor names the kubelet serves on /metrics/cadvisor when its
// PodAndContainerStatsFromCRI gate takes them from the runtime (ListMetricDescriptors once,
// ListPodSandboxMetrics per scrape) instead of from cAdvisor. A useful subset:
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

type cgroupMetric struct {
	name, help string
	typ        runtimeapi.MetricType
	value      func(stats.Cgroup) uint64
}

var cgroupMetrics = []cgroupMetric{
	{"container_cpu_usage_seconds_total", "Cumulative cpu time consumed in seconds.", runtimeapi.MetricType_COUNTER,
		func(c stats.Cgroup) uint64 { return c.CPU.UsageNanos / uint64(time.Second) }},
	{"container_cpu_user_seconds_total", "Cumulative user cpu time consumed in seconds.", runtimeapi.MetricType_COUNTER,
		func(c stats.Cgroup) uint64 { return c.CPU.UserNanos / uint64(time.Second) }},
	{"container_cpu_system_seconds_total", "Cumulative system cpu time consumed in seconds.", runtimeapi.MetricType_COUNTER,
		func(c stats.Cgroup) uint64 { return c.CPU.SystemNanos / uint64(time.Second) }},
	{"container_memory_usage_bytes", "Current memory usage in bytes, including all memory regardless of when it was accessed.", runtimeapi.MetricType_GAUGE,
		func(c stats.Cgroup) uint64 { return c.Memory.Usage }},
	{"container_memory_working_set_bytes", "Current working set in bytes.", runtimeapi.MetricType_GAUGE,
		func(c stats.Cgroup) uint64 { return c.Memory.WorkingSet }},
	{"container_memory_rss", "Size of RSS in bytes.", runtimeapi.MetricType_GAUGE,
		func(c stats.Cgroup) uint64 { return c.Memory.RSS }},
	{"container_memory_cache", "Number of bytes of page cache memory.", runtimeapi.MetricType_GAUGE,
		func(c stats.Cgroup) uint64 { return c.Memory.Cache }},
	{"container_spec_memory_limit_bytes", "Memory limit for the container.", runtimeapi.MetricType_GAUGE,
		func(c stats.Cgroup) uint64 { return c.Memory.Limit }},
	{"container_threads", "Number of threads running inside the container.", runtimeapi.MetricType_GAUGE,
		func(c stats.Cgroup) uint64 { return c.Pids }},
}

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
	out = append(out, &runtimeapi.MetricDescriptor{Name: startTimeMetric, Help: "Start time of the container since unix epoch in seconds.", LabelKeys: metricLabels})
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
				pm.Metrics = append(pm.Metrics, metric(m.name, runtimeapi.MetricType_COUNTER, l, m.value(in)))
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
	ms = append(ms, metric(startTimeMetric, runtimeapi.MetricType_GAUGE, labels, uint64(rec.StartedAt/int64(time.Second))))
	return &runtimeapi.ContainerMetrics{ContainerId: rec.ID, Metrics: ms}, true
}

func cgroupMetricValues(c stats.Cgroup, labels []string) []*runtimeapi.Metric {
	var out []*runtimeapi.Metric
	for _, m := range cgroupMetrics {
		out = append(out, metric(m.name, m.typ, labels, m.value(c)))
	}
	return out
}

// metric is one value gathered now (Timestamp 0: not cached, CRI's convention).
func metric(name string, typ runtimeapi.MetricType, labels []string, v uint64) *runtimeapi.Metric {
	return &runtimeapi.Metric{Name: name, MetricType: typ, LabelValues: labels, Value: &runtimeapi.UInt64Value{Value: v}}
}
