package boot

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestRunOrderAndOptional(t *testing.T) {
	var ran []string
	step := func(name string, err error) Step {
		return Func{Name: name, Fn: func(context.Context) error { ran = append(ran, name); return err }}
	}
	boom := errors.New("boom")
	plan := Plan{
		{Name: "first", Steps: []Step{step("a", nil), step("b", nil)}},
		{Name: "extras", Optional: true, Steps: []Step{step("c", boom), step("d", nil)}},
		{Name: "must", Steps: []Step{step("e", boom), step("f", nil)}},
		{Name: "never", Steps: []Step{step("g", nil)}},
	}
	var phases []string
	err := plan.Run(context.Background(), func(phase string, _ time.Duration, err error) {
		phases = append(phases, phase+"="+boolStr(err == nil))
	})
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "boot phase must: e:") {
		t.Fatalf("err = %v", err)
	}
	if got := strings.Join(ran, ""); got != "abcde" {
		t.Fatalf("ran %s, want abcde (an optional failure goes on, a required one stops)", got)
	}
	if got := strings.Join(phases, " "); got != "first=ok extras=failed must=failed" {
		t.Fatalf("observed %s", got)
	}
}

func boolStr(ok bool) string {
	if ok {
		return "ok"
	}
	return "failed"
}

func TestStepStrings(t *testing.T) {
	for _, c := range []struct {
		s    Step
		want string
	}{
		{Mount{Source: "tmpfs", Target: "/run", FSType: "tmpfs", Data: "mode=0755"}, "mount tmpfs on /run type tmpfs (mode=0755)"},
		{Mount{Source: "proc", Target: "/proc", FSType: "proc", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC}, "mount proc on /proc type proc (nosuid,nodev,noexec)"},
		{Mount{Source: "tmpfs", Target: "/var", FSType: "tmpfs", Flags: unix.MS_NODEV | unix.MS_NOSUID | unix.MS_NOATIME | unix.MS_MANDLOCK, Data: "mode=0755"}, "mount tmpfs on /var type tmpfs (nosuid,nodev,noatime,0x40,mode=0755)"},
		{Dir{Path: "/var/log", Mode: 0o755}, "mkdir /var/log 0755"},
		{Symlink{Target: "/proc/self/fd", Link: "/dev/fd"}, "ln -s /proc/self/fd /dev/fd"},
		{Sysctl{Key: "net.ipv4.ip_forward", Value: "1"}, "sysctl net.ipv4.ip_forward=1"},
		{Hostname("node-1"), "hostname node-1"},
	} {
		if got := c.s.String(); got != c.want {
			t.Errorf("String() = %q, want %q", got, c.want)
		}
	}
	if p := (Sysctl{Key: "net.ipv4.ip_forward"}).Path(); p != "/proc/sys/net/ipv4/ip_forward" {
		t.Errorf("sysctl path %s", p)
	}
}

func TestFileSteps(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	hostname := dir + "/etc/hostname"
	if err := (WriteFile{Path: hostname, Data: "n1\n", Mode: 0o600}).Do(ctx); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(hostname); err != nil || string(b) != "n1\n" {
		t.Fatalf("WriteFile left %q, %v; want n1", b, err)
	}
	if fi, err := os.Stat(hostname); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("WriteFile left %v (err %v), want mode 0600", fi, err)
	}

	l := Symlink{Target: "hostname", Link: dir + "/etc/name"}
	os.WriteFile(l.Link, []byte("in the way"), 0o644) // what was there before is replaced
	for range 2 {                                     // idempotent
		if err := l.Do(ctx); err != nil {
			t.Fatal(err)
		}
		if got, err := os.Readlink(l.Link); err != nil || got != "hostname" {
			t.Fatalf("Symlink left %q, %v; want a link to hostname", got, err)
		}
	}

	old := syscall.Umask(0o077) // MkdirAll honours the umask; Dir must not
	defer syscall.Umask(old)
	d := Dir{Path: dir + "/a/b", Mode: 0o755}
	if err := d.Do(ctx); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(d.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Fatalf("Dir left %v; want a directory with mode 0755", fi.Mode())
	}
}
