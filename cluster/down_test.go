package cluster

import (
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestDownStopsItsOwnProcesses checks down's process handling without the control plane's
// binaries: a process up started (here a shell naming the state directory, with a child in its
// group) is stopped with its group; a pid file naming someone else's process (a reused pid)
// leaves that process alone.
func TestDownStopsItsOwnProcesses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cluster")
	u := &upper{dir: dir, Options: Options{Log: slog.New(slog.DiscardHandler)}}
	for _, d := range []string{dir, u.path(dirRun), u.path(dirLogs)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(u.path(FileState), []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The shell's child sleep is in its group, and does not name the directory.
	if err := u.start(procEtcd, []string{"/bin/sh", "-c", "sleep 1000 & echo $! > sleep.pid; wait; : " + dir}); err != nil {
		t.Fatal(err)
	}
	// Just after exec the new program's command line may not be readable yet.
	shell, ok := 0, false
	for deadline := time.Now().Add(10 * time.Second); !ok && time.Now().Before(deadline); {
		shell, ok = running(dir, procEtcd)
	}
	if !ok {
		t.Fatal("the started process does not count as running")
	}
	var sleepPid int
	for sleepPid == 0 {
		b, _ := os.ReadFile(u.path("sleep.pid"))
		sleepPid, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	other := exec.Command("sleep", "1000")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer other.Process.Kill()
	if err := os.WriteFile(u.path(dirRun, procAPIServer+".pid"), []byte(strconv.Itoa(other.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}

	if err := Down(dir, true); err != nil {
		t.Fatal(err)
	}
	<-u.children[0].done
	if st := procState(sleepPid); st != "" && st != "Z" {
		t.Errorf("the shell's child (pid %d) survived down: state %s", sleepPid, st)
	}
	if _, ok := running(dir, procEtcd); ok {
		t.Errorf("pid %d still counts as running", shell)
	}
	if st := procState(other.Process.Pid); st != "S" {
		t.Errorf("down signalled a process it did not start (pid %d): state %q, want S (sleeping)", other.Process.Pid, st)
	}
	for _, p := range []string{procEtcd, procAPIServer} {
		if _, err := os.Stat(u.path(dirRun, p+".pid")); !os.IsNotExist(err) {
			t.Errorf("%s.pid after down: %v, want removed", p, err)
		}
	}
	// --keep kept the directory.
	if _, err := os.Stat(u.path(FileState)); err != nil {
		t.Errorf("down --keep: %v", err)
	}
}

// procState is the state letter of pid in /proc/PID/stat, "" when there is no such process. A
// killed child whose parent died first may wait a moment as a zombie (Z) for its reaper.
func procState(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return ""
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	st, _, _ := strings.Cut(rest, " ")
	return st
}

// TestDownRefusesForeignDirectory: down removes its state directory whole, so it refuses one
// that up did not make, and names it.
func TestDownRefusesForeignDirectory(t *testing.T) {
	dir := t.TempDir()
	keep := filepath.Join(dir, "precious")
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Down(dir, false)
	if err == nil || !strings.Contains(err.Error(), "cluster down: "+dir+" holds no cluster (no cluster.json)") {
		t.Errorf("Down(%s) = %v", dir, err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("down touched a directory it did not make: %v", err)
	}
}
