// Package pid1 is the node's init: it runs the boot plan, starts the profile's services under
// supervision, prints the ready line, and on a power button press, a signal or a panic stops
// everything cleanly and powers off or reboots. It has exactly one fatal path (shutdown), never
// returns and never exits: the kernel panics when PID 1 exits.
package pid1

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"ingot.dev/ingot/init/boot"
	"ingot.dev/ingot/init/cgroup"
	"ingot.dev/ingot/init/console"
	"ingot.dev/ingot/init/hw"
	"ingot.dev/ingot/init/identity"
	"ingot.dev/ingot/init/kmod"
	"ingot.dev/ingot/init/nodesource"
	"ingot.dev/ingot/init/power"
	"ingot.dev/ingot/init/rootfs"
	"ingot.dev/ingot/init/statedisk"
	"ingot.dev/ingot/init/supervise"
	"ingot.dev/ingot/profiles"
)

// Files the image builder puts into the root filesystem.
const (
	ProfilePath = "/etc/ingot/profile.toml"
	ModulesLoad = "/etc/ingot/modules.load" // one module name a line, in the profile's order
	switchedEnv = "INGOT_SWITCHED_ROOT"
	newRoot     = "/.root"
)

// Action is what the node does once services have stopped.
type Action int

const (
	PowerOff Action = iota
	Reboot
)

func (a Action) String() string {
	if a == Reboot {
		return "reboot"
	}
	return "power off"
}

// Node is the running init. All state lives here, none in package variables.
type Node struct {
	log *slog.Logger
	out *console.Consoles // every console the kernel was given; nil: stdout (tests)
	// installed is the disk the installer mode wrote this boot ("" when it did not run).
	installed  string
	installErr error      // why the installer mode failed
	mu         sync.Mutex // guards sup, which boot sets while stop may already read it
	sup        *supervise.Supervisor
	once       sync.Once
	shutdown   chan request
	// node is the node config read at boot. Consumers that start later take their settings from
	// it: the NTP client its servers (node.NTP()), the kubelet its labels, taints and
	// [kubernetes], the node API its [api].
	node     *nodeSettings
	clock    clockRef // the NTP client, once the network phase has started it
	upgrades upgrades // image swaps: one at a time, and the last one's outcome
}

type request struct {
	action Action
	reason string
}

// Main is PID 1's entry point. It does not return.
func Main(banner string) {
	out := console.NewConsoles(os.Stdout)
	log := slog.New(console.NewHandler(out, slog.LevelInfo))
	n := &Node{log: log, out: out, shutdown: make(chan request, 4)}
	log.Info("ingot-node starting", "with", banner)
	defer func() {
		if r := recover(); r != nil {
			n.stop(request{Reboot, fmt.Sprintf("panic: %v\n%s", r, debug.Stack())})
		}
	}()
	n.run(context.Background())
}

// watchPowerButton powers the node off when the power button is pressed.
func (n *Node) watchPowerButton(ctx context.Context) {
	pressed := make(chan struct{}, 1)
	if cnt, err := power.Watch(ctx, n.log, pressed); err != nil {
		n.log.Warn("power button not watched", "err", err)
	} else {
		n.log.Info("watching for the power button", "devices", cnt)
	}
	n.goSafe(func() {
		for range pressed {
			n.shutdown <- request{PowerOff, "power button"}
		}
	})
}

// console is where PID 1 writes what the console shows.
func (n *Node) console() io.Writer {
	if n.out == nil {
		return os.Stdout
	}
	return n.out
}

// goSafe runs fn in a goroutine whose panic takes the shutdown path instead of killing PID 1.
func (n *Node) goSafe(fn func()) {
	go func() {
		defer func() {
			if r := recover(); r != nil {
				n.stop(request{Reboot, fmt.Sprintf("panic: %v\n%s", r, debug.Stack())})
			}
		}()
		fn()
	}()
}

