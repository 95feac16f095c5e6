package clock

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/netsetup/link"
	"ingot.dev/ingot/netsetup/netns"
)

// privateNetns makes a network namespace for the test, with only loopback, up. Servers and the
// client under test talk over its 127.0.0.1; the host's network is never touched.
func privateNetns(t *testing.T) string {
	testgate.RequireRoot(t)
	path := filepath.Join(t.TempDir(), "net")
	if err := netns.New(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { netns.Remove(path) })
	if err := netns.Do(path, link.Loopback); err != nil {
		t.Fatal(err)
	}
	return path
}

// listen opens a UDP socket on 127.0.0.1 inside the namespace and closes it with the test.
func listen(t *testing.T, ns string) *net.UDPConn {
	var conn *net.UDPConn
	err := netns.Do(ns, func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// serveNTP answers NTP queries with a clock ahead of ours by ahead: a minimal stratum 1 server
// written for the test (the client under test is the library's).
func serveNTP(conn *net.UDPConn, ahead time.Duration) {
	buf := make([]byte, 1024)
	for {
		n, peer, err := conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		if n < 48 {
			continue
		}
		recv := ntpTimestamp(time.Now().Add(ahead))
		var r [48]byte
		r[0] = 4<<3 | 4 // no leap second pending, version 4, mode 4 (server)
		r[1] = 1        // stratum 1: a reference clock of its own
		r[2] = buf[2]   // poll, echoed
		r[3] = 0xec     // precision 2^-20 s
		copy(r[12:16], "TEST")
		binary.BigEndian.PutUint64(r[16:], recv) // reference: just now
		copy(r[24:32], buf[40:48])               // origin: the client's transmit timestamp
		binary.BigEndian.PutUint64(r[32:], recv)
		binary.BigEndian.PutUint64(r[40:], ntpTimestamp(time.Now().Add(ahead)))
		conn.WriteToUDP(r[:], peer)
	}
}

// ntpTimestamp is t in NTP's format: seconds since 1900 and a 32-bit binary fraction.
func ntpTimestamp(t time.Time) uint64 {
	const from1900 = 2208988800
	frac := uint64(t.Nanosecond()) << 32 / uint64(time.Second)
	return uint64(t.Unix()+from1900)<<32 | frac
}

// deadServer reads queries and never answers; each query read is sent on the returned channel.
func deadServer(conn *net.UDPConn) <-chan struct{} {
	got := make(chan struct{}, 100)
	go func() {
		buf := make([]byte, 1024)
		for {
			if _, _, err := conn.ReadFromUDP(buf); err != nil {
				return
			}
			got <- struct{}{}
		}
	}()
	return got
}

// TestSyncStepsAnHourOff: a server an hour ahead gets the clock stepped by an hour, after a
// dead server listed first has timed out; the next sync finds the clock right and only slews.
func TestSyncStepsAnHourOff(t *testing.T) {
	ns := privateNetns(t)
	dead := listen(t, ns)
	deadServer(dead)
	good := listen(t, ns)
	go serveNTP(good, time.Hour)

	clk := &fakeClock{}
	s := &Syncer{Servers: []string{dead.LocalAddr().String(), good.LocalAddr().String()}, Clock: clk,
		Log: slog.New(slog.DiscardHandler), Timeout: 200 * time.Millisecond}
	if s.Synced() {
		t.Fatal("Synced before any sync")
	}
	var first, second Result
	err := netns.Do(ns, func() error {
		var err error
		if first, err = s.Sync(context.Background()); err != nil {
			return err
		}
		second, err = s.Sync(context.Background())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	steps, slews := clk.corrections()
	if len(steps) != 1 || (steps[0]-time.Hour).Abs() > time.Second {
		t.Fatalf("steps %v; want one of about 1h (within 1s)", steps)
	}
	if first.Server != good.LocalAddr().String() || first.Action != Step {
		t.Errorf("first sync %+v; want a step from %s", first, good.LocalAddr())
	}
	if !s.Synced() {
		t.Error("not Synced after a server's time was applied")
	}
	if second.Action != Slew || second.Offset.Abs() > time.Second || len(slews) != 1 {
		t.Errorf("second sync %+v, slews %v; want one slew of under a second", second, slews)
	}
}

// TestRunDeadServerWarnsOnce: a server that never answers is one warning, however many rounds
// fail, and the clock is left alone.
func TestRunDeadServerWarnsOnce(t *testing.T) {
	ns := privateNetns(t)
	dead := listen(t, ns)
	queries := deadServer(dead)

	var logged bytes.Buffer
	clk := &fakeClock{}
	s := &Syncer{Servers: []string{dead.LocalAddr().String()}, Clock: clk,
		Log: slog.New(slog.NewTextHandler(&logged, nil)), Timeout: 100 * time.Millisecond, Retry: time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { netns.Do(ns, func() error { s.Run(ctx); return nil }) })
	for range 3 { // three rounds reached the server
		select {
		case <-queries:
		case <-time.After(10 * time.Second):
			t.Fatal("the syncer stopped asking the server")
		}
	}
	cancel()
	wg.Wait()

	var warnings []string
	for _, l := range strings.Split(strings.TrimSpace(logged.String()), "\n") {
		if strings.Contains(l, "level=WARN") {
			warnings = append(warnings, l)
		}
	}
	want := `msg="ntp: the clock is not synced; retrying quietly" err="ntp: no server answered (` + dead.LocalAddr().String() + `: read udp `
	if len(warnings) != 1 || !strings.Contains(warnings[0], want) || !strings.Contains(warnings[0], "i/o timeout") {
		t.Errorf("log:\n%s\nwant one warning containing %s...i/o timeout", logged.String(), want)
	}
	if steps, slews := clk.corrections(); len(steps)+len(slews) != 0 {
		t.Errorf("clock corrected (steps %v, slews %v) with no server answering", steps, slews)
	}
	if s.Synced() {
		t.Error("Synced with no server answering")
	}
}
