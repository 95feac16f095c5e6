package cri

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/errdefs"
)

// Version reports the runtime's name and versions.
func (s *Server) Version(ctx context.Context, r *runtimeapi.VersionRequest) (*runtimeapi.VersionResponse, error) {
	v := s.opts.Version
	if v == "" {
		v = "0.1.0"
	}
	return &runtimeapi.VersionResponse{Version: "0.1.0", RuntimeName: "ingot", RuntimeVersion: v, RuntimeApiVersion: "v1"}, nil
}

// Status reports RuntimeReady and NetworkReady. Pod networking (bridge, IPAM, CNI) is not part of
// the runtime yet: pods get their own network namespace with loopback only, and NetworkReady says
// so, as the kubelet expects from a runtime without a usable pod network.
func (s *Server) Status(ctx context.Context, r *runtimeapi.StatusRequest) (*runtimeapi.StatusResponse, error) {
	network := &runtimeapi.RuntimeCondition{Type: runtimeapi.NetworkReady, Status: true}
	s.netMu.RLock()
	defer s.netMu.RUnlock()
	if s.network == nil {
		network.Status, network.Reason, network.Message = false, "NoPodNetwork", "the runtime runs without a pod network: pods get loopback only"
	} else if err := s.network.Ready(ctx); err != nil {
		network.Status, network.Reason, network.Message = false, "NetworkPluginNotReady", err.Error()
	}
	conds := []*runtimeapi.RuntimeCondition{{Type: runtimeapi.RuntimeReady, Status: true}, network}
	resp := &runtimeapi.StatusResponse{Status: &runtimeapi.RuntimeStatus{Conditions: conds},
		RuntimeHandlers: s.handlers(), Features: &runtimeapi.RuntimeFeatures{SupplementalGroupsPolicy: true}}
	if r.GetVerbose() {
		s.mu.Lock()
		resp.Info = map[string]string{"pods": strconv.Itoa(len(s.sandboxes)), "containers": strconv.Itoa(len(s.containers)),
			"root": s.opts.Root, "state": s.opts.State}
		s.mu.Unlock()
	}
	return resp, nil
}

// handlers are the runtime handlers RunPodSandbox accepts ("" is the default) and what each
// supports. User namespaces are per pod (the pause process's); image and volume files keep their
// host owners (no idmapped mounts yet), so they read as the overflow user inside.
func (s *Server) handlers() []*runtimeapi.RuntimeHandler {
	var out []*runtimeapi.RuntimeHandler
	for _, name := range []string{"", "runc", "ingot"} {
		out = append(out, &runtimeapi.RuntimeHandler{Name: name,
			Features: &runtimeapi.RuntimeHandlerFeatures{RecursiveReadOnlyMounts: s.rro, UserNamespaces: true}})
	}
	return out
}

// RuntimeConfig tells the kubelet which cgroup driver to use: cgroupfs (ingot has no systemd).
func (s *Server) RuntimeConfig(ctx context.Context, r *runtimeapi.RuntimeConfigRequest) (*runtimeapi.RuntimeConfigResponse, error) {
	return &runtimeapi.RuntimeConfigResponse{Linux: &runtimeapi.LinuxRuntimeConfiguration{
		CgroupDriver: runtimeapi.CgroupDriver_CGROUPFS,
	}}, nil
}

// UpdateRuntimeConfig records the pod CIDR the kubelet assigns; the pod network will use it.
func (s *Server) UpdateRuntimeConfig(ctx context.Context, r *runtimeapi.UpdateRuntimeConfigRequest) (*runtimeapi.UpdateRuntimeConfigResponse, error) {
	raw := r.GetRuntimeConfig().GetNetworkConfig().GetPodCidr()
	s.mu.Lock()
	same := raw == s.podCIDR
	s.podCIDR = raw
	busy := false
	for _, sb := range s.sandboxes {
		busy = busy || sb.NetNS != ""
	}
	s.mu.Unlock()
	if same || raw == "" || s.opts.PodCIDR == nil {
		return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
	}
	// The CRI sends one CIDR per family, comma-separated, for dual-stack nodes.
	var cidrs []netip.Prefix
	for _, c := range strings.Split(raw, ",") {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			return nil, s.grpcErr("UpdateRuntimeConfig", fmt.Errorf("pod CIDR %q: %w: %w", c, errdefs.ErrInvalid, err))
		}
		cidrs = append(cidrs, p.Masked())
	}
	s.netMu.Lock()
	defer s.netMu.Unlock()
	next, err := s.opts.PodCIDR(ctx, cidrs, busy)
	if err != nil {
		return nil, s.grpcErr("UpdateRuntimeConfig", err)
	}
	if next != nil {
		s.network = next
		s.log.Info("pod network now over the kubelet's pod CIDR", "cidrs", raw)
	}
	return &runtimeapi.UpdateRuntimeConfigResponse{}, nil
}

func itoa(i int) string { return strconv.Itoa(i) }
