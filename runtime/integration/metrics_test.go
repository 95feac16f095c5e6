package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"ingot.dev/ingot/internal/testgate"
)

// freeAddr is a loopback address with a port nobody listens on now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// appendConfig adds TOML tables to the runtime's config.toml (a StartWith prepare step).
func appendConfig(t *testing.T, r *Runtime, toml string) {
	t.Helper()
	f, err := os.OpenFile(r.Config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("\n" + toml); err != nil {
		t.Fatal(err)
	}
}

// scrapeMetrics reads the metrics address once: series (name and labels, as printed) → value.
func scrapeMetrics(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s %v\n%s", addr, resp.Status, err, body)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("scrape %s: bad line %q", addr, line)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetricsEndpoint runs a pod and a container and pulls images through crictl with a
// config.toml that sets [metrics] and [debug], and checks what a scrape of the address and the
// daemon's log show.
func TestMetricsEndpoint(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	addr := freeAddr(t)
	r := StartWith(t, func(r *Runtime) {
		appendConfig(t, r, fmt.Sprintf("[debug]\n  level = \"debug\"\n  format = \"json\"\n\n[metrics]\n  address = %q\n  grpc_histogram = true\n", addr))
	})
	r.MustCrictl("pull", busybox)
	// Nothing listens on port 1: the pull fails wherever the test runs.
	missing := "127.0.0.1:1/no-such-image:1"
	if out, err := r.Crictl("pull", missing); err == nil {
		t.Fatalf("pull of %s succeeded: %s", missing, out)
	}
	pod := r.MustCrictl("runp", podConfig(t, r, "scraped"))
	ctr := r.MustCrictl("create", pod, ctrConfig(t, r, "sleeper", "sleep", "300"), podConfig(t, r, "scraped"))
	r.MustCrictl("start", ctr)
	if _, err := r.Crictl("inspect", "0123456789ab"); err == nil {
		t.Fatal("crictl inspect of a container that does not exist succeeded")
	}

	m := scrapeMetrics(t, addr)
	check := func(series string, ok func(float64) bool, want string) {
		t.Helper()
		v, found := m[series]
		if !found {
			t.Errorf("the scrape has no %s", series)
		} else if !ok(v) {
			t.Errorf("%s = %v, want %s", series, v, want)
		}
	}
	is := func(n float64) (func(float64) bool, string) {
		return func(v float64) bool { return v == n }, fmt.Sprint(n)
	}
	positive := func(v float64) bool { return v > 0 }
	for _, c := range []struct {
		series string
		want   float64
	}{
		{`ingot_cri_requests_total{code="OK",method="RunPodSandbox"}`, 1},
		{`ingot_cri_requests_total{code="OK",method="CreateContainer"}`, 1},
		{`ingot_cri_requests_total{code="OK",method="StartContainer"}`, 1},
		{`ingot_cri_requests_total{code="OK",method="PullImage"}`, 1},
		{`ingot_cri_requests_total{code="NotFound",method="ContainerStatus"}`, 1},
		{`ingot_cri_request_duration_seconds_count{method="RunPodSandbox"}`, 1},
		{`ingot_pods{state="ready"}`, 1},
		{`ingot_pods{state="notready"}`, 0},
		{`ingot_containers{state="running"}`, 1},
		{`ingot_shims`, 1},
		{`ingot_image_pull_duration_seconds_count`, 1},
		{`ingot_image_pull_failures_total`, 1},
	} {
		ok, want := is(c.want)
		check(c.series, ok, want)
	}
	check(`ingot_cri_request_duration_seconds_sum{method="RunPodSandbox"}`, positive, "> 0")
	var failedPulls float64
	for series, v := range m {
		if strings.HasPrefix(series, "ingot_cri_requests_total{") && strings.HasSuffix(series, `,method="PullImage"}`) &&
			!strings.Contains(series, `code="OK"`) {
			failedPulls += v
		}
	}
	if failedPulls != 1 {
		t.Errorf("PullImage requests with a code other than OK: %v, want 1", failedPulls)
	}
	// busybox's layer alone is hundreds of KiB.
	check(`ingot_image_pull_bytes_total`, func(v float64) bool { return v > 100<<10 }, "> 100 KiB")
	check(`go_goroutines`, positive, "> 0")
	check(`process_resident_memory_bytes`, positive, "> 0")

	// Pods and containers are read from the runtime at each scrape.
	r.MustCrictl("stop", "-t", "2", ctr)
	r.MustCrictl("stopp", pod)
	m = scrapeMetrics(t, addr)
	for series, want := range map[string]float64{`ingot_pods{state="ready"}`: 0, `ingot_pods{state="notready"}`: 1,
		`ingot_containers{state="running"}`: 0, `ingot_containers{state="exited"}`: 1} {
		if m[series] != want {
			t.Errorf("after stop: %s = %v, want %v", series, m[series], want)
		}
	}

	// [debug] level = "debug" and format = "json": each CRI request is a JSON line.
	var seen bool
	for _, line := range strings.Split(r.Log(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["level"] == "DEBUG" && rec["msg"] == "CRI request" &&
			rec["method"] == "/runtime.v1.RuntimeService/RunPodSandbox" && rec["code"] == "OK" {
			seen = true
		}
	}
	if !seen {
		t.Errorf("no JSON debug line for RunPodSandbox in the daemon log:\n%s", tail(r.Log(), 3000))
	}

	// A metrics address the daemon cannot listen on stops it at start, naming the address.
	r.Kill()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("take %s: %v", addr, err)
	}
	out := r.RestartFails()
	l.Close()
	if want := "metrics address " + addr + ": listen tcp " + addr + ": bind: address already in use"; !strings.Contains(out, want) {
		t.Errorf("daemon with a busy metrics address said:\n%s\nwant %q", out, want)
	}
}

// TestMetricsOffByDefault checks that without [metrics] address the daemon listens on no TCP
// port at all.
func TestMetricsOffByDefault(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := Start(t)
	pid := r.cmd.Process.Pid
	// The daemon is in the host's network namespace: its listening TCP sockets are in
	// /proc/net/tcp{,6} with state 0A, and the socket inodes among its descriptors.
	inodes := map[string]bool{}
	fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	for _, fd := range fds {
		if target, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name())); err == nil && strings.HasPrefix(target, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]")] = true
		}
	}
	if len(inodes) == 0 {
		t.Fatalf("found no socket of the daemon (pid %d): the check cannot see its listeners", pid)
	}
	// The one listener it must have: the CRI streaming server (exec, attach, port-forward), on
	// 127.0.0.1 and a free port, as containerd's; its URL is in the log.
	m := regexp.MustCompile(`streaming=https?://127\.0\.0\.1:(\d+)`).FindStringSubmatch(r.Log())
	if m == nil {
		t.Fatalf("the daemon's log names no streaming URL on 127.0.0.1:\n%s", r.Log())
	}
	port, _ := strconv.Atoi(m[1])
	streamPort := fmt.Sprintf(":%04X", port)
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, strings.TrimPrefix(f, "/proc/net/")))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) > 9 && fields[3] == "0A" && inodes[fields[9]] && !strings.HasSuffix(fields[1], streamPort) {
				t.Errorf("the daemon listens on TCP %s (%s) without a metrics address", fields[1], f)
			}
		}
	}
}