func (n *Node) run(ctx context.Context) {
	// Signals first, so nothing that arrives during boot is lost. Busybox's conventions, so the
	// dev shell's reboot/poweroff/halt just work: TERM reboots, USR2 powers off, USR1 halts
	// (powers off); INT is ctrl-alt-del (the kernel sends it once CAD is off) and reboots.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2)
	n.goSafe(func() {
		for s := range sigs {
			switch s {
			case syscall.SIGTERM, syscall.SIGINT:
				n.shutdown <- request{Reboot, "signal " + s.String()}
			default:
				n.shutdown <- request{PowerOff, "signal " + s.String()}
			}
		}
	})

	// Boot runs beside the wait for a stop request: a boot that hangs (a runtime that never
	// answers) must not keep the power button, a signal, the node API or a failed image's health
	// gate from stopping the node.
	booted := make(chan error, 1)
	n.goSafe(func() { booted <- n.boot(ctx) })
	for {
		select {
		case err := <-booted:
			if err != nil {
				n.log.Error("boot failed", "err", err)
				n.stop(request{PowerOff, "boot failed"})
			}
			booted = nil
		case req := <-n.shutdown:
			n.stop(req)
		}
	}
}

func earlyPlan() boot.Plan {
	return boot.Plan{{Name: "kernel-filesystems", Steps: []boot.Step{
		boot.Mount{Source: "proc", Target: "/proc", FSType: "proc", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		boot.Mount{Source: "sysfs", Target: "/sys", FSType: "sysfs", Flags: unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC},
		boot.Mount{Source: "devtmpfs", Target: "/dev", FSType: "devtmpfs", Flags: unix.MS_NOSUID, Data: "mode=0755"},
	}}}
}

// Plan is the boot after the root has moved off the initramfs, as a node without a node config
// runs it. Boot runs it in two halves: basePlan up to reading the node config, then nodePlan
// with the profile as the node config changes it.
func (n *Node) Plan(p *profiles.Profile, modules []string) boot.Plan {
	return append(n.basePlan(p, modules, &nodeSettings{}), n.nodePlan(p, true)...)
}

// basePlan mounts what the node needs, the state partition last, then reads the node config into
// out.
func (n *Node) basePlan(p *profiles.Profile, modules []string, out *nodeSettings) boot.Plan {
	const nosuid, nodev, noexec = unix.MS_NOSUID, unix.MS_NODEV, unix.MS_NOEXEC
	plan := boot.Plan{
		{Name: "modules", Steps: []boot.Step{boot.Func{
			Name: "load " + strings.Join(modules, " "),
			Fn: func(ctx context.Context) error {
				if len(modules) == 0 {
					return nil
				}
				deps, err := kmod.ReadDeps(filepath.Join("/lib/modules", kernelRelease()))
				if err != nil {
					return err
				}
				_, err = deps.LoadAll(modules)
				return err
			}}}},
		// Optional: a driver that fails to load leaves its device unused, not the node down.
		{Name: "hardware", Optional: true, Steps: []boot.Step{boot.Func{
			Name: "load the drivers the machine's devices need",
			Fn:   n.coldplug,
		}}},
		{Name: "filesystems", Steps: []boot.Step{
			boot.Mount{Source: "cgroup2", Target: cgroup.Root, FSType: "cgroup2", Flags: nosuid | nodev | noexec, Data: "nsdelegate"},
			boot.Mount{Source: "tmpfs", Target: "/run", FSType: "tmpfs", Flags: nosuid | nodev, Data: "mode=0755"},
			boot.Mount{Source: "tmpfs", Target: "/tmp", FSType: "tmpfs", Flags: nosuid | nodev, Data: "mode=1777"},
			boot.Mount{Source: "devpts", Target: "/dev/pts", FSType: "devpts", Flags: nosuid | noexec, Data: "newinstance,ptmxmode=0666,mode=0620,gid=5"},
			boot.Mount{Source: "shm", Target: "/dev/shm", FSType: "tmpfs", Flags: nosuid | nodev, Data: "mode=1777"},
			boot.Mount{Source: "mqueue", Target: "/dev/mqueue", FSType: "mqueue", Flags: nosuid | nodev | noexec},
			boot.Symlink{Target: "pts/ptmx", Link: "/dev/ptmx"},
			boot.Symlink{Target: "/proc/self/fd", Link: "/dev/fd"},
			boot.Symlink{Target: "/proc/self/fd/0", Link: "/dev/stdin"},
			boot.Symlink{Target: "/proc/self/fd/1", Link: "/dev/stdout"},
			boot.Symlink{Target: "/proc/self/fd/2", Link: "/dev/stderr"},
		}},
		// Optional: Debian's cloud kernels build efivarfs as a module, and direct boots have no EFI.
		{Name: "firmware", Optional: true, Steps: []boot.Step{
			boot.Func{Name: "load efivarfs when booted by UEFI", Fn: loadEFIVarFS},
			boot.Mount{Source: "efivarfs", Target: "/sys/firmware/efi/efivars", FSType: "efivarfs", Flags: nosuid | nodev | noexec, IfExists: "/sys/firmware/efi/efivars"},
		}},
		// The LSMs' interface: the runtime reads which AppArmor profiles are loaded, and refuses a
		// pod's localhost/ profile it cannot find, from here. Optional: a kernel without securityfs.
		{Name: "securityfs", Optional: true, Steps: []boot.Step{
			boot.Mount{Source: "securityfs", Target: "/sys/kernel/security", FSType: "securityfs", Flags: nosuid | nodev | noexec, IfExists: "/sys/kernel/security"},
		}},
		{Name: "cgroups", Steps: []boot.Step{boot.Func{Name: "enable controllers, create " + cgroup.Services + " and " + cgroup.Pods,
			Fn: func(ctx context.Context) error {
				enabled, err := cgroup.Setup(cgroup.Root)
				n.log.Info("cgroup2 controllers enabled", "controllers", strings.Join(enabled, ","))
				return err
			}}}},
	}
	// Installer mode (a node booted from ingot.iso's install entry): the image goes onto the named
	// disk first, so the state partition below is the new disk's.
	// Optional: a failed install keeps the node up with the reason on the console (see boot).
	if steps := n.installSteps(); len(steps) > 0 {
		plan = append(plan, boot.Phase{Name: "install", Optional: true, Steps: steps})
	}
	plan = append(plan, boot.Plan{
		// /var holds the runtime's root (image layers, container upper dirs): nothing a container
		// writes there may act as a setuid binary or a device on the host.
		{Name: "state", Steps: []boot.Step{stateMount{n: n, Label: statedisk.Label, Target: "/var", Flags: nosuid | nodev | unix.MS_NOATIME}}},
		// After the state partition (the kept copy lives there), before sysctls, hostname and
		// network, which it changes. It never fails: a bad node config must not brick a node.
		{Name: "node-config", Steps: []boot.Step{readNodeConfig{log: n.log, reader: nodesource.System(),
			cmdline: procCmdline(), keptDir: nodesource.KeptDir, out: out}}},
	}...)
	return plan
}

// nodePlan applies the node's settings: p is the profile as the node config changed it.
// dhcpHostname lets a DHCP lease name the node (the node config did not).
func (n *Node) nodePlan(p *profiles.Profile, dhcpHostname bool) boot.Plan {
	var plan boot.Plan
	var sysctls []boot.Step
	for _, k := range slices.Sorted(maps.Keys(p.Sysctls)) {
		sysctls = append(sysctls, boot.Sysctl{Key: k, Value: p.Sysctls[k]})
	}
	plan = append(plan,
		boot.Phase{Name: "sysctls", Optional: true, Steps: sysctls},
		boot.Phase{Name: "identity", Steps: []boot.Step{boot.Func{Name: "machine-id kept in " + identity.KeptMachineID,
			Fn: func(context.Context) error {
				id, created, err := identity.MachineID(identity.KeptMachineID, "/etc/machine-id", nil)
				if err == nil {
					n.log.Info("machine-id", "id", id, "created", created)
				}
				return err
			}}}},
		boot.Phase{Name: "hostname", Steps: []boot.Step{
			boot.Hostname(p.Hostname),
			boot.WriteFile{Path: "/etc/hostname", Data: p.Hostname + "\n", Mode: 0o644},
			boot.WriteFile{Path: "/etc/hosts", Data: string(identity.Hosts(p.Hostname)), Mode: 0o644},
		}},
		// Optional: a link that fails to come up is reported, and the node still boots to a console
		// and a runtime rather than powering off over a network setting.
		boot.Phase{Name: "network", Optional: true, Steps: n.networkSteps(p, dhcpHostname)},
		boot.Phase{Name: "var-layout", Steps: []boot.Step{
			// The runtime's root: pods in a user namespace must walk (not list) the way to their
			// rootfs under it, as under containerd's 0711 root. /var/lib may have been made
			// 0700 by an earlier phase (the kept node config below it).
			boot.Dir{Path: "/var/lib", Mode: 0o755},
			boot.Dir{Path: "/var/lib/ingot", Mode: 0o711},
			boot.Dir{Path: "/var/log", Mode: 0o755},
			boot.Dir{Path: "/run/ingot", Mode: 0o700},
		}},
	)
	return plan
}

// stateMount mounts the state partition on Target. Without one the node still boots, on a tmpfs,
// and says so on the console: nothing written there survives a reboot. Flags apply to either.
type stateMount struct {
	n             *Node
	Label, Target string
	Flags         uintptr
}

func (m stateMount) String() string {
	return fmt.Sprintf("mount %s on %s (%s; a tmpfs without one)", m.Label, m.Target, boot.FlagString(m.Flags))
}

func (m stateMount) Do(ctx context.Context) error {
	res, err := statedisk.Prepare(ctx, statedisk.NodeTools, m.Label, m.Target, m.Flags, time.Second, func(r statedisk.Result) {
		m.n.log.Info("formatting the state partition", "device", r.Device, "found", r.Found.String(), "grown", r.Grown)
	})
	if c := res.Checked; c.Why != "" && !errors.Is(err, statedisk.ErrNotRepaired) { // else the error line says it all
		m.n.log.Info("state partition checked before mounting: "+c.Why, "device", res.Device, "e2fsck", "-p",
			"exit", c.Exit, "took", c.Took.Round(time.Millisecond), "said", c.Output)
	}
	if res.GrowErr != nil {
		m.n.log.Warn("state partition not grown to the end of its disk", "device", res.Device, "err", res.GrowErr)
	}
	if res.ResizeErr != nil {
		m.n.log.Warn("state filesystem not grown to fill its partition", "device", res.Device, "err", res.ResizeErr)
	}
	if err == nil {
		attrs := []any{"on", m.Target, "device", res.Device, "found", res.Found.String()}
		if res.Formatted {
			attrs = append(attrs, "formatted", true, "format_took", res.FormatTook.Round(time.Millisecond))
		}
		if res.Grown {
			attrs = append(attrs, "grown_to_mib", res.Size>>20)
		}
		if res.Resized {
			attrs = append(attrs, "filesystem_grown", true)
		}
		m.n.log.Info("state partition mounted", attrs...)
		m.n.goSafe(func() { m.n.trimState(ctx, m.Target) })
		return nil
	}
	if errors.Is(err, statedisk.ErrNotRepaired) {
		m.n.log.Error("state partition left untouched and not mounted: it needs an operator's e2fsck (README: a damaged state partition); "+
			m.Target+" is a tmpfs and will not survive a reboot", "device", res.Device, "err", err)
	} else {
		m.n.log.Warn("no usable state partition; "+m.Target+" is a tmpfs and will not survive a reboot", "err", err)
	}
	if err := unix.Mount("tmpfs", m.Target, "tmpfs", m.Flags, "mode=0755"); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", m.Target, err)
	}
	return nil
}

