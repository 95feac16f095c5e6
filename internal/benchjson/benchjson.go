// Package benchjson keeps benchmark results as JSON and compares two runs. It reads the text
// `go test -bench` prints (one line per benchmark: name, iterations, then value-unit pairs), so
// every metric a benchmark reports with b.ReportMetric is kept under its unit.
package benchjson

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Run is one `make bench`: where and when it ran, and its results.
type Run struct {
	Date    string   `json:"date"`
	Commit  string   `json:"commit,omitempty"`
	Host    string   `json:"host,omitempty"` // the cpu line go test prints
	Results []Result `json:"results"`
}

// Result is one benchmark's line.
type Result struct {
	Pkg     string             `json:"pkg"`
	Name    string             `json:"name"` // without the -GOMAXPROCS suffix
	N       int                `json:"n"`
	Metrics map[string]float64 `json:"metrics"` // unit → value, ns/op included
}

// procs is the -GOMAXPROCS suffix go test adds to a benchmark's name.
var procs = regexp.MustCompile(`-\d+$`)

// Parse reads go test -bench output and appends its results to r. Lines that are not results
// (logs, PASS, ok) are skipped; a result line that does not parse is an error naming it.
func (r *Run) Parse(in io.Reader) error {
	pkg := ""
	// pending is a benchmark whose name line had no results: the benchmark printed something
	// while it ran, and go test writes its results on a line of their own after that output.
	pending := ""
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if v, ok := strings.CutPrefix(text, "pkg: "); ok {
			pkg = strings.TrimSpace(v)
			continue
		}
		if v, ok := strings.CutPrefix(text, "cpu: "); ok && r.Host == "" {
			r.Host = strings.TrimSpace(v)
			continue
		}
		f := strings.Fields(text)
		if len(f) == 1 && strings.HasPrefix(f[0], "Benchmark") && strings.HasSuffix(text, "\t") {
			pending = f[0]
			continue
		}
		if pending != "" && len(f) >= 3 && strings.HasPrefix(text, " ") {
			if _, err := strconv.Atoi(f[0]); err == nil && f[2] == "ns/op" {
				f = append([]string{pending}, f...)
				text = pending + "\t" + text
				pending = ""
			}
		}
		if len(f) < 2 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		n, err := strconv.Atoi(f[1])
		if err != nil {
			continue // "BenchmarkX" alone: a sub-benchmark's parent, or a log line
		}
		if len(f)%2 != 0 {
			return fmt.Errorf("line %d: %q: values and units do not pair up", line, text)
		}
		res := Result{Pkg: pkg, Name: procs.ReplaceAllString(f[0], ""), N: n, Metrics: map[string]float64{}}
		for i := 2; i < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return fmt.Errorf("line %d: %q: value %q: %w", line, text, f[i], err)
			}
			res.Metrics[f[i+1]] = v
		}
		r.Results = append(r.Results, res)
	}
	return sc.Err()
}

// Read loads a run written by Write.
func Read(path string) (*Run, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Run
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// Write stores the run as indented JSON.
func (r *Run) Write(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// HigherIsBetter tells the units where more is better (throughput: anything per second).
func HigherIsBetter(unit string) bool { return strings.HasSuffix(unit, "/s") }

// Compare writes a table of every metric the two runs share, old beside new with new/old, and a
// mark where new is worse than old by more than threshold (0.1: 10%). It returns how many were
// worse. Metrics only one run has are listed as such.
func Compare(w io.Writer, old, new *Run, threshold float64) int {
	type key struct{ bench, unit string }
	index := func(r *Run) map[key]float64 {
		m := map[key]float64{}
		for _, res := range r.Results {
			for unit, v := range res.Metrics {
				if unit == "ns/op" {
					continue // a benchmark's whole loop: its own metrics say what it measures
				}
				m[key{res.Pkg + "." + res.Name, unit}] = v
			}
		}
		return m
	}
	o, n := index(old), index(new)
	var keys []key
	for k := range o {
		keys = append(keys, k)
	}
	for k := range n {
		if _, ok := o[k]; !ok {
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].bench != keys[j].bench {
			return keys[i].bench < keys[j].bench
		}
		return keys[i].unit < keys[j].unit
	})
	worse := 0
	fmt.Fprintf(w, "%-60s %-22s %12s %12s %8s\n", "benchmark", "unit", "old", "new", "new/old")
	for _, k := range keys {
		ov, inOld := o[k]
		nv, inNew := n[k]
		name := strings.TrimPrefix(k.bench, "ingot.dev/ingot/")
		switch {
		case !inOld:
			fmt.Fprintf(w, "%-60s %-22s %12s %12.4g %8s\n", name, k.unit, "-", nv, "new")
			continue
		case !inNew:
			fmt.Fprintf(w, "%-60s %-22s %12.4g %12s %8s\n", name, k.unit, ov, "-", "gone")
			continue
		}
		ratio, mark := math.NaN(), ""
		if ov != 0 {
			ratio = nv / ov
			if (HigherIsBetter(k.unit) && ratio < 1-threshold) || (!HigherIsBetter(k.unit) && ratio > 1+threshold) {
				mark = "  WORSE"
				worse++
			}
		}
		fmt.Fprintf(w, "%-60s %-22s %12.4g %12.4g %8.3f%s\n", name, k.unit, ov, nv, ratio, mark)
	}
	return worse
}
