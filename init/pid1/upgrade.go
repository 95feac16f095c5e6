package pid1

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"ingot.dev/ingot/init/api"
	"ingot.dev/ingot/init/api/apiv1"
	"ingot.dev/ingot/init/console"
	"ingot.dev/ingot/init/kubelet"
	"ingot.dev/ingot/init/slots"
	"ingot.dev/ingot/profiles"
	"ingot.dev/ingot/profiles/nodeconfig"
)

// UpgradeDir keeps the image swap's record on the state partition, which survives the swap:
// last.json is the last swap's apiv1.UpgradeEvent.
const UpgradeDir = "/var/lib/ingot/upgrade"

// Results an UpgradeEvent moves through.
const (
	upgradePending    = "pending"     // written to the other slot; the node reboots into it
	upgradeTrial      = "trial"       // booted from it; health checks running
	upgradeCommitted  = "committed"   // passed: the slot is the node's image from now on
	upgradeRolledBack = "rolled back" // failed (or rolled back by hand): the old slot runs
)

// upgrades is PID 1's side of image swaps: one at a time, and the record of the last one.
type upgrades struct {
	mu   sync.Mutex // held through an install
	emu  sync.Mutex // guards last and boot
	last *apiv1.UpgradeEvent
	// boot is the booted slot's entry as the ESP has it now; zero until checkUpgrade read it.
	// (systemd-boot's LoaderEntrySelected keeps the name the entry had when it was booted.)
	boot apiv1.Boot
}

func (u *upgrades) bootInfo() apiv1.Boot {
	u.emu.Lock()
	defer u.emu.Unlock()
	return u.boot
}

func (u *upgrades) setBoot(e slots.Entry) {
	u.emu.Lock()
	defer u.emu.Unlock()
	u.boot = apiv1.Boot{Loader: "systemd-boot", Entry: e.File, Slot: e.Slot, TriesLeft: e.TriesLeft, TriesDone: e.TriesDone}
}

func (u *upgrades) event() *apiv1.UpgradeEvent {
	u.emu.Lock()
	defer u.emu.Unlock()
	if u.last == nil {
		return nil
	}
	e := *u.last
	return &e
}

// record stores ev as the last swap's outcome, on disk first.
func (u *upgrades) record(ev apiv1.UpgradeEvent) error {
	u.emu.Lock()
	defer u.emu.Unlock()
	u.last = &ev
	data, err := json.MarshalIndent(ev, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(UpgradeDir, 0o700); err != nil {
		return fmt.Errorf("upgrade record: %w", err)
	}
	tmp := filepath.Join(UpgradeDir, ".last.json.tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("upgrade record: %w", err)
	}
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(UpgradeDir, "last.json"))
	}
	if err != nil {
		return fmt.Errorf("upgrade record: %w", err)
	}
	return nil
}

// load reads the record the last boot left.
func (u *upgrades) load() {
	data, err := os.ReadFile(filepath.Join(UpgradeDir, "last.json"))
	if err != nil {
		return
	}
	var ev apiv1.UpgradeEvent
	if json.Unmarshal(data, &ev) == nil {
		u.emu.Lock()
		u.last = &ev
		u.emu.Unlock()
	}
}

// bootedSlot is the slot systemd-boot started this boot from.
func bootedSlot() (string, error) {
	entry, ok := slots.Booted(slots.EFIVars)
	if !ok {
		return "", status.Error(codes.FailedPrecondition, "this node was not booted from its disk by systemd-boot (UEFI): it has no slots to swap")
	}
	slot, _, _, ok := slots.ParseName(entry)
	if !ok {
		return "", status.Errorf(codes.FailedPrecondition, "booted from boot loader entry %q, which is not one of ingot's slots", entry)
	}
	return slot, nil
}

