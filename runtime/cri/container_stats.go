package cri

import (
	"context"
	"io/fs"
	"path/filepath"
	"syscall"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/store"
)

// ContainerStats reports one container's CPU, memory and writable-layer usage.
func (s *Server) ContainerStats(ctx context.Context, r *runtimeapi.ContainerStatsRequest) (*runtimeapi.ContainerStatsResponse, error) {
	c, _, err := s.container(r.GetContainerId())
	if err != nil {
		return nil, s.grpcErr("ContainerStats", err)
	}
	return &runtimeapi.ContainerStatsResponse{Stats: s.containerStats(c)}, nil
}

// ListContainerStats reports every container matching the filter (id or prefix, pod, labels).
func (s *Server) ListContainerStats(ctx context.Context, r *runtimeapi.ListContainerStatsRequest) (*runtimeapi.ListContainerStatsResponse, error) {
	f := r.GetFilter()
	var out []*runtimeapi.ContainerStats
	for _, c := range s.containersMatching(f.GetId(), f.GetPodSandboxId()) {
		if !labelsMatch(ctrConfig(c).GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, s.containerStats(c))
	}
	return &runtimeapi.ListContainerStatsResponse{Stats: out}, nil
}

// containerStats asks the pod's shim for the container's cgroup usage. A container whose shim
// cannot answer (exited, shim gone) reports zero usage rather than failing a whole listing.
func (s *Server) containerStats(c *store.Container) *runtimeapi.ContainerStats {
	s.mu.Lock()
	sb := s.sandboxes[c.SandboxID]
	rec := *c
	s.mu.Unlock()
	cfg := ctrConfig(&rec)
	now := time.Now().UnixNano()
	st := &runtimeapi.ContainerStats{
		Attributes: &runtimeapi.ContainerAttributes{Id: rec.ID, Metadata: cfg.GetMetadata(),
			Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations()},
		Cpu:    &runtimeapi.CpuUsage{Timestamp: now, UsageCoreNanoSeconds: &runtimeapi.UInt64Value{}},
		Memory: &runtimeapi.MemoryUsage{Timestamp: now, WorkingSetBytes: &runtimeapi.UInt64Value{}},
	}
	if sb != nil && sb.shim != nil {
		if u, err := sb.shim.Stats(rec.ID); err == nil {
			st.Cpu.UsageCoreNanoSeconds.Value = u.CPUNanos
			if n, ok := s.cpuSamples.NanoCores("ctr/"+rec.ID, u.CPUNanos, time.Unix(0, now)); ok {
				st.Cpu.UsageNanoCores = &runtimeapi.UInt64Value{Value: n}
			}
			st.Memory = &runtimeapi.MemoryUsage{Timestamp: now,
				WorkingSetBytes: &runtimeapi.UInt64Value{Value: u.WorkingSet},
				UsageBytes:      &runtimeapi.UInt64Value{Value: u.MemoryUsage},
				RssBytes:        &runtimeapi.UInt64Value{Value: u.RSS},
				PageFaults:      &runtimeapi.UInt64Value{Value: u.PageFaults},
				MajorPageFaults: &runtimeapi.UInt64Value{Value: u.MajorPageFaults},
			}
			if u.MemoryLimit > u.WorkingSet {
				st.Memory.AvailableBytes = &runtimeapi.UInt64Value{Value: u.MemoryLimit - u.WorkingSet}
			}
		}
	}
	used, inodes := diskUsage(filepath.Join(rec.Dir, "upper"))
	st.WritableLayer = &runtimeapi.FilesystemUsage{Timestamp: now,
		FsId:      &runtimeapi.FilesystemIdentifier{Mountpoint: s.opts.Root},
		UsedBytes: &runtimeapi.UInt64Value{Value: used}, InodesUsed: &runtimeapi.UInt64Value{Value: inodes}}
	return st
}

// diskUsage sums the blocks and counts the inodes under dir (a container's writable layer).
func diskUsage(dir string) (bytes, inodes uint64) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		inodes++
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				bytes += uint64(st.Blocks) * 512
			}
		}
		return nil
	})
	return bytes, inodes
}
