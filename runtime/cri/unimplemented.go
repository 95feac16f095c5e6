package cri

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The calls below are not supported yet; each answers Unimplemented with the reason, so a caller
// knows what is missing rather than getting a generic "method not implemented".

func unimplemented(call, why string) error {
	return status.Errorf(codes.Unimplemented, "%s is not supported by ingot yet: %s", call, why)
}

func (s *Server) Exec(ctx context.Context, r *runtimeapi.ExecRequest) (*runtimeapi.ExecResponse, error) {
	return nil, unimplemented("Exec", "interactive streaming (the cri-streaming server) is not built; ExecSync works")
}

func (s *Server) Attach(ctx context.Context, r *runtimeapi.AttachRequest) (*runtimeapi.AttachResponse, error) {
	return nil, unimplemented("Attach", "interactive streaming (the cri-streaming server) is not built")
}

func (s *Server) PortForward(ctx context.Context, r *runtimeapi.PortForwardRequest) (*runtimeapi.PortForwardResponse, error) {
	return nil, unimplemented("PortForward", "interactive streaming (the cri-streaming server) is not built")
}

func (s *Server) PodSandboxStats(ctx context.Context, r *runtimeapi.PodSandboxStatsRequest) (*runtimeapi.PodSandboxStatsResponse, error) {
	return nil, unimplemented("PodSandboxStats", "pod statistics (runtime/stats) are not built")
}

func (s *Server) ListPodSandboxStats(ctx context.Context, r *runtimeapi.ListPodSandboxStatsRequest) (*runtimeapi.ListPodSandboxStatsResponse, error) {
	return nil, unimplemented("ListPodSandboxStats", "pod statistics (runtime/stats) are not built")
}

func (s *Server) CheckpointContainer(ctx context.Context, r *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	return nil, unimplemented("CheckpointContainer", "ingot has no CRIU")
}

func (s *Server) GetContainerEvents(r *runtimeapi.GetEventsRequest, srv runtimeapi.RuntimeService_GetContainerEventsServer) error {
	return unimplemented("GetContainerEvents", "the event stream (evented PLEG) is not built; the kubelet falls back to relisting")
}

func (s *Server) ListMetricDescriptors(ctx context.Context, r *runtimeapi.ListMetricDescriptorsRequest) (*runtimeapi.ListMetricDescriptorsResponse, error) {
	return nil, unimplemented("ListMetricDescriptors", "CRI metrics are not built")
}

func (s *Server) ListPodSandboxMetrics(ctx context.Context, r *runtimeapi.ListPodSandboxMetricsRequest) (*runtimeapi.ListPodSandboxMetricsResponse, error) {
	return nil, unimplemented("ListPodSandboxMetrics", "CRI metrics are not built")
}
