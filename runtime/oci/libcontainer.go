package oci

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/cgroups"
	// Device rules fail without the cgroup device controller implementation registered.
	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	// nsexec: the C half of container setup, run before the Go runtime starts in `init`.
	_ "github.com/opencontainers/runc/libcontainer/nsenter"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// InitArg is the argument libcontainer re-executes the binary with to become a container's init.
const InitArg = "init"

// MaybeInit turns the process into a container init when libcontainer re-executed it for that. It
// must run before anything else in main (or TestMain); it does not return in that case.
func MaybeInit() {
	if len(os.Args) > 1 && os.Args[1] == InitArg {
		libcontainer.Init()
	}
}

// Create makes a libcontainer container (not yet started) from an OCI spec. root is the
// libcontainer state directory; cgroupsPath is the container's cgroup ("/ingot.pods/pod-x/ctr").
func Create(root, id string, spec *specs.Spec) (*libcontainer.Container, error) {
	cfg, err := specconv.CreateLibcontainerConfig(&specconv.CreateOpts{
		CgroupName:   id,
		Spec:         spec,
		NoNewKeyring: false,
	})
	if err != nil {
		return nil, fmt.Errorf("container %s: convert spec: %w", id, err)
	}
	c, err := libcontainer.Create(root, id, cfg)
	if err != nil {
		return nil, fmt.Errorf("container %s: create: %w", id, err)
	}
	return c, nil
}

// Load finds an existing container in root.
func Load(root, id string) (*libcontainer.Container, error) {
	return libcontainer.Load(root, id)
}

// Process converts an OCI process into a libcontainer process (stdio is the caller's to set).
func Process(p *specs.Process, init bool) (*libcontainer.Process, error) {
	nnp := p.NoNewPrivileges
	lp := &libcontainer.Process{
		Args:            p.Args,
		Env:             p.Env,
		UID:             int(p.User.UID),
		GID:             int(p.User.GID),
		Cwd:             p.Cwd,
		NoNewPrivileges: &nnp,
		AppArmorProfile: p.ApparmorProfile,
		Label:           p.SelinuxLabel,
		Init:            init,
	}
	if b := p.ConsoleSize; b != nil && p.Terminal {
		// runc's init sizes the terminal before the process starts, so its first look at the
		// size (stty size, a full-screen program drawing) sees the client's.
		lp.ConsoleWidth, lp.ConsoleHeight = uint16(min(b.Width, 0xffff)), uint16(min(b.Height, 0xffff))
	}
	if c := p.Capabilities; c != nil {
		lp.Capabilities = &configs.Capabilities{Bounding: c.Bounding, Effective: c.Effective,
			Inheritable: c.Inheritable, Permitted: c.Permitted, Ambient: c.Ambient}
	}
	for _, g := range p.User.AdditionalGids {
		lp.AdditionalGroups = append(lp.AdditionalGroups, int(g))
	}
	for _, r := range p.Rlimits {
		typ, ok := rlimitTypes[r.Type]
		if !ok {
			return nil, fmt.Errorf("process: unknown rlimit %q", r.Type)
		}
		lp.Rlimits = append(lp.Rlimits, configs.Rlimit{Type: typ, Hard: r.Hard, Soft: r.Soft})
	}
	return lp, nil
}

// Usage is a container's resource usage, read from its cgroup.
type Usage struct {
	CPUNanos        uint64 // CPU time used since the container started
	MemoryUsage     uint64 // bytes charged, page cache included
	WorkingSet      uint64 // MemoryUsage less inactive file pages: what the kubelet evicts by
	RSS             uint64 // anonymous memory
	PageFaults      uint64
	MajorPageFaults uint64
	MemoryLimit     uint64 // 0: no limit
}

// Stats reads a container's usage from its cgroup (v1 or v2).
func Stats(c *libcontainer.Container) (Usage, error) {
	st, err := c.Stats()
	if err != nil {
		return Usage{}, fmt.Errorf("container %s: stats: %w", c.ID(), err)
	}
	var u Usage
	if cg := st.CgroupStats; cg != nil {
		m := cg.MemoryStats
		u.CPUNanos = cg.CpuStats.CpuUsage.TotalUsage
		u.MemoryUsage = m.Usage.Usage
		// cgroup v1 names the hierarchical counters total_*; v2 has only its own.
		pick := func(keys ...string) uint64 {
			for _, k := range keys {
				if v, ok := m.Stats[k]; ok {
					return v
				}
			}
			return 0
		}
		inactive := pick("total_inactive_file", "inactive_file")
		if inactive < u.MemoryUsage {
			u.WorkingSet = u.MemoryUsage - inactive
		}
		u.RSS = pick("total_rss", "anon")
		u.PageFaults = pick("total_pgfault", "pgfault")
		u.MajorPageFaults = pick("total_pgmajfault", "pgmajfault")
		if l := m.Usage.Limit; l > 0 && l < 1<<62 { // v1 reports "unlimited" as a huge number
			u.MemoryLimit = l
		}
	}
	return u, nil
}