// upgrade writes the image r to the slot the node did not boot and reboots into it.
func (n *Node) upgrade(ctx context.Context, h apiv1.UpgradeHeader, r io.Reader) (string, error) {
	u := &n.upgrades
	if !u.mu.TryLock() {
		return "", status.Error(codes.Aborted, "an upgrade is already being written")
	}
	defer u.mu.Unlock()
	if h.Arch != goruntime.GOARCH {
		return "", status.Errorf(codes.InvalidArgument, "the image is for %q; this node is %s", h.Arch, goruntime.GOARCH)
	}
	from, err := bootedSlot()
	if err != nil {
		return "", err
	}
	if ev := u.event(); ev != nil && ev.Result == upgradeTrial && ev.ToSlot == from {
		return "", status.Errorf(codes.FailedPrecondition, "slot %s is on trial (version %s) until it passes its health checks; upgrade after it is committed", from, ev.Version)
	}
	to := slots.Other(from)
	title := fmt.Sprintf("ingot %s %s", h.Profile, h.Version)
	start := time.Now()
	err = slots.WithESP(ctx, true, func(e slots.ESP) error { return e.Install(to, r, h.SHA256, title) })
	if err != nil {
		n.log.Error("upgrade not installed; the node stays on its slot", "slot", from, "err", err)
		return "", status.Errorf(codes.Aborted, "upgrade: %v (slot %s is unchanged and still boots)", err, from)
	}
	if err := slots.SetOneShot(slots.EFIVars, slots.TrialName(to)); err != nil {
		// Not needed: the new entry sorts first. Worth a line all the same.
		n.log.Warn("upgrade: one-shot boot entry not set; the new slot is the default anyway", "err", err)
	}
	ev := apiv1.UpgradeEvent{Result: upgradePending, FromSlot: from, ToSlot: to, Version: h.Version, BuildID: h.BuildID, At: time.Now().UTC()}
	if err := u.record(ev); err != nil {
		n.log.Warn("upgrade record not kept", "err", err)
	}
	n.log.Info("upgrade installed; rebooting into it", "slot", to, "version", h.Version, "build", h.BuildID, "took", time.Since(start).Round(time.Millisecond))
	n.requestStop(Reboot, fmt.Sprintf("upgrade to slot %s (version %s)", to, h.Version))
	return to, nil
}

// rollback makes the other slot's committed image the default and reboots into it.
func (n *Node) rollback(ctx context.Context, reason string) (string, error) {
	u := &n.upgrades
	if !u.mu.TryLock() {
		return "", status.Error(codes.Aborted, "an upgrade is being written")
	}
	defer u.mu.Unlock()
	from, err := bootedSlot()
	if err != nil {
		return "", err
	}
	to := slots.Other(from)
	if err := slots.WithESP(ctx, true, func(e slots.ESP) error { return e.Prefer(to) }); err != nil {
		return "", status.Errorf(codes.FailedPrecondition, "rollback: %v", err)
	}
	ev := apiv1.UpgradeEvent{Result: upgradeRolledBack, FromSlot: from, ToSlot: to, Reason: reason, At: time.Now().UTC()}
	if err := u.record(ev); err != nil {
		n.log.Warn("upgrade record not kept", "err", err)
	}
	n.log.Warn("rolling back by request", "from_slot", from, "to_slot", to, "reason", reason)
	n.requestStop(Reboot, fmt.Sprintf("rollback to slot %s", to))
	return to, nil
}

// refreshBoot reads slot's entry again after a change to it.
func (u *upgrades) refreshBoot(e slots.ESP, slot string) error {
	entries, err := e.Entries()
	for _, en := range entries {
		if en.Slot == slot {
			u.setBoot(en)
		}
	}
	return err
}

// requestStop asks the main loop to stop the node, unless a stop is already on its way.
func (n *Node) requestStop(a Action, reason string) {
	select {
	case n.shutdown <- request{a, reason}:
	default:
	}
}

