package critest

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseReport(t *testing.T) {
	for _, tc := range []struct {
		name     string
		report   string
		want     string
		failures []string
	}{
		{"empty suite", `[{"SpecReports": []}]`, "critest: 0 passed, 0 failed, 0 skipped", nil},
		{"every state", `[{"SpecReports": [
			{"ContainerHierarchyTexts": ["[k8s.io] Image"], "LeafNodeType": "It", "LeafNodeText": "pulls", "State": "passed"},
			{"ContainerHierarchyTexts": ["[k8s.io] Image"], "LeafNodeType": "It", "LeafNodeText": "benchmark", "State": "skipped"},
			{"ContainerHierarchyTexts": ["[k8s.io] Streaming"], "LeafNodeType": "It", "LeafNodeText": "exec", "State": "failed",
			 "Failure": {"Message": "failed to exec\nmore", "Location": {"FileName": "streaming.go", "LineNumber": 160}}},
			{"ContainerHierarchyTexts": ["[k8s.io] OOM"], "LeafNodeType": "It", "LeafNodeText": "oom", "State": "timedout"},
			{"ContainerHierarchyTexts": ["[k8s.io] Later"], "LeafNodeType": "It", "LeafNodeText": "todo", "State": "pending"},
			{"LeafNodeType": "SynchronizedBeforeSuite", "State": "passed"},
			{"LeafNodeType": "ReportAfterSuite", "LeafNodeText": "report", "State": "panicked"}
		]}]`, "critest: 1 passed, 3 failed, 1 skipped",
			[]string{"[ReportAfterSuite] report", "[k8s.io] OOM oom", "[k8s.io] Streaming exec"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseReport([]byte(tc.report))
			if err != nil {
				t.Fatal(err)
			}
			if s.String() != tc.want {
				t.Errorf("summary %q, want %q", s, tc.want)
			}
			var specs []string
			for _, f := range s.Failures {
				specs = append(specs, f.Spec)
			}
			if !slices.Equal(specs, tc.failures) {
				t.Errorf("failures %q, want %q", specs, tc.failures)
			}
		})
	}
	if _, err := ParseReport([]byte("Ran 3 of 4 Specs")); err == nil {
		t.Error("text output parsed as a JSON report")
	}
}

func TestFailureLocation(t *testing.T) {
	s, err := ParseReport([]byte(`[{"SpecReports": [{"LeafNodeType": "It", "LeafNodeText": "x", "State": "failed",
		"Failure": {"Message": "boom", "Location": {"FileName": "a.go", "LineNumber": 7}}}]}]`))
	if err != nil {
		t.Fatal(err)
	}
	if f := s.Failures[0]; f.Message != "boom" || f.Where != "a.go:7" || f.State != "failed" {
		t.Errorf("failure %+v", f)
	}
}

func TestCgroupMounts(t *testing.T) {
	mountinfo := `25 30 0:23 / /sys rw,nosuid - sysfs sysfs rw
32 25 0:27 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
33 32 0:28 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
34 32 0:29 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
36 32 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
37 32 0:32 / /sys/fs/cgroup/odd\040name rw - cgroup cgroup rw,pids
`
	got := cgroupMounts(strings.NewReader(mountinfo))
	want := []string{"/sys/fs/cgroup/cpu,cpuacct", "/sys/fs/cgroup/odd name", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified"}
	if !slices.Equal(got, want) {
		t.Errorf("cgroupMounts = %q, want %q", got, want)
	}
}

func TestRemoveTree(t *testing.T) {
	root := filepath.Join(t.TempDir(), "ingot-critest-x")
	for _, d := range []string{"pod1/ctr1", "pod1/ctr2", "pod2"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	if err := removeTree(root, time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(root); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", root, err)
	}
	if err := removeTree(root, time.Second); err != nil {
		t.Errorf("removing a missing tree: %v", err)
	}
}

func TestConfigTOML(t *testing.T) {
	cfg := configTOML("/tmp/run", "/tmp/run/ingot.sock", "127.0.0.1:5000")
	for _, want := range []string{`root = "/tmp/run/root"`, `state = "/tmp/run/state"`, `address = "/tmp/run/ingot.sock"`,
		`registry.mirrors."registry.k8s.io"]`, `endpoint = ["http://127.0.0.1:5000"]`} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %s:\n%s", want, cfg)
		}
	}
}

// TestArgsSkipOnlyTheDigestSpec: every run skips the digest-pinned spec, and nothing else by name.
func TestArgsSkipOnlyTheDigestSpec(t *testing.T) {
	args := Args("/logs/report.json", false, []string{"-ginkgo.focus=Image"})
	var skips []string
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "-ginkgo.skip="); ok {
			skips = append(skips, v)
		}
	}
	if len(skips) != 1 {
		t.Fatalf("critest args %q: %d -ginkgo.skip flags, want 1", args, len(skips))
	}
	if args[len(args)-1] != "-ginkgo.focus=Image" {
		t.Errorf("critest args %q: the caller's flags are not last", args)
	}
	skip := regexp.MustCompile(skips[0])
	for spec, want := range map[string]bool{
		"[k8s.io] Image Manager public image with digest should be pulled and removed [Conformance]":                 true,
		"[k8s.io] Image Manager public image with tag should be pulled and removed [Conformance]":                    false,
		"[k8s.io] Image Manager public image without tag should be pulled and removed [Conformance]":                 false,
		"[k8s.io] Image Manager image status should support all kinds of references [Conformance]":                   false,
		"[k8s.io] Streaming runtime should support streaming interfaces runtime should support attach [Conformance]": false,
	} {
		if got := skip.MatchString(spec); got != want {
			t.Errorf("-ginkgo.skip=%s matches %q: %v, want %v", skips[0], spec, got, want)
		}
	}
}
