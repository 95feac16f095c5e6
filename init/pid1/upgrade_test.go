package pid1

import (
	"context"
	"testing"
	"time"
)

// When the deadline cuts the last check short, the health gate reports why the node was not
// healthy (what the last whole check said), not that the cut-short check timed out.
func TestPollKeepsTheLastWholeAnswer(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	var reported []string
	err := poll(ctx, 10*time.Millisecond, func() (string, bool) {
		if time.Until(deadlineOf(ctx)) < 100*time.Millisecond {
			<-ctx.Done() // a probe the deadline cuts short
			return "the API server does not answer (timed out)", false
		}
		return "node worker-1 has not reported from this boot yet", false
	}, func(msg string, ok bool) { reported = append(reported, msg) })
	if err == nil || err.Error() != "node worker-1 has not reported from this boot yet" {
		t.Fatalf("poll's error = %v, want the last whole check's message", err)
	}
	for _, m := range reported {
		if m != "node worker-1 has not reported from this boot yet" {
			t.Errorf("reported %q: a check cut short by the deadline is not an outcome", m)
		}
	}
}

// A check that is cut short with no earlier answer is all there is to say.
func TestPollOnlyCheckCutShort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := poll(ctx, time.Second, func() (string, bool) {
		<-ctx.Done()
		return "the runtime does not answer", false
	}, nil)
	if err == nil || err.Error() != "the runtime does not answer" {
		t.Fatalf("poll's error = %v", err)
	}
	if err := poll(context.Background(), time.Second, func() (string, bool) { return "", true }, nil); err != nil {
		t.Fatalf("a passing check: %v", err)
	}
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}
