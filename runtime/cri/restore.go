package cri

import (
	"context"

	"ingot.dev/ingot/runtime/shim"
	"ingot.dev/ingot/runtime/store"
)

// restoreState reloads every pod and container after a daemon restart and reconnects to the shims,
// which kept the containers running and their logs flowing while the daemon was away.
func (s *Server) restoreState(ctx context.Context) error {
	sbs, err := s.store.Sandboxes()
	if err != nil {
		return err
	}
	for _, rec := range sbs {
		sb := &sandbox{Sandbox: rec}
		if c, err := shim.Dial(rec.ShimDir, rec.ShimSocket); err == nil {
			sb.shim = c
		} else {
			s.log.Warn("pod's shim is gone; marking the pod not ready", "pod", rec.ID, "err", err)
			sb.Ready = false
		}
		cfg := sb.config()
		s.sandboxes[rec.ID] = sb
		s.names[podNameKey(cfg.GetMetadata())] = rec.ID
	}
	ctrs, err := s.store.Containers()
	if err != nil {
		return err
	}
	for i := range ctrs {
		c := &ctrs[i]
		s.containers[c.ID] = c
		if sb, ok := s.sandboxes[c.SandboxID]; ok {
			s.names[ctrNameKey(sb.config().GetMetadata(), ctrConfig(c).GetMetadata())] = c.ID
		}
	}
	for _, c := range s.containers {
		s.refresh(c)
		if c.State == store.Running {
			go s.watchExit(s.sandboxes[c.SandboxID], c) // as StartContainer does
		}
	}
	if s.network != nil {
		// Forget addresses and veths of pods this runtime no longer has (removed while it was down,
		// or lost with a crash between Setup and the record).
		if err := s.network.GC(ctx, func(id string) bool { _, ok := s.sandboxes[id]; return ok }); err != nil {
			s.log.Warn("pod network garbage collection", "err", err)
		}
	}
	if len(sbs) > 0 || len(ctrs) > 0 {
		s.log.Info("recovered runtime state", "pods", len(sbs), "containers", len(ctrs))
	}
	return nil
}
