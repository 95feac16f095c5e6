package cri

import (
	"fmt"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"ingot.dev/ingot/runtime/logs"
	"ingot.dev/ingot/runtime/oci"
)

// validateSandbox runs before RunPodSandbox changes anything on the node (no directory, shim,
// network namespace or name reservation): a hostile request is refused with InvalidArgument and
// leaves nothing behind. oci.SandboxSpec checks the same again.
func validateSandbox(cfg *runtimeapi.PodSandboxConfig) error {
	return oci.ValidateSandbox(cfg)
}

// validateContainer runs before CreateContainer mounts a rootfs or creates a host path; the
// log path must stay below the pod's log directory (the shim refuses symlinks on the way).
func validateContainer(podCfg *runtimeapi.PodSandboxConfig, cfg *runtimeapi.ContainerConfig) error {
	if err := oci.ValidateContainer(cfg); err != nil {
		return err
	}
	if podCfg.GetLogDirectory() != "" && cfg.GetLogPath() != "" {
		if _, err := logs.Join(podCfg.GetLogDirectory(), cfg.GetLogPath()); err != nil {
			return fmt.Errorf("container %s: %w", cfg.GetMetadata().GetName(), err)
		}
	}
	return nil
}
