package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParse feeds the config.toml parser random documents, starting from the seed document's
// examples in testdata: it must not panic, a document it accepts yields a config, and every
// error it returns is an *Error naming the file, as `ingot build` prints them; it returns.
func FuzzParse(f *testing.F) {
	seeds, err := filepath.Glob(filepath.Join("testdata", "*.toml"))
	if err != nil || len(seeds) == 0 {
		f.Fatalf("no seed corpus in testdata (%v)", err)
	}
	for _, p := range seeds {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("version = 3\n[plugins.'io.containerd.cri.v1.runtime']\nenable_selinux = 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseWithin(t, data, 10*time.Second)
		if err == nil {
			if c == nil {
				t.Fatal("no error and no config")
			}
			return
		}
		for _, e := range unjoin(err) {
			var pe *Error
			if !errors.As(e, &pe) || pe.File != "fuzz.toml" || !strings.HasPrefix(e.Error(), "fuzz.toml") {
				t.Fatalf("error %q (%T) does not name the file as an *Error", e, e)
			}
		}
	})
}

// parseWithin runs Parse and fails the test when it has not returned after limit: the fuzzer
// reports a crash, with the input, but would otherwise just stall on an endless loop.
func parseWithin(t *testing.T, data []byte, limit time.Duration) (*Config, error) {
	type result struct {
		c   *Config
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, _, err := Parse("fuzz.toml", data)
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		return r.c, r.err
	case <-time.After(limit):
		t.Fatalf("Parse still running after %s on %q", limit, data)
		return nil, nil
	}
}

// unjoin splits errors.Join's result into its parts.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
