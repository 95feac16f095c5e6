package supervise

import (
	"fmt"
	"syscall"
	"time"
)

// DoNotRestart is the exit code a service uses to say "I am done for good": a process that exits
// with it is never restarted, whatever its Policy. It is 125 because shells reserve 126 and 127
// (not executable, not found) and 128+n for death by signal n, so no shell-reported failure can
// be mistaken for it.
const DoNotRestart = 125

// Backoff between restarts: a crash-looping service costs at most one start per maxBackoff, and
// one that ran long enough to count as healthy starts over from minBackoff.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 30 * time.Second
	resetAfter = 10 * time.Second
)

// Policy says when a service is restarted after its process ends. The zero value is Always.
type Policy int

const (
	Always    Policy = iota // restart after every exit
	OnFailure               // restart after a non-zero exit, death by signal or failed start
	Never                   // run once
)

var policyNames = [...]string{Always: "always", OnFailure: "on-failure", Never: "never"}

func (p Policy) String() string {
	if p < 0 || int(p) >= len(policyNames) {
		return fmt.Sprintf("Policy(%d)", int(p))
	}
	return policyNames[p]
}

// ParsePolicy parses "always", "on-failure" or "never".
func ParsePolicy(s string) (Policy, error) {
	for p, name := range policyNames {
		if s == name {
			return Policy(p), nil
		}
	}
	return 0, fmt.Errorf("parse restart policy %q: want always, on-failure or never: %w", s, ErrInvalid)
}

func (p Policy) valid() bool { return p >= Always && p <= Never }

// State is where a service is in its life cycle.
type State int

const (
	Starting State = iota // being forked
	Running               // its process is alive
	Backoff               // waiting before the next restart
	Stopped               // ended by Supervisor.Stop
	Exited                // ended on its own and will not be restarted
)

var stateNames = [...]string{Starting: "starting", Running: "running", Backoff: "backoff", Stopped: "stopped", Exited: "exited"}

func (s State) String() string {
	if s < 0 || int(s) >= len(stateNames) {
		return fmt.Sprintf("State(%d)", int(s))
	}
	return stateNames[s]
}

// Exit describes how one run of a service ended.
type Exit struct {
	Code   int            // exit code; -1 if the process died by a signal or never started
	Signal syscall.Signal // the signal that killed the process, 0 otherwise
	Err    error          // why the process could not be started; nil if it ran
	Time   time.Time      // when the exit was observed
}

// Failed reports whether the run counts as a failure for OnFailure.
func (e Exit) Failed() bool { return e.Err != nil || e.Signal != 0 || e.Code != 0 }

func (e Exit) String() string {
	switch {
	case e.Err != nil:
		return e.Err.Error()
	case e.Signal != 0:
		return "killed by signal " + e.Signal.String()
	default:
		return fmt.Sprintf("exit status %d", e.Code)
	}
}

func exitFromStatus(ws syscall.WaitStatus, at time.Time) Exit {
	if ws.Signaled() {
		return Exit{Code: -1, Signal: ws.Signal(), Time: at}
	}
	return Exit{Code: ws.ExitStatus(), Time: at}
}

// shouldRestart applies the policy to one exit.
func shouldRestart(p Policy, e Exit) bool {
	if e.Err == nil && e.Signal == 0 && e.Code == DoNotRestart {
		return false
	}
	switch p {
	case Always:
		return true
	case OnFailure:
		return e.Failed()
	default:
		return false
	}
}

// nextBackoff returns how long to wait before the next start, given the previous wait (0 if there
// was none) and how long the process that just ended had been running.
func nextBackoff(prev, ran time.Duration) time.Duration {
	if prev == 0 || ran > resetAfter {
		return minBackoff
	}
	return min(2*prev, maxBackoff)
}
