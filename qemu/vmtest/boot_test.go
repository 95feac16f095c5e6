package vmtest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/internal/testgate"
	"ingot.dev/ingot/qemu"
)

// Generous deadlines: TCG on a busy 2-core machine. They bound a hang; they are not speed checks
// (make bench measures speed).
const (
	bootTimeout  = 4 * time.Minute
	shellTimeout = time.Minute
	powerTimeout = 90 * time.Second
)

// TestBoot boots the dev image on both architectures by both boot paths and checks, from the
// console shell, what PID 1 promises: cgroup2 with controllers enabled, /var on the state
// partition surviving a reboot, and a clean power off.
func TestBoot(t *testing.T) {
	testgate.Short(t, "VM boots")
	for _, archName := range []string{"amd64", "arm64"} {
		for _, boot := range []string{qemu.BootDirect, qemu.BootUEFI} {
			t.Run(archName+"/"+boot, func(t *testing.T) {
				RequireVM(t, archName)
				if boot == qemu.BootUEFI {
					RequireUEFI(t, archName)
				}
				img := Image(t, "dev", archName)
				vm := Boot(t, img, boot)
				took := vm.WaitReady(bootTimeout)
				t.Logf("%s %s: QEMU start to %q: %d ms", archName, boot, ReadyLine, took.Milliseconds())
				vm.Prompt(shellTimeout)

				mounts := vm.MustShell("cat /proc/mounts", shellTimeout)
				if !strings.Contains(mounts, "cgroup2 /sys/fs/cgroup cgroup2") {
					t.Fatalf("cgroup2 not mounted on /sys/fs/cgroup:\n%s", mounts)
				}
				if !strings.Contains(mounts, "/dev/vda2 /var ext4 rw,nosuid,nodev,noatime") {
					t.Fatalf("/var is not the state partition mounted nosuid,nodev,noatime:\n%s", mounts)
				}
				ctrl := vm.MustShell("cat /sys/fs/cgroup/cgroup.subtree_control /sys/fs/cgroup/ingot.pods/cgroup.subtree_control", shellTimeout)
				for _, c := range []string{"cpu", "memory", "pids", "io"} {
					if strings.Count(" "+strings.ReplaceAll(ctrl, "\n", " ")+" ", " "+c+" ") != 2 {
						t.Fatalf("controller %s not enabled in the root and the pod subtree:\n%s", c, ctrl)
					}
				}
				// PID 1 is the image's own ingot-node, byte for byte: the binary it runs has the
				// sha256 the build recorded for it.
				want := nodeBinarySum(t, img)
				if out := vm.MustShell("sha256sum /proc/1/exe", shellTimeout); !strings.HasPrefix(out, want+" ") {
					t.Fatalf("PID 1 does not run the image's ingot-node (sha256 %s): sha256sum /proc/1/exe says %q", want, out)
				}
				// The root is the image's squashfs, read-only; /etc a tmpfs holding the image's files.
				if out := vm.MustShell("grep -E ' /(etc)? ' /proc/mounts; touch /bin/x 2>&1; grep -c '^name = ' /etc/ingot/profile.toml", shellTimeout); !strings.Contains(out, " / squashfs ro,") ||
					!strings.Contains(out, "tmpfs /etc tmpfs rw,nosuid,nodev") || !strings.Contains(out, "Read-only file system") {
					t.Fatalf("root is not the read-only squashfs with a writable /etc: %s", out)
				}

				token := fmt.Sprintf("state-%d", time.Now().UnixNano())
				vm.MustShell("echo "+token+" > /var/persist && sync", shellTimeout)

				// reboot: busybox signals PID 1 (SIGTERM), which stops services and reboots.
				if err := vm.Console.Send("reboot\n"); err != nil {
					t.Fatal(err)
				}
				vm.WaitFor("ingot: reboot", powerTimeout)
				vm.WaitReady(bootTimeout)
				vm.Prompt(shellTimeout)
				if got := vm.MustShell("cat /var/persist", shellTimeout); got != token {
					t.Fatalf("/var/persist after reboot = %q, want %q", got, token)
				}

				vm.PowerOff(archName, boot)
				start := time.Now()
				vm.WaitExit(powerTimeout)
				t.Logf("%s %s: power off took %d ms", archName, boot, time.Since(start).Milliseconds())
				out := vm.Console.Output()
				if !strings.Contains(out, "ingot: power off") {
					t.Fatalf("no clean power off on the console:\n%s", tail(out, 3000))
				}
				if !strings.Contains(out, "unmounted target=/var") {
					t.Fatalf("/var was not unmounted at power off:\n%s", tail(out, 3000))
				}
				vm.AssertCleanConsole()
			})
		}
	}
}

// nodeBinarySum is the sha256 of the ingot-node binary the image in dir was built from, as its
// manifest records it.
func nodeBinarySum(t testing.TB, dir string) string {
	t.Helper()
	m, err := manifest.Read(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range m.Inputs {
		if in.Name == "ingot-node" {
			return in.SHA256
		}
	}
	t.Fatalf("image %s: the manifest lists no ingot-node input", dir)
	return ""
}
