// Package clock keeps the node's system clock right. At boot it asks NTP servers for the time
// and steps the clock once when it is off by more than a second; while the node runs it asks
// again every Interval, slewing small offsets and stepping large ones; at shutdown it writes the
// time to the hardware clock (RTC) so the next boot starts close.
//
// It runs inside PID 1, after the network is up, in the background: it must never hold up or
// fail the boot over a time server, and it changes the clock only through a Clock, so tests
// give it a fake and never touch the host's time. The NTP protocol is github.com/beevik/ntp's.
package clock

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/beevik/ntp"
	"golang.org/x/sys/unix"
)

// StepThreshold is the offset above which the clock is stepped at once; at or below it the
// clock is slewed, so time never jumps under running services for a small error.
const StepThreshold = time.Second

// Defaults for a Syncer's zero fields.
const (
	DefaultTimeout = 3 * time.Second // per server and query
	// DefaultInterval is how often a synced clock is checked. The kernel slews at most 500 ppm,
	// so the largest slewed offset (1 s) is worked off in about 33 minutes: by the next check.
	DefaultInterval = 32 * time.Minute
	DefaultRetry    = time.Minute // after a round where no server answered
)

// Clock is the system clock as the syncer sees it.
type Clock interface {
	Now() time.Time
	// Step jumps the clock by d.
	Step(d time.Duration) error
	// Slew makes the clock run slightly fast or slow until it has gained d, replacing any
	// slew still in progress.
	Slew(d time.Duration) error
}

// System is the kernel's CLOCK_REALTIME. Changing it needs CAP_SYS_TIME.
type System struct{}

func (System) Now() time.Time { return time.Now() }

func (System) Step(d time.Duration) error {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("step the clock by %s: read it: %w", d, err)
	}
	ts = unix.NsecToTimespec(ts.Nano() + d.Nanoseconds())
	if err := unix.ClockSettime(unix.CLOCK_REALTIME, &ts); err != nil {
		return fmt.Errorf("step the clock by %s: %w", d, err)
	}
	return nil
}

// Slew uses adjtime's single-shot offset: the kernel works it off at 500 ppm and a new one
// replaces what is left of the last, so checks never pile corrections up.
func (System) Slew(d time.Duration) error {
	tx := unix.Timex{Modes: unix.ADJ_OFFSET_SINGLESHOT, Offset: d.Microseconds()}
	if _, err := unix.Adjtimex(&tx); err != nil {
		return fmt.Errorf("slew the clock by %s: %w", d, err)
	}
	return nil
}

// Action is what a measured offset calls for.
type Action int

const (
	Slew Action = iota
	Step
)

func (a Action) String() string {
	if a == Step {
		return "step"
	}
	return "slew"
}

// Decide says how to correct a clock that is off by offset (the server's time minus ours).
func Decide(offset time.Duration) Action {
	if offset > StepThreshold || offset < -StepThreshold {
		return Step
	}
	return Slew
}

// Result is one successful sync.
type Result struct {
	Server string
	Offset time.Duration // the server's time minus ours, before the correction
	Action Action
}

// Syncer keeps Clock in sync with Servers.
type Syncer struct {
	Servers  []string // host, address, host:port or [v6]:port; tried in order, first answer wins
	Clock    Clock
	Log      *slog.Logger
	Timeout  time.Duration // per query; DefaultTimeout if zero
	Interval time.Duration // between checks once synced; DefaultInterval if zero
	Retry    time.Duration // between rounds while no server answers; DefaultRetry if zero

	synced atomic.Bool
}

// Synced reports whether a server's time has been applied to the clock, so shutdown knows the
// clock is worth writing to the hardware clock.
func (s *Syncer) Synced() bool { return s.synced.Load() }

// Sync asks the servers in order and corrects the clock from the first valid answer. It fails
// when no server gives one, naming each server and why, and then leaves the clock alone.
func (s *Syncer) Sync(ctx context.Context) (Result, error) {
	if len(s.Servers) == 0 {
		return Result{}, errors.New("ntp: no servers")
	}
	timeout := orDefault(s.Timeout, DefaultTimeout)
	var failures []string
	for _, srv := range s.Servers {
		if err := ctx.Err(); err != nil {
			return Result{}, fmt.Errorf("ntp: %w", err)
		}
		// The library's timestamps come from the same clock we correct: with a fake clock the
		// offset is the fake's, and after a step the next query sees the corrected time.
		resp, err := ntp.QueryWithOptions(srv, ntp.QueryOptions{Timeout: timeout, GetSystemTime: s.Clock.Now})
		if err == nil {
			err = resp.Validate()
		}
		if err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", srv, err))
			continue
		}
		r := Result{Server: srv, Offset: resp.ClockOffset, Action: Decide(resp.ClockOffset)}
		if r.Action == Step {
			err = s.Clock.Step(r.Offset)
		} else {
			err = s.Clock.Slew(r.Offset)
		}
		if err != nil {
			return r, fmt.Errorf("ntp: time from %s: %w", srv, err)
		}
		s.synced.Store(true)
		return r, nil
	}
	return Result{}, fmt.Errorf("ntp: no server answered (%s)", strings.Join(failures, "; "))
}

// Run syncs now, then every Interval until ctx ends. A step is logged at info level, a slew at
// debug. A round where no server answers is one warning; later failed rounds stay quiet (and
// retry every Retry) until a server answers again, so a dead server cannot flood the console.
func (s *Syncer) Run(ctx context.Context) {
	failing := false
	for {
		wait := orDefault(s.Interval, DefaultInterval)
		r, err := s.Sync(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				s.Log.Warn("ntp: the clock is not synced; retrying quietly", "err", err)
			}
			failing = true
			wait = orDefault(s.Retry, DefaultRetry)
		default:
			failing = false
			if r.Action == Step {
				s.Log.Info("ntp: clock stepped", "server", r.Server, "by", r.Offset.Round(time.Millisecond))
			} else {
				s.Log.Debug("ntp: clock slewed", "server", r.Server, "by", r.Offset)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}