// checkUpgrade runs at boot, once services have started. On a slot that is on trial it starts
// the health gate; on a committed slot that a swap did not reach, it reports the rollback.
func (n *Node) checkUpgrade(ctx context.Context, prof *profiles.Profile) {
	u := &n.upgrades
	u.load()
	if !slots.UEFI(slots.EFIVars) {
		return
	}
	slot, err := bootedSlot()
	if err != nil {
		n.log.Warn("image slots not checked", "err", err)
		return
	}
	var mine *slots.Entry
	err = slots.WithESP(ctx, false, func(e slots.ESP) error {
		entries, err := e.Entries()
		for i := range entries {
			if entries[i].Slot == slot {
				mine = &entries[i]
			}
		}
		return err
	})
	if err != nil || mine == nil {
		n.log.Warn("image slots not checked: the booted slot's entry was not read", "slot", slot, "err", err)
		return
	}
	u.setBoot(*mine)
	ev := u.event()
	if mine.Trial() {
		if ev == nil || ev.ToSlot != slot || ev.Result == upgradeCommitted || ev.Result == upgradeRolledBack {
			ev = &apiv1.UpgradeEvent{FromSlot: slots.Other(slot), ToSlot: slot}
		}
		ev.Result, ev.At = upgradeTrial, time.Now().UTC()
		if rel := api.ReadOSRelease("/etc/os-release"); rel["VERSION_ID"] != "" {
			ev.Version, ev.BuildID = rel["VERSION_ID"], rel["BUILD_ID"]
		}
		if err := u.record(*ev); err != nil {
			n.log.Warn("upgrade record not kept", "err", err)
		}
		deadline := time.Duration(prof.Upgrade.HealthTimeoutS) * time.Second
		n.log.Info("slot on trial: health checks before commit", "slot", slot, "version", ev.Version, "tries_left", mine.TriesLeft, "deadline", deadline)
		n.goSafe(func() { n.healthGate(ctx, prof, slot, deadline) })
		return
	}
	if ev != nil && (ev.Result == upgradePending || ev.Result == upgradeTrial) && ev.ToSlot != slot {
		if ev.Reason == "" {
			ev.Reason = fmt.Sprintf("slot %s did not pass its health checks in any of its %d tries (it did not boot, or stopped before they ended)", ev.ToSlot, slots.Tries)
		}
		ev.Result, ev.At = upgradeRolledBack, time.Now().UTC()
		if err := u.record(*ev); err != nil {
			n.log.Warn("upgrade record not kept", "err", err)
		}
		n.log.Warn("upgrade rolled back", "slot", slot, "failed_slot", ev.ToSlot, "failed_version", ev.Version, "reason", ev.Reason)
		if err := slots.WithESP(ctx, true, func(e slots.ESP) error { _, err := e.RemoveBad(); return err }); err != nil {
			n.log.Warn("the failed slot's entry was not removed", "err", err)
		}
	}
}

// healthGate commits slot once the node is healthy, or marks it bad and reboots when it is not
// by the deadline (counted from kernel start, so a slow boot uses up its time too).
func (n *Node) healthGate(ctx context.Context, prof *profiles.Profile, slot string, deadline time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, max(deadline-sinceBoot(), time.Second))
	defer cancel()
	err := n.healthy(ctx, prof)
	u := &n.upgrades
	ev := u.event()
	if ev == nil {
		ev = &apiv1.UpgradeEvent{FromSlot: slots.Other(slot), ToSlot: slot}
	}
	if err == nil {
		err := slots.WithESP(context.Background(), true, func(e slots.ESP) error {
			if err := e.Commit(slot); err != nil {
				return err
			}
			return u.refreshBoot(e, slot)
		})
		if err != nil {
			// Not committed: the counter goes on, and the next boot tries again.
			n.log.Error("healthy, but the slot was not committed", "slot", slot, "err", err)
			return
		}
		ev.Result, ev.Reason, ev.At = upgradeCommitted, "", time.Now().UTC()
		if err := u.record(*ev); err != nil {
			n.log.Warn("upgrade record not kept", "err", err)
		}
		n.log.Info("upgrade committed", "slot", slot, "version", ev.Version, "t", sinceBoot().Milliseconds())
		return
	}
	ev.Reason = fmt.Sprintf("health check failed on slot %s: %v", slot, err)
	if rerr := u.record(*ev); rerr != nil {
		n.log.Warn("upgrade record not kept", "err", rerr)
	}
	if merr := slots.WithESP(context.Background(), true, func(e slots.ESP) error {
		if err := e.MarkBad(slot); err != nil {
			return err
		}
		return u.refreshBoot(e, slot)
	}); merr != nil {
		n.log.Error("the failed slot was not marked bad; its boot counter will end its trial", "slot", slot, "err", merr)
	}
	n.log.Error("upgrade failed its health checks; rebooting into the previous slot", "slot", slot, "err", err)
	n.requestStop(Reboot, "upgrade health check failed")
}

