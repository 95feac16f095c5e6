package benchjson

import (
	"path/filepath"
	"strings"
	"testing"
)

const sample = `goos: linux
goarch: amd64
pkg: ingot.dev/ingot/runtime/integration
cpu: Some CPU
BenchmarkPodStart-2   	      50	 118837543 ns/op	     31369 KiB-idle-pss	         6.640 KiB-pause-pss/pod	       118.6 ms-median
BenchmarkRunPodSandbox
    bench_test.go:12: a log line
BenchmarkRunPodSandbox/builtin/podnet-2 	      50	  90000000 ns/op	        90.5 ms-median
BenchmarkCompare-2   	
a table the benchmark printed
      50	 469060438 ns/op	       150.2 ingot-start-ms-median	        50.49 containerd-pull-MiB/s
PASS
pkg: ingot.dev/ingot/runtime/images
BenchmarkPull-2 	1	 5 ns/op	 120.5 MB/s
ok  	ingot.dev/ingot/runtime/integration	12.3s
`

func TestParse(t *testing.T) {
	var r Run
	if err := r.Parse(strings.NewReader(sample)); err != nil {
		t.Fatal(err)
	}
	if r.Host != "Some CPU" || len(r.Results) != 4 {
		t.Fatalf("host %q, %d results: %+v", r.Host, len(r.Results), r.Results)
	}
	p := r.Results[0]
	if p.Pkg != "ingot.dev/ingot/runtime/integration" || p.Name != "BenchmarkPodStart" || p.N != 50 ||
		p.Metrics["ms-median"] != 118.6 || p.Metrics["KiB-pause-pss/pod"] != 6.64 || p.Metrics["ns/op"] != 118837543 {
		t.Fatalf("first result %+v", p)
	}
	if r.Results[1].Name != "BenchmarkRunPodSandbox/builtin/podnet" || r.Results[3].Pkg != "ingot.dev/ingot/runtime/images" {
		t.Fatalf("results %+v", r.Results)
	}
	// A benchmark that printed while it ran: its results come on a line of their own.
	if c := r.Results[2]; c.Name != "BenchmarkCompare" || c.N != 50 || c.Metrics["ingot-start-ms-median"] != 150.2 || c.Metrics["containerd-pull-MiB/s"] != 50.49 {
		t.Fatalf("result after printed output %+v", c)
	}
	var bad Run
	if err := bad.Parse(strings.NewReader("BenchmarkX-2 1 5 ns/op 3\n")); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Fatalf("unpaired values: %v", err)
	}
	if err := bad.Parse(strings.NewReader("BenchmarkX-2 1 five ns/op\n")); err == nil || !strings.Contains(err.Error(), `"five"`) {
		t.Fatalf("bad value: %v", err)
	}
}

func TestCompare(t *testing.T) {
	old := &Run{Results: []Result{
		{Pkg: "p", Name: "BenchmarkA", Metrics: map[string]float64{"ms-median": 100, "MB/s": 100, "KiB-pss/pod": 100, "ns/op": 1}},
		{Pkg: "p", Name: "BenchmarkGone", Metrics: map[string]float64{"ms-median": 1}},
	}}
	new := &Run{Results: []Result{
		{Pkg: "p", Name: "BenchmarkA", Metrics: map[string]float64{"ms-median": 120, "MB/s": 80, "KiB-pss/pod": 50, "ns/op": 9}},
		{Pkg: "p", Name: "BenchmarkNew", Metrics: map[string]float64{"ms-median": 1}},
	}}
	var b strings.Builder
	if n := Compare(&b, old, new, 0.1); n != 2 {
		t.Fatalf("%d worse, want 2 (slower start, lower throughput):\n%s", n, b.String())
	}
	out := b.String()
	for _, want := range []string{"ms-median", "1.200  WORSE", "0.800  WORSE", "0.500\n", "gone", "new"} {
		if !strings.Contains(out, want) {
			t.Fatalf("table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "ns/op") {
		t.Fatalf("ns/op compared:\n%s", out)
	}
	// Round trip through a file.
	path := filepath.Join(t.TempDir(), "run.json")
	if err := new.Write(path); err != nil {
		t.Fatal(err)
	}
	back, err := Read(path)
	if err != nil || back.Results[0].Metrics["MB/s"] != 80 {
		t.Fatalf("read back %+v, %v", back, err)
	}
}
