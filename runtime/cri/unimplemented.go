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

func (s *Server) CheckpointContainer(ctx context.Context, r *runtimeapi.CheckpointContainerRequest) (*runtimeapi.CheckpointContainerResponse, error) {
	return nil, unimplemented("CheckpointContainer", "ingot has no CRIU")
}
