package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/internal/testgate"
)

// crictlWithin runs crictl like Runtime.Crictl but gives up after limit, so a call the runtime
// never answers fails the test instead of hanging it.
func (r *Runtime) crictlWithin(limit time.Duration, args ...string) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.crictl, append([]string{"--config", filepath.Join(r.Dir, "crictl.yaml")}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	out, err := cmd.Output()
	took := time.Since(start)
	if ctx.Err() != nil {
		return string(out), took, fmt.Errorf("crictl %s: no answer within %s", strings.Join(args, " "), limit)
	}
	if err != nil {
		err = fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), took, err
}

// TestContainerHardening checks, on one running busybox container, what issue 7 items 9, 11 and
// 13 fixed: the container's directories are closed to other host users, ExecSync neither waits
// forever for output held open by a background child nor lets a timed-out command's children
// live on, and a log_path outside the pod's log directory is refused.
func TestContainerHardening(t *testing.T) {
	testgate.Short(t, "the runtime integration tier")
	r := StartWith(t, func(r *Runtime) {
		f, err := os.OpenFile(r.Config, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		fmt.Fprintf(f, "[plugins.\"io.containerd.grpc.v1.cri\"]\n  drain_exec_sync_io_timeout = \"1s\"\n")
	})
	r.MustCrictl("pull", busybox)
	podCfg := podConfig(t, r, "harden")
	pod := r.MustCrictl("runp", podCfg)
	ctr := r.MustCrictl("create", pod, ctrConfig(t, r, "sleeper", "sleep", "3600"), podCfg)
	r.MustCrictl("start", ctr)

	t.Run("ContainerDirModes", func(t *testing.T) {
		dir := filepath.Join(r.Dir, "root", "containers", ctr)
		for _, c := range []struct {
			path string
			want os.FileMode
		}{
			{dir, 0o700},
			{filepath.Join(dir, "work"), 0o700},
			{filepath.Join(dir, "upper"), 0o755}, // the container's "/"
		} {
			fi, err := os.Stat(c.path)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != c.want {
				t.Errorf("%s has mode %#o, want %#o", c.path, got, c.want)
			}
		}
	})

	// A probe that starts a background child: the child inherits stdout and holds it open. With
	// drain_exec_sync_io_timeout = 1s the answer comes about a second after the shell exited.
	t.Run("ExecSyncBackgroundChild", func(t *testing.T) {
		out, took, err := r.crictlWithin(45*time.Second, "exec", "-s", "--timeout", "30", ctr, "/bin/sh", "-c", "sleep 1000 & echo hi")
		if err != nil {
			t.Fatalf("exec with a background child: %v (after %s)", err, took.Round(time.Millisecond))
		}
		if out != "hi" {
			t.Fatalf("exec output %q, want %q", out, "hi")
		}
		if took > 15*time.Second {
			t.Fatalf("exec took %s, want about the 1s drain timeout", took.Round(time.Millisecond))
		}
	})

	// A command that runs past its timeout, with a background child holding its output: the
	// whole group is killed and the timeout reported.
	t.Run("ExecSyncTimeoutKillsGroup", func(t *testing.T) {
		out, took, err := r.crictlWithin(45*time.Second, "exec", "-s", "--timeout", "2", ctr, "/bin/sh", "-c", "sleep 1001 & sleep 1002")
		if err == nil || !strings.Contains(err.Error(), "DeadlineExceeded") || !strings.Contains(err.Error(), "timed out after 2s") {
			t.Fatalf("exec past its timeout: %v (output %q, after %s), want DeadlineExceeded: timed out after 2s", err, out, took.Round(time.Millisecond))
		}
		if took > 15*time.Second {
			t.Fatalf("exec took %s, want about its 2s timeout", took.Round(time.Millisecond))
		}
		ps := r.MustCrictl("exec", "-s", ctr, "ps", "-o", "pid,args")
		if strings.Contains(ps, "sleep 1001") || strings.Contains(ps, "sleep 1002") {
			t.Fatalf("the timed-out command's processes live on:\n%s", ps)
		}
	})

	t.Run("LogPathEscape", func(t *testing.T) {
		cfg := writeJSON(t, r.Dir, "escape-ctr.json", map[string]any{
			"metadata": map[string]any{"name": "escape"},
			"image":    map[string]any{"image": busybox},
			"command":  []string{"sleep", "3600"},
			"log_path": "../../escape.log",
			"linux":    map[string]any{},
		})
		out, err := r.Crictl("create", pod, cfg, podCfg)
		if err == nil {
			t.Fatalf("a container whose log_path escapes log_directory was created: %s", out)
		}
		logDir := filepath.Join(r.Dir, "logs", "harden")
		want := fmt.Sprintf("log_path %q escapes log_directory %s", "../../escape.log", logDir)
		// crictl logs the gRPC status with its quotes escaped.
		if msg := strings.ReplaceAll(err.Error(), `\"`, `"`); !strings.Contains(msg, "code = InvalidArgument") || !strings.Contains(msg, want) {
			t.Fatalf("create: %v\nwant InvalidArgument: %s", err, want)
		}
		if _, err := os.Stat(filepath.Join(logDir, "../../escape.log")); err == nil {
			t.Fatal("the escaping log file was created")
		}
	})
}
