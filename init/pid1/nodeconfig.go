package pid1

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strings"

	"ingot.dev/ingot/init/nodesource"
	"ingot.dev/ingot/profiles"
	"ingot.dev/ingot/profiles/nodeconfig"
)

// nodeSettings is the outcome of reading the node config: what boot applies (the effective
// profile) and the parsed config that later consumers read (NTP servers, labels and taints,
// [kubernetes], [api]). Config is nil when the node has none.
type nodeSettings struct {
	Config *nodeconfig.Config
	From   string // the file it came from, for the log: "fw_cfg:opt/ingot/node.toml", a kept copy
	Meta   nodesource.MetaData
}

// NTP is the node config's time servers (nil: none set), for the NTP client, which then falls back
// to DHCP option 42 and the profile's.
func (s *nodeSettings) NTP() []string {
	if s == nil || s.Config == nil {
		return nil
	}
	return s.Config.NTP
}

// namesNode reports whether the node config gives the hostname. Precedence is node config, then
// DHCP, then the profile: a lease may rename the node only when this is false.
func (s *nodeSettings) namesNode() bool {
	return s != nil && s.Config != nil && s.Config.Hostname != ""
}

// readNodeConfig is the "node-config" boot step: it finds node.toml (fw_cfg, config drive, cidata,
// in that order or as ingot.node= says), parses it, keeps a good one on /var and falls back to the
// kept copy when no source is present. A missing source is one info line; a bad one is one warning
// naming the source and the file:line:key, and boot goes on with the kept or the built-in
// settings. It never fails the boot and never logs the config's content.
type readNodeConfig struct {
	log     *slog.Logger
	reader  nodesource.Reader
	cmdline string // /proc/cmdline's content
	keptDir string
	out     *nodeSettings
}

func (r readNodeConfig) String() string {
	return fmt.Sprintf("read node config (fw_cfg %s, a volume labelled %s or %s; kept in %s)",
		nodesource.FwCfgName, nodesource.DriveLabel, nodesource.CidataLabel, r.keptDir)
}

func (r readNodeConfig) Do(ctx context.Context) error {
	order, err := nodesource.Order(r.cmdline)
	if err != nil {
		r.log.Warn("kernel command line: "+err.Error()+"; trying every source", "err", err)
	}
	src, err := r.reader.Read(ctx, order)
	switch {
	case errors.Is(err, nodesource.ErrNotFound):
		r.log.Info("no node config source", "tried", fmt.Sprint(order))
	case err != nil:
		r.log.Warn("node config source unreadable; booting with the kept or built-in settings", "source", string(src.Source), "err", err)
	default:
		c, perr := parseSource(src)
		if perr == nil {
			if kerr := nodesource.Keep(r.keptDir, src); kerr != nil {
				r.log.Warn("node config not kept; the next boot without a source will not have it", "err", kerr)
			}
			*r.out = nodeSettings{Config: c, From: src.Name, Meta: src.Meta}
			r.log.Info("node config read", "source", string(src.Source), "from", src.Name)
			return nil
		}
		r.log.Warn("node config rejected; booting with the kept or built-in settings", "source", string(src.Source), "err", perr)
	}
	kept, err := nodesource.LoadKept(r.keptDir)
	if errors.Is(err, nodesource.ErrNotFound) {
		return nil
	}
	c, perr := parseSource(kept)
	if err == nil {
		err = perr
	}
	if err != nil {
		r.log.Warn("kept node config unusable; booting with the built-in settings", "err", err)
		return nil
	}
	*r.out = nodeSettings{Config: c, From: kept.Name, Meta: kept.Meta}
	r.log.Info("node config kept from an earlier boot", "from", kept.Name)
	return nil
}

// parseSource parses a source's node.toml; a cidata volume without one is an empty config whose
// hostname its meta-data gives.
func parseSource(src nodesource.Config) (*nodeconfig.Config, error) {
	c := &nodeconfig.Config{}
	if src.TOML != nil {
		var err error
		if c, err = nodeconfig.Parse(src.Name, src.TOML); err != nil {
			return nil, err
		}
	}
	if c.Hostname == "" && src.Meta.LocalHostname != "" {
		h := strings.ToLower(src.Meta.LocalHostname)
		if !profiles.IsHostname(h) {
			return nil, fmt.Errorf("%s: meta-data: local-hostname: %q is not a hostname (RFC 1123, lowercase)", src.Name, src.Meta.LocalHostname)
		}
		c.Hostname = h
	}
	return c, nil
}

// effective returns the profile as this node runs it: the node config's hostname, its sysctls over
// the profile's, and its [network] in place of the profile's. The profile itself is not changed.
func (s *nodeSettings) effective(p *profiles.Profile) *profiles.Profile {
	q := *p
	c := s.Config
	if c == nil {
		return &q
	}
	if c.Hostname != "" {
		q.Hostname = c.Hostname
	}
	if len(c.Sysctls) > 0 {
		q.Sysctls = maps.Clone(p.Sysctls)
		if q.Sysctls == nil {
			q.Sysctls = map[string]string{}
		}
		maps.Copy(q.Sysctls, c.Sysctls)
	}
	q.Network = c.NetworkFor(p.Network)
	return &q
}

func procCmdline() string {
	data, _ := os.ReadFile("/proc/cmdline")
	return strings.TrimSpace(string(data))
}
