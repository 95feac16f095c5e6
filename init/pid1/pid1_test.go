package pid1

import (
	"log/slog"
	"strings"
	"testing"

	"ingot.dev/ingot/profiles"
)

// The boot plan is data: it renders without root and names every step in order.
func TestPlanString(t *testing.T) {
	p, _, err := profiles.Builtin("dev")
	if err != nil {
		t.Fatal(err)
	}
	p.Sysctls = map[string]string{"vm.swappiness": "0", "net.ipv4.ip_forward": "1"}
	n := &Node{log: slog.New(slog.DiscardHandler)}
	plan := n.Plan(p, []string{"virtio_blk", "evdev"}).String()
	want := []string{
		"modules\n  load virtio_blk evdev\n",
		"mount cgroup2 on /sys/fs/cgroup type cgroup2 (nosuid,nodev,noexec,nsdelegate)",
		"mount devpts on /dev/pts type devpts",
		"firmware (optional)\n",
		"state\n  mount INGOT-STATE on /var (",
		"node-config\n  read node config (fw_cfg opt/ingot/node.toml, a volume labelled INGOT-CONFIG or cidata; kept in /var/lib/ingot/node)\n",
		"sysctls (optional)\n  sysctl net.ipv4.ip_forward=1\n  sysctl vm.swappiness=0\n",
		"identity\n  machine-id kept in /var/lib/ingot/node/machine-id\n",
		"hostname ingot-dev",
		"write /etc/hosts",
	}
	last := -1
	for _, w := range want {
		i := strings.Index(plan, w)
		if i < 0 {
			t.Fatalf("plan lacks %q:\n%s", w, plan)
		}
		if i < last {
			t.Fatalf("%q out of order:\n%s", w, plan)
		}
		last = i
	}
}

func TestServiceSpec(t *testing.T) {
	s := profiles.Service{Name: "shell", Command: []string{"/bin/sh", "-l"}, Console: true, Restart: "always"}
	spec, err := serviceSpec(s, "/dev/ttyS0")
	if err != nil {
		t.Fatal(err)
	}
	if spec.Path != "/bin/sh" || len(spec.Args) != 1 || spec.Console != "/dev/ttyS0" || !strings.HasSuffix(spec.CgroupDir, "ingot.services/shell") {
		t.Fatalf("spec = %+v", spec)
	}
	if _, err := serviceSpec(profiles.Service{Name: "x", Command: []string{"/x"}, Restart: "sometimes"}, ""); err == nil {
		t.Fatal("bad restart policy accepted")
	}
}

func TestUnescape(t *testing.T) {
	if got := unescape(`/mnt/a\040b`); got != "/mnt/a b" {
		t.Fatal(got)
	}
}

// /var holds the runtime's root: image layers, container upper dirs, pod files. A setuid binary or
// a device node written there (by a container, through its rootfs) must not work on the host, so
// the state partition, or the tmpfs that stands in for it, is mounted nosuid and nodev. Setuid
// binaries inside containers still work: their overlay mount has flags of its own.
func TestPlanVarNosuidNodev(t *testing.T) {
	p, _, err := profiles.Builtin("dev")
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{log: slog.New(slog.DiscardHandler)}
	plan := n.Plan(p, nil).String()
	want := "mount INGOT-STATE on /var (nosuid,nodev,noatime; a tmpfs without one)"
	if !strings.Contains(plan, "\n  "+want+"\n") {
		t.Fatalf("plan lacks %q:\n%s", want, plan)
	}
	// The other mounts print their flags the same way.
	if w := "mount tmpfs on /run type tmpfs (nosuid,nodev,mode=0755)"; !strings.Contains(plan, w) {
		t.Fatalf("plan lacks %q:\n%s", w, plan)
	}
}

// securityfs is mounted where the runtime looks for loaded AppArmor profiles (a node without it
// refuses every localhost/ profile), when the kernel has it.
func TestPlanMountsSecurityfs(t *testing.T) {
	p, _, err := profiles.Builtin("dev")
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{log: slog.New(slog.DiscardHandler)}
	plan := n.Plan(p, nil).String()
	if w := "mount securityfs on /sys/kernel/security type securityfs (nosuid,nodev,noexec)"; !strings.Contains(plan, w) {
		t.Fatalf("plan lacks %q:\n%s", w, plan)
	}
}
