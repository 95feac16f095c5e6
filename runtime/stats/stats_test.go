package stats

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/netsetup/netns"
)

// writeCgroup lays out a fake cgroup v2 directory from name → content.
func writeCgroup(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestReadCgroup(t *testing.T) {
	dir := writeCgroup(t, map[string]string{
		"cpu.stat":       "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\nnr_periods 0\n",
		"memory.current": "10485760\n",
		"memory.stat":    "anon 4194304\nfile 6291456\nactive_file 2097152\ninactive_file 4194304\npgfault 1234\npgmajfault 7\n",
		"memory.max":     "67108864\n",
		"pids.current":   "3\n",
		"io.pressure":    "some avg10=1.50 avg60=0.25 avg300=0.00 total=98765\nfull avg10=0.50 avg60=0.00 avg300=0.00 total=4321\n",
	})
	c, err := ReadCgroup(dir)
	if err != nil {
		t.Fatal(err)
	}
	want := Cgroup{
		CPU: CPU{UsageNanos: 2_500_000_000, UserNanos: 2_000_000_000, SystemNanos: 500_000_000},
		Memory: Memory{Usage: 10 << 20, WorkingSet: 6 << 20, RSS: 4 << 20, Cache: 6 << 20,
			PageFaults: 1234, MajorPageFaults: 7, Limit: 64 << 20},
		Pids: 3,
	}
	if c.CPU != want.CPU || c.Memory != want.Memory || c.Pids != want.Pids {
		t.Errorf("ReadCgroup = %+v\nwant %+v", c, want)
	}
	if got := c.Memory.Available(); got != 58<<20 {
		t.Errorf("available = %d, want %d (limit less working set)", got, 58<<20)
	}
	if c.CPUPressure != nil || c.MemoryPressure != nil {
		t.Errorf("pressure without cpu.pressure/memory.pressure files: %+v %+v", c.CPUPressure, c.MemoryPressure)
	}
	wantIO := Pressure{Some: PressureLine{Avg10: 1.5, Avg60: 0.25, TotalMicros: 98765}, Full: PressureLine{Avg10: 0.5, TotalMicros: 4321}}
	if c.IOPressure == nil || *c.IOPressure != wantIO {
		t.Errorf("io pressure = %+v, want %+v", c.IOPressure, wantIO)
	}
}

// TestReadCgroupNoLimit: memory.max "max" is no limit, and nothing is available "against" it.
func TestReadCgroupNoLimit(t *testing.T) {
	dir := writeCgroup(t, map[string]string{
		"cpu.stat": "usage_usec 1\n", "memory.current": "4096\n", "memory.max": "max\n",
		"memory.stat": "inactive_file 8192\n", // more than usage: working set is 0, not a wrap
	})
	c, err := ReadCgroup(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.Memory.Limit != 0 || c.Memory.Available() != 0 || c.Memory.WorkingSet != 0 || c.CPU.UsageNanos != 1000 {
		t.Errorf("ReadCgroup = %+v", c)
	}
}

func TestReadCgroupErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "gone")
	if _, err := ReadCgroup(missing); err == nil || !strings.Contains(err.Error(), "read cgroup "+missing) {
		t.Errorf("ReadCgroup of a missing directory: err = %v, want one naming it", err)
	}
	dir := writeCgroup(t, map[string]string{"cpu.stat": "usage_usec 1\n", "memory.current": "lots\n"})
	if _, err := ReadCgroup(dir); err == nil || !strings.Contains(err.Error(), "memory.current") {
		t.Errorf("ReadCgroup with a garbled memory.current: err = %v, want one naming the file", err)
	}
}