// When the node trims the state partition (statedisk.MountOptions says why not online discard):
// an hour after boot, once the first pulls are done, then weekly, as Debian's fstrim.timer does.
const (
	firstTrim = time.Hour
	trimEvery = 7 * 24 * time.Hour
)

// trimState trims the filesystem mounted at dir now and then, and stops for good on a disk
// without discard support.
func (n *Node) trimState(ctx context.Context, dir string) {
	wait := firstTrim
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = trimEvery
		start := time.Now()
		trimmed, err := statedisk.Trim(dir)
		if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTSUP) {
			n.log.Info("the state partition's disk does not support discard; not trimming it", "on", dir)
			return
		}
		if err != nil {
			n.log.Warn("trim the state partition", "err", err)
			continue
		}
		n.log.Info("state partition trimmed", "on", dir, "mib", trimmed>>20, "took", time.Since(start).Round(time.Millisecond))
	}
}

func (n *Node) boot(ctx context.Context) error {
	if err := earlyPlan().Run(ctx, nil); err != nil {
		return err
	}
	if n.out != nil {
		names, err := n.out.Attach("/sys/class/tty/console/active", "/dev")
		if err != nil {
			n.log.Warn("console", "err", err)
		}
		if len(names) > 1 {
			n.log.Info("consoles", "to", strings.Join(names, " "))
		}
	}
	onInitramfs, err := rootfs.OnInitramfs("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	if onInitramfs && os.Getenv(switchedEnv) == "" {
		n.log.Info("mounting the root filesystem", "image", rootfs.Image, "on", newRoot)
		if err := loadEarlyModules(); err != nil {
			return fmt.Errorf("root filesystem %s: %w", rootfs.Image, err)
		}
		if err := rootfs.Switch(rootfs.Image, newRoot); err != nil {
			return err
		}
		exe := rootfs.Init
		env := append(os.Environ(), switchedEnv+"=1")
		return fmt.Errorf("re-exec %s after switching root: %w", exe, unix.Exec(exe, os.Args, env))
	}
	// The kernel turns ctrl-alt-del into SIGINT for PID 1 instead of an immediate reboot.
	unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)

	data, err := os.ReadFile(ProfilePath)
	if err != nil {
		return fmt.Errorf("read profile: %w", err)
	}
	prof, err := profiles.Parse(ProfilePath, data)
	if err != nil {
		return err
	}
	modules := readLines(ModulesLoad)
	obs := func(phase string, took time.Duration, err error) {
		if err != nil {
			n.log.Warn("boot phase failed", "phase", phase, "took", took.Round(time.Microsecond), "err", err)
			return
		}
		n.log.Info("boot phase done", "phase", phase, "took", took.Round(time.Microsecond))
	}
	n.node = &nodeSettings{}
	if err := n.basePlan(prof, modules, n.node).Run(ctx, obs); err != nil {
		return err
	}
	if n.installed == "" && n.installErr == nil {
		n.installFromNodeConfig(ctx)
	}
	if n.installErr != nil {
		// Powering off would take the reason off a screen; nothing else starts but the power
		// button.
		n.log.Error("install failed; the node stays up, running nothing, so this can be read: fix it and reboot", "err", n.installErr)
		n.watchPowerButton(ctx)
		return nil
	}
	if n.installed != "" {
		// The new disk has its state partition formatted and the node config kept: boot it.
		n.log.Info("rebooting into the installed image", "disk", n.installed)
		n.bootInstalled(n.installed)
		n.shutdown <- request{Reboot, "installed onto " + n.installed}
		return nil
	}
	prof = n.node.effective(prof)
	if err := n.nodePlan(prof, !n.node.namesNode()).Run(ctx, obs); err != nil {
		return err
	}

	n.watchPowerButton(ctx)

	if err := raiseOpenFiles(); err != nil {
		n.log.Warn("services keep the default descriptor limit", "err", err)
	}
	sup := supervise.New(n.log, n.console(), supervise.WithLogDir(ServiceLogDir))
	n.mu.Lock()
	n.sup = sup
	n.mu.Unlock()
	n.goSafe(func() { n.sup.Run(ctx) })
	if prof.Runtime.Enabled {
		if _, err := n.sup.Start(ctx, runtimeSpec(prof.Runtime.Echo)); err != nil {
			return fmt.Errorf("start the CRI runtime: %w", err)
		}
	}
	n.startAPI()
	tty := consoleTTY()
	for _, s := range prof.Services {
		spec, err := serviceSpec(s, tty)
		if err != nil {
			return err
		}
		if _, err := n.sup.Start(ctx, spec); err != nil {
			return fmt.Errorf("start service %s: %w", s.Name, err)
		}
	}
	// After the services start, so the health gate of a slot on trial sees them come up.
	n.checkUpgrade(ctx, prof)
	if prof.Runtime.Enabled {
		// Ready means the runtime answers: the kubelet and tests can use it from here on.
		n.waitRuntime(ctx, RuntimeSocket)
	}
	if prof.Kubelet.Enabled {
		// A kubelet that cannot start is one console line; the node and its runtime stay up.
		if err := n.startKubelet(ctx, prof); err != nil {
			n.log.Error("kubelet not started", "err", err)
		}
	}
	fmt.Fprintf(n.console(), "ingot: node ready t=%d\n", console.SinceBoot().Milliseconds())
	return nil
}

