package stats

import (
	"sync"
	"time"
)

// sampleTTL: a sample not renewed for this long belongs to a pod or container that is gone (the
// kubelet asks every 10–15 s); it is dropped so the sampler does not grow without bound.
const sampleTTL = 10 * time.Minute

// CPUSampler turns cumulative CPU time into a rate (usage_nano_cores) by keeping the previous
// sample of each pod or container in memory, as containerd does: the rate is the CPU time used
// between two successive reads divided by the wall time between them.
type CPUSampler struct {
	mu   sync.Mutex
	last map[string]cpuSample
}

type cpuSample struct {
	usage uint64
	at    time.Time
}

// NanoCores records usage (cumulative nanoseconds of CPU) for key at time at and returns the
// average rate since the previous sample of key, in nanocores (1e9 = one CPU busy). The first
// sample of a key, and a sample after the counter went backwards (a new cgroup under a reused
// key), have no rate: ok is false.
func (s *CPUSampler) NanoCores(key string, usage uint64, at time.Time) (nanoCores uint64, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		s.last = map[string]cpuSample{}
	}
	prev, had := s.last[key]
	s.last[key] = cpuSample{usage: usage, at: at}
	for k, v := range s.last {
		if at.Sub(v.at) > sampleTTL {
			delete(s.last, k)
		}
	}
	elapsed := at.Sub(prev.at)
	if !had || elapsed <= 0 || usage < prev.usage {
		return 0, false
	}
	return uint64(float64(usage-prev.usage) / elapsed.Seconds()), true
}
