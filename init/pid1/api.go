package pid1

import (
	"time"

	"ingot.dev/ingot/init/api"
	"ingot.dev/ingot/init/api/apiv1"
	"ingot.dev/ingot/init/console"
	"ingot.dev/ingot/init/supervise"
)

// startAPI serves the node API when the node config has an [api] certificate; without one the
// node opens no port. A certificate that does not load, or a port that is taken, is one console
// line: the node boots on without its API.
func (n *Node) startAPI() {
	if n.node == nil || n.node.Config == nil || !n.node.Config.API.Enabled() {
		n.log.Info("node API off: the node config has no [api] certificate")
		return
	}
	cfg := n.node.Config.API
	tc, err := api.TLS{Cert: []byte(cfg.Cert), Key: []byte(cfg.Key), ClientCA: []byte(cfg.ClientCA)}.Config()
	if err != nil {
		n.log.Error("node API not started", "err", err)
		return
	}
	ln, err := api.Listen(cfg.Port)
	if err != nil {
		n.log.Error("node API not started", "err", err)
		return
	}
	srv := api.New(n.log, tc, api.Node{
		Services: func() []supervise.Status {
			var out []supervise.Status
			for _, s := range n.sup.Services() {
				out = append(out, s.Status())
			}
			return out
		},
		Power: func(reboot bool, reason string) {
			action := PowerOff
			if reboot {
				action = Reboot
			}
			n.requestStop(action, reason)
		},
		Upgrade:       n.upgrade,
		Rollback:      n.rollback,
		LastUpgrade:   n.upgrades.event,
		Boot:          n.upgrades.bootInfo,
		Started:       time.Now().Add(-console.SinceBoot()),
		ServiceLogDir: ServiceLogDir,
		RuntimeSocket: RuntimeSocket,
	})
	port := cfg.Port
	if port == 0 {
		port = apiv1.DefaultPort
	}
	n.log.Info("node API serving", "port", port)
	n.goSafe(func() {
		if err := srv.Serve(ln); err != nil {
			n.log.Error("node API stopped", "err", err)
		}
	})
}