// TestReadV1: without cgroup.controllers at the root, Read takes the v1 hierarchies: cpuacct
// (ticks of USER_HZ for user and system), memory's total_* counters, an "unlimited" limit.
func TestReadV1(t *testing.T) {
	root := t.TempDir()
	for dir, files := range map[string]map[string]string{
		"cpu,cpuacct/pods/p1": {"cpuacct.usage": "2500000000\n", "cpuacct.stat": "user 200\nsystem 50\n"},
		"memory/pods/p1": {"memory.usage_in_bytes": "10485760\n", "memory.limit_in_bytes": "9223372036854771712\n",
			"memory.stat": "rss 1\ntotal_rss 4194304\ntotal_cache 6291456\ntotal_inactive_file 4194304\ntotal_pgfault 9\ntotal_pgmajfault 1\n"},
		"pids/pods/p1": {"pids.current": "5\n"},
	} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(root, dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	c, err := Read(root, "/pods/p1")
	if err != nil {
		t.Fatal(err)
	}
	want := Cgroup{CPU: CPU{UsageNanos: 2_500_000_000, UserNanos: 2_000_000_000, SystemNanos: 500_000_000},
		Memory: Memory{Usage: 10 << 20, WorkingSet: 6 << 20, RSS: 4 << 20, Cache: 6 << 20, PageFaults: 9, MajorPageFaults: 1},
		Pids:   5}
	if c.CPU != want.CPU || c.Memory != want.Memory || c.Pids != want.Pids {
		t.Errorf("Read (v1) = %+v\nwant %+v", c, want)
	}
	if _, err := Read(root, "/pods/gone"); err == nil || !strings.Contains(err.Error(), "/pods/gone") {
		t.Errorf("Read of a missing v1 cgroup: err = %v, want one naming it", err)
	}
	// With cgroup.controllers the root is v2: the same path is read as a v2 directory.
	os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpu\n"), 0o644)
	if _, err := Read(root, "/pods/p1"); err == nil || !strings.Contains(err.Error(), "cpu.stat") {
		t.Errorf("Read under a v2 root: err = %v, want the missing cpu.stat", err)
	}
}

func TestCPUSampler(t *testing.T) {
	var s CPUSampler
	t0 := time.Unix(1000, 0)
	if _, ok := s.NanoCores("pod", 5e9, t0); ok {
		t.Error("first sample has a rate")
	}
	// 1.5 s of CPU over 2 s of wall time: three quarters of a core.
	if n, ok := s.NanoCores("pod", 6.5e9, t0.Add(2*time.Second)); !ok || n != 750_000_000 {
		t.Errorf("NanoCores = %d, %v; want 750000000, true", n, ok)
	}
	if _, ok := s.NanoCores("other", 1e9, t0.Add(2*time.Second)); ok {
		t.Error("a second key shares the first key's sample")
	}
	// A counter that went backwards is a new cgroup under the same key: no rate.
	if _, ok := s.NanoCores("pod", 1e9, t0.Add(3*time.Second)); ok {
		t.Error("rate over a counter that went backwards")
	}
	// A key not sampled for longer than the TTL is forgotten.
	s.NanoCores("pod", 2e9, t0.Add(time.Hour))
	if _, had := s.last["other"]; had {
		t.Error("a sample an hour old is still kept")
	}
}

func TestParseNetDev(t *testing.T) {
	const dev = `Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     140       2    0    0    0     0          0         0      140       2    0    0    0     0       0          0
  eth0: 1234567    1000    3    4    0     0          0         0   765432     900    5    6    0     0       0          0
`
	got, err := ParseNetDev(strings.NewReader(dev))
	if err != nil {
		t.Fatal(err)
	}
	want := []Interface{
		{Name: "lo", RxBytes: 140, RxPackets: 2, TxBytes: 140, TxPackets: 2},
		{Name: "eth0", RxBytes: 1234567, RxPackets: 1000, RxErrors: 3, RxDropped: 4, TxBytes: 765432, TxPackets: 900, TxErrors: 5, TxDropped: 6},
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("ParseNetDev = %+v\nwant %+v", got, want)
	}
	if _, err := ParseNetDev(strings.NewReader("h1\nh2\n  eth0: 1 2 3\n")); err == nil || !strings.Contains(err.Error(), "eth0") {
		t.Errorf("short line: err = %v, want one quoting it", err)
	}
}

// TestNetworkReadsTheNamespace: Network reports the counters of the namespace it is given, not
// the caller's: a fresh namespace has only lo, and lo counts the datagram sent inside it.
func TestNetworkReadsTheNamespace(t *testing.T) {
	testgate.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "ns")
	if err := netns.New(path); err != nil {
		t.Fatal(err)
	}
	defer netns.Remove(path)
	err := netns.Do(path, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(lo); err != nil {
			return err
		}
		c, err := net.Dial("udp", "127.0.0.1:9")
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(make([]byte, 1000))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ifs, err := Network(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(ifs) != 1 || ifs[0].Name != "lo" || ifs[0].TxBytes < 1000 || ifs[0].RxBytes < 1000 {
		t.Errorf("interfaces of the namespace: %+v, want lo alone with the 1000-byte datagram counted", ifs)
	}
	if _, err := Network(filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "network counters of") {
		t.Errorf("Network of a missing namespace: err = %v", err)
	}
}

// TestReadV1Detail: on v1 the throttling, spec, memory detail, blkio and processes come from
// the cpu, memory, pids and blkio hierarchies; memsw counts memory and swap together.
func TestReadV1Detail(t *testing.T) {
	root := t.TempDir()
	for dir, files := range map[string]map[string]string{
		"cpu,cpuacct/pods/p1": {"cpuacct.usage": "1\n", "cpu.stat": "nr_periods 7\nnr_throttled 3\nthrottled_time 2000000000\n",
			"cpu.cfs_period_us": "100000\n", "cpu.shares": "512\n"},
		"memory/pods/p1": {"memory.usage_in_bytes": "8192\n", "memory.limit_in_bytes": "9223372036854771712\n",
			"memory.stat": "total_mapped_file 4096\n", "memory.kmem.usage_in_bytes": "1024\n", "memory.max_usage_in_bytes": "16384\n",
			"memory.failcnt": "2\n", "memory.memsw.usage_in_bytes": "12288\n", "memory.memsw.limit_in_bytes": "9223372036854771712\n",
			"memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"},
		"pids/pods/p1":  {"pids.current": "2\n", "pids.max": "max\n", "cgroup.procs": "10\n11\n"},
		"blkio/pods/p1": {"blkio.throttle.io_service_bytes_recursive": "8:0 Read 4096\n8:0 Write 512\n8:0 Total 4608\nTotal 4608\n", "blkio.throttle.io_serviced_recursive": "8:0 Read 1\n8:0 Write 1\nTotal 2\n"},
	} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, content := range files {
			if err := os.WriteFile(filepath.Join(root, dir, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	c, err := Read(root, "/pods/p1")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Throttling{Periods: 7, ThrottledPeriods: 3, ThrottledNanos: 2e9, PeriodMicros: 100000, Shares: 512}); c.Throttling != want {
		t.Errorf("throttling = %+v, want %+v", c.Throttling, want)
	}
	if want := (MemoryDetail{Kernel: 1024, MappedFile: 4096, MaxUsage: 16384, Swap: 4096, Failcnt: 2, OOMEvents: 3}); c.MemoryDetail != want {
		t.Errorf("memory detail = %+v, want %+v", c.MemoryDetail, want)
	}
	if want := []Device{{Major: 8, ReadBytes: 4096, WriteBytes: 512, Reads: 1, Writes: 1}}; len(c.IO) != 1 || c.IO[0] != want[0] {
		t.Errorf("io = %+v, want %+v", c.IO, want)
	}
	if c.PidsMax != 0 || len(c.Procs) != 2 || c.Procs[1] != 11 {
		t.Errorf("pids.max %d, procs %v: want 0 (max) and [10 11]", c.PidsMax, c.Procs)
	}
}
