package critest

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
)

// Summary counts critest's specs by outcome. Skipped includes the specs critest filters out
// itself (the benchmarks) and those skipped at run time (a feature the runtime does not
// report); Failed includes panicked, timed-out, interrupted and aborted specs.
type Summary struct {
	Passed, Failed, Skipped, Pending int
	Failures                         []Failure
}

// Failure is one failed spec and ginkgo's reason.
type Failure struct {
	Spec    string // container texts and the It text, joined by spaces, as ginkgo prints it
	State   string
	Message string
	Where   string // file:line of the failed assertion
}

// String is the one summary line `make critest` prints.
func (s Summary) String() string {
	return fmt.Sprintf("critest: %d passed, %d failed, %d skipped", s.Passed, s.Failed, s.Skipped)
}

// The part of ginkgo's JSON report (--ginkgo.json-report) the summary needs.
type suiteReport struct {
	SpecReports []struct {
		ContainerHierarchyTexts []string
		LeafNodeType            string
		LeafNodeText            string
		State                   string
		Failure                 *struct {
			Message  string
			Location struct {
				FileName   string
				LineNumber int
			}
		} `json:",omitempty"`
	}
}

// ParseReport summarises ginkgo's JSON report. Only specs (It nodes) count; suite-level nodes
// appear in the report only when they fail, and then count as one failure each.
func ParseReport(data []byte) (Summary, error) {
	var suites []suiteReport
	if err := json.Unmarshal(data, &suites); err != nil {
		return Summary{}, fmt.Errorf("ginkgo report: %w", err)
	}
	var s Summary
	for _, suite := range suites {
		for _, r := range suite.SpecReports {
			spec := strings.TrimSpace(strings.Join(append(append([]string(nil), r.ContainerHierarchyTexts...), r.LeafNodeText), " "))
			if r.LeafNodeType != "It" {
				if r.State == "passed" || r.State == "skipped" {
					continue
				}
				spec = "[" + r.LeafNodeType + "] " + spec
			}
			switch r.State {
			case "passed":
				s.Passed++
			case "skipped":
				s.Skipped++
			case "pending":
				s.Pending++
			default:
				s.Failed++
				f := Failure{Spec: spec, State: r.State}
				if r.Failure != nil {
					f.Message = r.Failure.Message
					f.Where = fmt.Sprintf("%s:%d", r.Failure.Location.FileName, r.Failure.Location.LineNumber)
				}
				s.Failures = append(s.Failures, f)
			}
		}
	}
	sort.Slice(s.Failures, func(i, j int) bool { return s.Failures[i].Spec < s.Failures[j].Spec })
	return s, nil
}

// ReadReport parses the report file critest wrote.
func ReadReport(path string) (Summary, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Summary{}, fmt.Errorf("critest wrote no report: %w", err)
	}
	return ParseReport(data)
}
