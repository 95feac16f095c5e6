package supervise

import (
	"errors"
	"syscall"
	"testing"
	"time"
)

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Policy
		wantErr bool
	}{
		{"always", Always, false},
		{"on-failure", OnFailure, false},
		{"never", Never, false},
		{"", 0, true},
		{"Always", 0, true},
		{"onfailure", 0, true},
	} {
		got, err := ParsePolicy(tc.in)
		if tc.wantErr {
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParsePolicy(%q) = %v, %v; want ErrInvalid", tc.in, got, err)
			}
			continue
		}
		if err != nil || got != tc.want || got.String() != tc.in {
			t.Errorf("ParsePolicy(%q) = %v (%q), %v; want %v", tc.in, got, got.String(), err, tc.want)
		}
	}
	if s := Policy(9).String(); s != "Policy(9)" {
		t.Errorf("Policy(9).String() = %q", s)
	}
}

func TestShouldRestart(t *testing.T) {
	ok := Exit{Code: 0}
	fail := Exit{Code: 1}
	sig := Exit{Code: -1, Signal: syscall.SIGSEGV}
	startErr := Exit{Code: -1, Err: syscall.ENOENT}
	dnr := Exit{Code: DoNotRestart}
	for _, tc := range []struct {
		p    Policy
		e    Exit
		want bool
	}{
		{Always, ok, true}, {Always, fail, true}, {Always, sig, true}, {Always, startErr, true}, {Always, dnr, false},
		{OnFailure, ok, false}, {OnFailure, fail, true}, {OnFailure, sig, true}, {OnFailure, startErr, true}, {OnFailure, dnr, false},
		{Never, ok, false}, {Never, fail, false}, {Never, sig, false}, {Never, startErr, false}, {Never, dnr, false},
	} {
		if got := shouldRestart(tc.p, tc.e); got != tc.want {
			t.Errorf("shouldRestart(%v, %v) = %v, want %v", tc.p, tc.e, got, tc.want)
		}
	}
}

func TestNextBackoff(t *testing.T) {
	for _, tc := range []struct {
		prev, ran, want time.Duration
	}{
		{0, 0, 100 * time.Millisecond},
		{100 * time.Millisecond, time.Second, 200 * time.Millisecond},
		{200 * time.Millisecond, time.Second, 400 * time.Millisecond},
		{16 * time.Second, time.Second, 30 * time.Second},
		{30 * time.Second, time.Second, 30 * time.Second},
		{30 * time.Second, 10 * time.Second, 30 * time.Second}, // exactly 10s is not "more than"
		{30 * time.Second, 11 * time.Second, 100 * time.Millisecond},
	} {
		if got := nextBackoff(tc.prev, tc.ran); got != tc.want {
			t.Errorf("nextBackoff(%v, %v) = %v, want %v", tc.prev, tc.ran, got, tc.want)
		}
	}
}

func TestRing(t *testing.T) {
	for _, tc := range []struct {
		size   int
		writes []string
		want   string
	}{
		{8, nil, ""},
		{8, []string{"abc"}, "abc"},
		{8, []string{"abcdefgh"}, "abcdefgh"},
		{8, []string{"abcd", "efgh"}, "abcdefgh"},
		{8, []string{"abcdef", "ghij"}, "cdefghij"},
		{8, []string{"abcdefghijkl"}, "efghijkl"},
		{8, []string{"xy", "abcdefghijkl", "z"}, "fghijklz"},
		{4, []string{"a", "b", "c", "d", "e", "f"}, "cdef"},
	} {
		r := newRing(tc.size)
		for _, w := range tc.writes {
			r.Write([]byte(w))
		}
		if got := string(r.Bytes()); got != tc.want {
			t.Errorf("ring(%d) after %q = %q, want %q", tc.size, tc.writes, got, tc.want)
		}
	}
}

func TestExitString(t *testing.T) {
	for _, tc := range []struct {
		e    Exit
		want string
	}{
		{Exit{Code: 3}, "exit status 3"},
		{Exit{Code: -1, Signal: syscall.SIGKILL}, "killed by signal killed"},
		{Exit{Code: -1, Err: syscall.ENOENT}, "no such file or directory"},
	} {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("%#v.String() = %q, want %q", tc.e, got, tc.want)
		}
	}
}
