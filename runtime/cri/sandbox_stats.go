package cri

import (
	"context"
	"fmt"
	"strings"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
	"ingot.dev/ingot/runtime/stats"
)

// PodSandboxStats reports a running pod's usage: its cgroup's CPU, memory and processes, the
// interface counters of its network namespace, and each of its containers' stats.
func (s *Server) PodSandboxStats(ctx context.Context, r *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	sb, err := s.sandbox(r.GetPodSandboxId())
	if err != nil {
		return nil, s.grpcErr("PodSandboxStats", err)
	}
	st, err := s.podStats(sb)
	if err != nil {
		return nil, s.grpcErr("PodSandboxStats", err, "pod", sb.ID)
	}
	return &runtimeapi.PodSandboxStatsResponse{Stats: st}, nil
}

// ListPodSandboxStats reports every running pod matching the filter (id or prefix, labels). A
// pod whose usage cannot be read (stopping right now) is left out with a warning rather than
// failing the listing, as the kubelet asks for all pods at once.
func (s *Server) ListPodSandboxStats(ctx context.Context, r *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	f := r.GetFilter()
	var pods []*sandbox
	s.mu.Lock()
	for _, sb := range s.sandboxes {
		if sb.Ready && strings.HasPrefix(sb.ID, f.GetId()) && labelsMatch(sb.config().GetLabels(), f.GetLabelSelector()) {
			pods = append(pods, sb)
		}
	}
	s.mu.Unlock()
	out := []*runtimeapi.PodSandboxStats{}
	for _, sb := range pods {
		st, err := s.podStats(sb)
		if err != nil {
			s.log.Warn("pod stats left out of the listing", "pod", sb.ID, "err", err)
			continue
		}
		out = append(out, st)
	}
	return &runtimeapi.ListPodSandboxStatsResponse{Stats: out}, nil
}

// podUsage is what podStats and the pod metrics read of a pod, once per request.
type podUsage struct {
	at     time.Time
	cgroup stats.Cgroup
	net    []stats.Interface // without lo; none for a host-network pod
}

// readPod reads a ready pod's cgroup and network namespace.
func (s *Server) readPod(sb *sandbox) (podUsage, error) {
	s.mu.Lock()
	ready, cgroup, nsPath := sb.Ready, sb.CgroupParent, sb.NetNS
	s.mu.Unlock()
	if !ready {
		return podUsage{}, fmt.Errorf("pod sandbox %s is not ready: a stopped pod has no usage: %w", sb.ID, errdefs.ErrPrecondition)
	}
	u := podUsage{at: time.Now()}
	var err error
	if u.cgroup, err = stats.Read(s.cgroupFS, cgroup); err != nil {
		return podUsage{}, fmt.Errorf("pod %s: %w", sb.ID, err)
	}
	if nsPath != "" {
		ifs, err := stats.Network(nsPath)
		if err != nil {
			return podUsage{}, fmt.Errorf("pod %s: %w", sb.ID, err)
		}
		for _, i := range ifs {
			if i.Name != "lo" { // the kubelet and cAdvisor count traffic leaving the pod only
				u.net = append(u.net, i)
			}
		}
	}
	return u, nil
}

func (s *Server) podStats(sb *sandbox) (*runtimeapi.PodSandboxStats, error) {
	u, err := s.readPod(sb)
	if err != nil {
		return nil, err
	}
	cfg := sb.config()
	now := u.at.UnixNano()
	c := u.cgroup
	linux := &runtimeapi.LinuxPodSandboxStats{
		Cpu:     s.cpuUsage("pod/"+sb.ID, c, u.at),
		Memory:  memoryUsage(c, now),
		Process: &runtimeapi.ProcessUsage{Timestamp: now, ProcessCount: &runtimeapi.UInt64Value{Value: c.Pids}},
		Network: networkUsage(u.net, now),
	}
	if c.IOPressure != nil {
		linux.Io = &runtimeapi.IoUsage{Timestamp: now, Psi: psi(c.IOPressure)}
	}
	for _, ctr := range s.containersOf(sb.ID) {
		linux.Containers = append(linux.Containers, s.containerStats(ctr))
	}
	return &runtimeapi.PodSandboxStats{
		Attributes: &runtimeapi.PodSandboxAttributes{Id: sb.ID, Metadata: cfg.GetMetadata(),
			Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations()},
		Linux: linux,
	}, nil
}

// cpuUsage reports cumulative CPU time and, from the previous sample of key, the current rate.
func (s *Server) cpuUsage(key string, c stats.Cgroup, at time.Time) *runtimeapi.CpuUsage {
	u := &runtimeapi.CpuUsage{Timestamp: at.UnixNano(), UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: c.CPU.UsageNanos}}
	if n, ok := s.cpuSamples.NanoCores(key, c.CPU.UsageNanos, at); ok {
		u.UsageNanoCores = &runtimeapi.UInt64Value{Value: n}
	}
	if c.CPUPressure != nil {
		u.Psi = psi(c.CPUPressure)
	}
	return u
}

func memoryUsage(c stats.Cgroup, now int64) *runtimeapi.MemoryUsage {
	m := c.Memory
	u := &runtimeapi.MemoryUsage{Timestamp: now,
		WorkingSetBytes: &runtimeapi.UInt64Value{Value: m.WorkingSet},
		UsageBytes:      &runtimeapi.UInt64Value{Value: m.Usage},
		RssBytes:        &runtimeapi.UInt64Value{Value: m.RSS},
		PageFaults:      &runtimeapi.UInt64Value{Value: m.PageFaults},
		MajorPageFaults: &runtimeapi.UInt64Value{Value: m.MajorPageFaults},
	}
	if m.Limit > 0 {
		u.AvailableBytes = &runtimeapi.UInt64Value{Value: m.Available()}
	}
	if c.MemoryPressure != nil {
		u.Psi = psi(c.MemoryPressure)
	}
	return u
}

// networkUsage: the default interface is eth0, the one the pod network (and CNI plugins) give
// a pod, else the first; the others are listed besides it (CRI: "excluding the default").
func networkUsage(ifs []stats.Interface, now int64) *runtimeapi.NetworkUsage {
	if len(ifs) == 0 {
		return nil
	}
	def := 0
	for i, in := range ifs {
		if in.Name == "eth0" {
			def = i
		}
	}
	u := &runtimeapi.NetworkUsage{Timestamp: now, DefaultInterface: ifaceUsage(ifs[def])}
	for i, in := range ifs {
		if i != def {
			u.Interfaces = append(u.Interfaces, ifaceUsage(in))
		}
	}
	return u
}

func ifaceUsage(i stats.Interface) *runtimeapi.NetworkInterfaceUsage {
	return &runtimeapi.NetworkInterfaceUsage{Name: i.Name,
		RxBytes: &runtimeapi.UInt64Value{Value: i.RxBytes}, RxErrors: &runtimeapi.UInt64Value{Value: i.RxErrors},
		TxBytes: &runtimeapi.UInt64Value{Value: i.TxBytes}, TxErrors: &runtimeapi.UInt64Value{Value: i.TxErrors}}
}

func psi(p *stats.Pressure) *runtimeapi.PsiStats {
	line := func(l stats.PressureLine) *runtimeapi.PsiData {
		return &runtimeapi.PsiData{Total: l.TotalMicros, Avg10: l.Avg10, Avg60: l.Avg60, Avg300: l.Avg300}
	}
	return &runtimeapi.PsiStats{Some: line(p.Some), Full: line(p.Full)}
}