// OOMKilled reports whether the kernel's OOM killer has killed a process of the container's
// cgroup: memory.oom_control's oom_kill on cgroup v1, memory.events' on v2.
func OOMKilled(c *libcontainer.Container) bool {
	st, err := c.State()
	if err != nil {
		return false
	}
	if p, ok := st.CgroupPaths["memory"]; ok && p != "" {
		return keyedValue(filepath.Join(p, "memory.oom_control"), "oom_kill") > 0
	}
	if p, ok := st.CgroupPaths[""]; ok && p != "" {
		return keyedValue(filepath.Join(p, "memory.events"), "oom_kill") > 0
	}
	return false
}

// keyedValue reads "key value" lines of a cgroup file; 0 when absent.
func keyedValue(path, key string) uint64 {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		k, v, ok := strings.Cut(line, " ")
		if ok && k == key {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// RemoveCgroup removes the cgroup at path (as in a spec's cgroupsPath, "/ingot.pods/<pod>")
// and every cgroup below it, in every hierarchy: the v1 controllers and named hierarchies, the
// v2 hierarchy of a hybrid host, or the unified one. libcontainer removes a container's own
// cgroup; the runtime removes the parents it made for pods. A missing path is not an error.
func RemoveCgroup(path string) error {
	var roots []string
	if cgroups.IsCgroup2UnifiedMode() {
		roots = []string{"/sys/fs/cgroup"}
	} else {
		mounts, err := cgroups.GetCgroupMounts(true)
		if err != nil {
			return fmt.Errorf("remove cgroup %s: %w", path, err)
		}
		for _, m := range mounts {
			roots = append(roots, m.Mountpoint)
		}
		if cgroups.IsCgroup2HybridMode() {
			roots = append(roots, "/sys/fs/cgroup/unified")
		}
	}
	var errs []error
	for _, r := range roots {
		if err := cgroups.RemovePath(filepath.Join(r, path)); err != nil {
			errs = append(errs, fmt.Errorf("remove cgroup %s: %w", filepath.Join(r, path), err))
		}
	}
	return errors.Join(errs...)
}

// Update changes a created or running container's cgroup limits to r (CRI
// UpdateContainerResources: the request is the whole desired set, not a change). Limits r leaves
// unset keep their values.
func Update(c *libcontainer.Container, r *specs.LinuxResources) error {
	cfg := c.Config()
	cg := *cfg.Cgroups // copies: libcontainer restores the old limits from its own on failure
	res := *cg.Resources
	if m := r.Memory; m != nil {
		if m.Limit != nil {
			res.Memory = *m.Limit
		}
		if m.Swap != nil {
			res.MemorySwap = *m.Swap
		}
	}
	if p := r.CPU; p != nil {
		if p.Shares != nil {
			res.CpuShares = *p.Shares
		}
		if p.Quota != nil {
			res.CpuQuota = *p.Quota
		}
		if p.Period != nil {
			res.CpuPeriod = *p.Period
		}
		if p.Cpus != "" {
			res.CpusetCpus = p.Cpus
		}
		if p.Mems != "" {
			res.CpusetMems = p.Mems
		}
	}
	if len(r.HugepageLimits) > 0 {
		res.HugetlbLimit = nil
		for _, h := range r.HugepageLimits {
			res.HugetlbLimit = append(res.HugetlbLimit, &cgroups.HugepageLimit{Pagesize: h.Pagesize, Limit: h.Limit})
		}
	}
	if len(r.Unified) > 0 {
		res.Unified = r.Unified
	}
	cg.Resources = &res
	cfg.Cgroups = &cg
	if err := c.Set(cfg); err != nil {
		return fmt.Errorf("container %s: update resources: %w", c.ID(), err)
	}
	return nil
}
