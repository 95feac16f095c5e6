package cri

import (
	"context"
	"strings"

	"google.golang.org/protobuf/proto"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func (sb *sandbox) config() *runtimeapi.PodSandboxConfig {
	var cfg runtimeapi.PodSandboxConfig
	proto.Unmarshal(sb.Config, &cfg)
	return &cfg
}

func (sb *sandbox) state() runtimeapi.PodSandboxState {
	if sb.Ready {
		return runtimeapi.PodSandboxState_SANDBOX_READY
	}
	return runtimeapi.PodSandboxState_SANDBOX_NOTREADY
}

// PodSandboxStatus reports a pod. Its addresses are the ones the pod network gave it in
// RunPodSandbox, kept in the pod's record (the network is not asked again): none for a
// host-network pod, a pod without a pod network, or a stopped pod, whose addresses are released.
// Verbose adds the pause process's pid and the shim's directory.
func (s *Server) PodSandboxStatus(ctx context.Context, r *runtimeapi.PodSandboxStatusRequest) (*runtimeapi.PodSandboxStatusResponse, error) {
	sb, err := s.sandbox(r.GetPodSandboxId())
	if err != nil {
		return nil, s.grpcErr("PodSandboxStatus", err)
	}
	resp := &runtimeapi.PodSandboxStatusResponse{Status: sandboxStatus(sb)}
	if r.GetVerbose() {
		resp.Info = map[string]string{"info": `{"pid":` + itoa(sb.PausePid) + `,"shim":"` + sb.ShimDir + `"}`}
	}
	return resp, nil
}

// sandboxStatus reports sb as recorded.
func sandboxStatus(sb *sandbox) *runtimeapi.PodSandboxStatus {
	cfg := sb.config()
	nsOpts := cfg.GetLinux().GetSecurityContext().GetNamespaceOptions()
	return &runtimeapi.PodSandboxStatus{
		Id:             sb.ID,
		Metadata:       cfg.GetMetadata(),
		State:          sb.state(),
		CreatedAt:      sb.CreatedAt,
		Network:        networkStatus(sb),
		Linux:          &runtimeapi.LinuxPodSandboxStatus{Namespaces: &runtimeapi.Namespace{Options: nsOpts}},
		Labels:         cfg.GetLabels(),
		Annotations:    cfg.GetAnnotations(),
		RuntimeHandler: sb.Handler,
	}
}

// ListPodSandbox lists pods, filtered by id (or prefix), state and labels.
func (s *Server) ListPodSandbox(ctx context.Context, r *runtimeapi.ListPodSandboxRequest) (*runtimeapi.ListPodSandboxResponse, error) {
	f := r.GetFilter()
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*runtimeapi.PodSandbox
	for _, sb := range s.sandboxes {
		if f.GetId() != "" && !strings.HasPrefix(sb.ID, f.GetId()) {
			continue
		}
		if f.GetState() != nil && f.GetState().GetState() != sb.state() {
			continue
		}
		cfg := sb.config()
		if !labelsMatch(cfg.GetLabels(), f.GetLabelSelector()) {
			continue
		}
		out = append(out, &runtimeapi.PodSandbox{
			Id: sb.ID, Metadata: cfg.GetMetadata(), State: sb.state(), CreatedAt: sb.CreatedAt,
			Labels: cfg.GetLabels(), Annotations: cfg.GetAnnotations(), RuntimeHandler: sb.Handler,
		})
	}
	return &runtimeapi.ListPodSandboxResponse{Items: out}, nil
}

func labelsMatch(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// networkStatus reports the pod's addresses: the first is the primary, the rest additional.
func networkStatus(sb *sandbox) *runtimeapi.PodSandboxNetworkStatus {
	st := &runtimeapi.PodSandboxNetworkStatus{}
	if !sb.Ready {
		return st // a stopped pod's address is released
	}
	for i, ip := range sb.IPs {
		if i == 0 {
			st.Ip = ip
			continue
		}
		st.AdditionalIps = append(st.AdditionalIps, &runtimeapi.PodIP{Ip: ip})
	}
	return st
}