// healthy waits until the node is healthy: the runtime answers Status (when the profile runs
// it), then the kubelet (when it runs): Ready in the API server, reported from this boot, or on a
// node that joins no cluster its own health endpoint.
func (n *Node) healthy(ctx context.Context, prof *profiles.Profile) error {
	if prof.Runtime.Enabled {
		err := poll(ctx, 200*time.Millisecond, func() (string, bool) {
			if err := criStatus(ctx, RuntimeSocket); err != nil {
				return err.Error(), false
			}
			return "", true
		}, nil)
		if err != nil {
			return fmt.Errorf("the CRI runtime did not answer Status in time: %w", err)
		}
	}
	if !prof.Kubelet.Enabled {
		return nil
	}
	check, what := n.kubeletCheck()
	var last string
	err := poll(ctx, 2*time.Second, func() (string, bool) {
		c := check(ctx)
		return c.Msg, c.OK
	}, func(msg string, ok bool) {
		// Once per change: a trial boot says on the console what it waits for.
		if msg != last {
			n.log.Info("health gate: "+msg, "check", what)
			last = msg
		}
	})
	if err != nil {
		return fmt.Errorf("the kubelet's %s did not pass in time: %w", what, err)
	}
	return nil
}

// kubeletCheck is the health gate's check of the kubelet, and what it is called: the node's
// Ready condition in the API server when the node config joins a cluster, else the kubelet's own
// health endpoint.
func (n *Node) kubeletCheck() (func(context.Context) kubelet.Check, string) {
	healthz := func(ctx context.Context) kubelet.Check { return kubelet.Healthz(ctx, 5*time.Second) }
	var k nodeconfig.Kubernetes
	if n.node.Config != nil {
		k = n.node.Config.Kubernetes
	}
	if k.Kubeconfig == "" && k.BootstrapToken == "" {
		return healthz, "health endpoint"
	}
	bootID := readBootID()
	return func(ctx context.Context) kubelet.Check {
		hostname, err := os.Hostname()
		if err != nil {
			return kubelet.Check{Msg: err.Error()}
		}
		// The kubelet names its node by the hostname it is given, in lowercase.
		return kubelet.NodeReady(ctx, kubelet.KubeconfigPath, strings.ToLower(hostname), bootID, 10*time.Second)
	}, "node Ready"
}

// readBootID is this boot's ID, which the kubelet reports in its Node's nodeInfo.
func readBootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// poll runs check every interval until it passes or ctx ends; then the error is the message of
// the last check that ran to its end. A check that ctx's end cut short says only that it timed
// out, which would hide why the node was not healthy (the kubelet had not reported, say), so its
// message is the answer only when no earlier check finished. report, when set, sees every outcome.
func poll(ctx context.Context, interval time.Duration, check func() (string, bool), report func(string, bool)) error {
	var last string
	for {
		msg, ok := check()
		if ok {
			if report != nil {
				report(msg, ok)
			}
			return nil
		}
		if ctx.Err() != nil {
			if last == "" {
				last = msg
			}
			return errors.New(last)
		}
		if report != nil {
			report(msg, ok)
		}
		last = msg
		select {
		case <-ctx.Done():
			return errors.New(last)
		case <-time.After(interval):
		}
	}
}

func sinceBoot() time.Duration { return console.SinceBoot() }