// coldplug loads the image's drivers for every device the machine has (hw.Coldplug), then keeps
// doing it for devices that appear later (hw.Hotplug) while the node runs.
func (n *Node) coldplug(ctx context.Context) error {
	deps, m, err := hw.Open(filepath.Join("/lib/modules", kernelRelease()))
	if err != nil {
		return err
	}
	l := &hw.Loader{Deps: deps, Load: kmod.Load}
	res, err := hw.Coldplug(ctx, "/sys", m, l)
	for _, e := range res.Errs {
		n.log.Warn("hardware: a driver did not load; its device stays unused", "err", e)
	}
	if err != nil {
		return err
	}
	n.log.Info("hardware: devices matched against the image's drivers", "devices", res.Devices, "loaded", strings.Join(res.Loaded, ","), "scans", res.Rounds)
	n.goSafe(func() {
		err := hw.Hotplug(ctx, m, l, func(modalias, module string, err error) {
			if err != nil {
				n.log.Warn("hardware: a new device's driver did not load", "modalias", modalias, "module", module, "err", err)
				return
			}
			n.log.Info("hardware: driver loaded for a new device", "modalias", modalias, "module", module)
		})
		if err != nil {
			n.log.Warn("hardware: devices added from now on get no driver", "err", err)
		}
	})
	return nil
}

