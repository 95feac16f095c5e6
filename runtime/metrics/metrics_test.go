package metrics

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// scrape returns the lines of one scrape of m.
func scrape(t *testing.T, m *Metrics) []string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	return strings.Split(rec.Body.String(), "\n")
}

// has reports whether a scrape has a line that starts with series (name and labels) followed by
// the value want.
func has(lines []string, series, want string) bool {
	for _, l := range lines {
		if l == series+" "+want {
			return true
		}
	}
	return false
}

func hasPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

func TestRequestsByMethodAndCode(t *testing.T) {
	for _, histogram := range []bool{false, true} {
		m := New(Options{GRPCHistogram: histogram})
		call := m.UnaryInterceptor()
		info := &grpc.UnaryServerInfo{FullMethod: "/runtime.v1.RuntimeService/ContainerStatus"}
		notFound := func(context.Context, any) (any, error) {
			return nil, status.Error(codes.NotFound, `container "x": not found`)
		}
		ok := func(context.Context, any) (any, error) { return "answer", nil }
		for range 2 {
			if _, err := call(context.Background(), nil, info, notFound); status.Code(err) != codes.NotFound {
				t.Fatalf("the interceptor changed the handler's error: %v", err)
			}
		}
		if resp, err := call(context.Background(), nil, info, ok); resp != "answer" || err != nil {
			t.Fatalf("the interceptor changed the handler's answer: %v, %v", resp, err)
		}
		events := &grpc.StreamServerInfo{FullMethod: "/runtime.v1.RuntimeService/GetContainerEvents"}
		m.StreamInterceptor()(nil, nil, events, func(any, grpc.ServerStream) error { return context.Canceled })

		lines := scrape(t, m)
		for _, want := range []struct{ series, value string }{
			{`ingot_cri_requests_total{code="NotFound",method="ContainerStatus"}`, "2"},
			{`ingot_cri_requests_total{code="OK",method="ContainerStatus"}`, "1"},
			{`ingot_cri_requests_total{code="Canceled",method="GetContainerEvents"}`, "1"},
		} {
			if !has(lines, want.series, want.value) {
				t.Errorf("histogram=%v: no %s %s in\n%s", histogram, want.series, want.value, strings.Join(lines, "\n"))
			}
		}
		if got := has(lines, `ingot_cri_request_duration_seconds_count{method="ContainerStatus"}`, "3"); got != histogram {
			t.Errorf("grpc_histogram = %v, but the scrape has the ContainerStatus latency histogram: %v", histogram, got)
		}
	}
}

func TestImagePulls(t *testing.T) {
	m := New(Options{})
	m.ImagePulled(1000, 2*time.Second, nil)
	m.ImagePulled(24, 50*time.Millisecond, errors.New("pull r/x: manifest latest: not found"))
	lines := scrape(t, m)
	for _, want := range []struct{ series, value string }{
		{"ingot_image_pull_bytes_total", "1024"},
		{"ingot_image_pull_failures_total", "1"},
		{"ingot_image_pull_duration_seconds_count", "1"},
		{"ingot_image_pull_duration_seconds_sum", "2"},
		{`ingot_image_pull_duration_seconds_bucket{le="1"}`, "0"},
		{`ingot_image_pull_duration_seconds_bucket{le="2.5"}`, "1"},
	} {
		if !has(lines, want.series, want.value) {
			t.Errorf("no %s %s in\n%s", want.series, want.value, strings.Join(lines, "\n"))
		}
	}
}

func TestStateReadAtScrape(t *testing.T) {
	m := New(Options{})
	st := State{PodsReady: 2, PodsNotReady: 1, Containers: map[string]int{"running": 3, "exited": 1}, Shims: 3}
	m.WatchState(func() State { return st })
	lines := scrape(t, m)
	for _, want := range []struct{ series, value string }{
		{`ingot_pods{state="ready"}`, "2"},
		{`ingot_pods{state="notready"}`, "1"},
		{`ingot_containers{state="running"}`, "3"},
		{`ingot_containers{state="exited"}`, "1"},
		{`ingot_containers{state="created"}`, "0"},
		{`ingot_containers{state="unknown"}`, "0"},
		{"ingot_shims", "3"},
	} {
		if !has(lines, want.series, want.value) {
			t.Errorf("no %s %s in\n%s", want.series, want.value, strings.Join(lines, "\n"))
		}
	}
	// The next scrape sees the runtime as it is then, not as it was.
	st = State{Shims: 1}
	if lines := scrape(t, m); !has(lines, `ingot_pods{state="ready"}`, "0") || !has(lines, "ingot_shims", "1") {
		t.Errorf("the second scrape did not read the state again:\n%s", strings.Join(lines, "\n"))
	}
}

func TestGoAndProcessMetrics(t *testing.T) {
	lines := scrape(t, New(Options{}))
	for _, p := range []string{"go_goroutines ", "go_memstats_heap_alloc_bytes ", "process_open_fds ", "process_resident_memory_bytes "} {
		if !hasPrefix(lines, p) {
			t.Errorf("no %s in the scrape", p)
		}
	}
}

// Two daemons in one process (two tests) must not share series: each has its own registry.
func TestRegistriesAreSeparate(t *testing.T) {
	a, b := New(Options{}), New(Options{})
	a.ImagePulled(10, time.Second, nil)
	if lines := scrape(t, b); !has(lines, "ingot_image_pull_bytes_total", "0") {
		t.Errorf("a pull on one registry shows in another:\n%s", strings.Join(lines, "\n"))
	}
}

// sockets counts the process's open socket descriptors.
func sockets(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd: " + err.Error())
	}
	n := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}

func TestEmptyAddressOpensNoListener(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	m := New(Options{})
	before := sockets(t)
	e, err := Serve("", m, log)
	if err != nil || e != nil {
		t.Fatalf("Serve(\"\") = %v, %v; want no endpoint and no error", e, err)
	}
	if after := sockets(t); after != before {
		t.Fatalf("an empty metrics address opened %d socket(s)", after-before)
	}
	if err := e.Close(); err != nil {
		t.Errorf("closing the absent endpoint: %v", err)
	}

	// The same count sees a listener when there is one.
	e, err = Serve("127.0.0.1:0", m, log)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if after := sockets(t); after != before+1 {
		t.Errorf("a metrics address opened %d sockets, want 1", after-before)
	}
	resp, err := http.Get("http://" + e.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "\ngo_goroutines ") {
		t.Errorf("GET /metrics: %s\n%s", resp.Status, body)
	}
}

func TestServeBusyAddress(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	e, err := Serve("127.0.0.1:0", New(Options{}), log)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	addr := e.Addr().String()
	_, err = Serve(addr, New(Options{}), log)
	if err == nil || !strings.HasPrefix(err.Error(), "metrics address "+addr+": ") || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("second Serve on %s: %v", addr, err)
	}
}
