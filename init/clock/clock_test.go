package clock

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fakeClock is the system clock for tests: real time plus an offset that Step and Slew move
// (a slew lands at once here; the kernel spreads it out). It records each correction.
type fakeClock struct {
	mu     sync.Mutex
	offset time.Duration
	steps  []time.Duration
	slews  []time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *fakeClock) Step(d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
	c.steps = append(c.steps, d)
	return nil
}

func (c *fakeClock) Slew(d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
	c.slews = append(c.slews, d)
	return nil
}

func (c *fakeClock) corrections() (steps, slews []time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.steps...), append([]time.Duration(nil), c.slews...)
}

// TestDecide: only an offset of more than a second, either way, steps the clock.
func TestDecide(t *testing.T) {
	for _, tc := range []struct {
		offset time.Duration
		want   Action
	}{
		{0, Slew},
		{300 * time.Millisecond, Slew},
		{-999 * time.Millisecond, Slew},
		{time.Second, Slew},
		{-time.Second, Slew},
		{time.Second + time.Millisecond, Step},
		{-time.Second - time.Millisecond, Step},
		{time.Hour, Step},
		{-48 * time.Hour, Step},
	} {
		if got := Decide(tc.offset); got != tc.want {
			t.Errorf("Decide(%s) = %s; want %s", tc.offset, got, tc.want)
		}
	}
}

// TestRTCTime: struct rtc_time counts years from 1900 and months from 0, in UTC.
func TestRTCTime(t *testing.T) {
	in := time.Date(2026, time.December, 2, 15, 4, 5, 999, time.FixedZone("UTC+2", 2*3600))
	got := rtcTime(in)
	want := unix.RTCTime{Sec: 5, Min: 4, Hour: 13, Mday: 2, Mon: 11, Year: 126, Wday: 3, Yday: 335}
	if got != want {
		t.Errorf("rtcTime(%s) = %+v; want %+v", in, got, want)
	}
}

// TestWriteRTC: no hardware clock is nothing to do; a file that is not one is an error naming it.
func TestWriteRTC(t *testing.T) {
	dir := t.TempDir()
	if set, err := WriteRTC(filepath.Join(dir, "rtc0"), time.Now()); set || err != nil {
		t.Errorf("WriteRTC without a device = %v, %v; want false, nil", set, err)
	}
	notRTC := filepath.Join(dir, "file")
	if err := os.WriteFile(notRTC, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := WriteRTC(notRTC, time.Now())
	if set || err == nil || !errors.Is(err, unix.ENOTTY) || !strings.HasPrefix(err.Error(), "write the hardware clock "+notRTC+": ") {
		t.Errorf("WriteRTC on a regular file = %v; want ENOTTY naming %s", err, notRTC)
	}
}