// loadEFIVarFS loads efivarfs, which the image ships but does not list in modules.load: it is
// needed only with UEFI firmware, and refuses to load without.
func loadEFIVarFS(ctx context.Context) error {
	if _, err := os.Stat("/sys/firmware/efi"); err != nil {
		return nil
	}
	deps, err := kmod.ReadDeps(filepath.Join("/lib/modules", kernelRelease()))
	if err != nil {
		return err
	}
	if !deps.Has("efivarfs") {
		return nil // built in, or a kernel without it
	}
	_, err = deps.LoadAll([]string{"efivarfs"})
	return err
}

// loadEarlyModules loads what mounting the root filesystem needs (loop, squashfs), listed in
// the initramfs next to it; none when the kernel has them built in.
func loadEarlyModules() error {
	mods := readLines(rootfs.Modules)
	if len(mods) == 0 {
		return nil
	}
	deps, err := kmod.ReadDeps(filepath.Join("/lib/modules", kernelRelease()))
	if err != nil {
		return err
	}
	_, err = deps.LoadAll(mods)
	return err
}

func serviceSpec(s profiles.Service, tty string) (supervise.Spec, error) {
	pol, err := supervise.ParsePolicy(s.Restart)
	if err != nil {
		return supervise.Spec{}, fmt.Errorf("service %s: %w", s.Name, err)
	}
	spec := supervise.Spec{
		Name:      s.Name,
		Path:      s.Command[0],
		Args:      s.Command[1:],
		Env:       s.Env,
		Dir:       "/",
		Restart:   pol,
		Echo:      s.Echo,
		CgroupDir: filepath.Join(cgroup.Root, cgroup.Services, s.Name),
	}
	if s.Console {
		spec.Console = tty
	}
	return spec, nil
}

