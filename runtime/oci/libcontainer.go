package oci

import (
	"fmt"
	"os"

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