// consoleTTY is the device behind /dev/console: a shell needs the real tty to get job control.
func consoleTTY() string {
	data, err := os.ReadFile("/sys/class/tty/console/active")
	if err != nil {
		return "/dev/console"
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return "/dev/console"
	}
	return "/dev/" + f[len(f)-1]
}

// stop is the one fatal path: stop services, sync, unmount, power off or reboot. It never returns.
func (n *Node) stop(req request) {
	n.once.Do(func() {
		n.log.Info("shutting down", "action", req.action.String(), "reason", req.reason)
		n.mu.Lock()
		sup := n.sup
		n.mu.Unlock()
		if sup != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			if err := sup.Stop(ctx, 10*time.Second); err != nil {
				n.log.Warn("stopping services", "err", err)
			}
			cancel()
		}
		n.saveClock()
		unix.Sync()
		unmountAll(n.log)
		unix.Sync()
		cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
		if req.action == Reboot {
			cmd = unix.LINUX_REBOOT_CMD_RESTART
		}
		n.log.Info(req.action.String())
		if err := unix.Reboot(cmd); err != nil {
			n.log.Error("reboot(2) failed; halting here", "err", err)
		}
	})
	// Never return: returning from PID 1 panics the kernel.
	select {}
}

// unmountAll unmounts every disk-backed filesystem, innermost first; one still busy is remounted
// read-only so nothing is lost at power off.
func unmountAll(log *slog.Logger) {
	data, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		log.Warn("read mounts", "err", err)
		return
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		f := strings.Fields(lines[i])
		if len(f) < 3 || !strings.HasPrefix(f[0], "/dev/") || f[1] == "/" {
			continue
		}
		target := unescape(f[1])
		if err := unix.Unmount(target, 0); err != nil {
			if rerr := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); rerr != nil {
				log.Warn("cannot unmount or remount read-only", "target", target, "err", err, "remount", rerr)
				continue
			}
			log.Warn("busy; remounted read-only", "target", target)
			continue
		}
		log.Info("unmounted", "target", target, "device", f[0])
	}
}

// unescape decodes the octal escapes /proc/self/mounts uses for spaces and tabs.
func unescape(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

func readLines(path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}
