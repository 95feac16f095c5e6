// Command ingot is the host-side tool: it builds node images, boots them under QEMU and manages
// profiles. It is pure Go (CGO_ENABLED=0) and stays thin: flags here, work in the packages.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"ingot.dev/ingot/image/arch"
	"ingot.dev/ingot/image/build"
	"ingot.dev/ingot/image/configdrive"
	"ingot.dev/ingot/image/debpkg"
	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/profiles"
	"ingot.dev/ingot/qemu"
	"ingot.dev/ingot/runtime/config"
)

const usage = `usage: ingot <command> [flags]

commands:
  build     build a node image        ingot build --profile dev --arch amd64 --out out/dev-amd64
  qemu      boot an image under QEMU  ingot qemu --image out/dev-amd64 --console
  profiles  list | show NAME | validate FILE
  config    validate FILE: check a containerd config.toml (version 2 or 3) and print its warnings
  node-config  validate FILE: check a node.toml (per-node settings)
            drive FILE --out IMG [--format vfat|iso]: write a config drive holding it
  cluster   up | down: a Kubernetes control plane on 127.0.0.1 for worker VMs to join
  pki       init | node NAME --ip A | client NAME --role admin|reader | node-toml NAME:
            the node API's CA and certificates
  ctl       status, logs, dmesg, images, pull, containers, reboot, … on a node through its API
            ingot ctl --node 10.0.0.5 --pki pki status
  fetch     download Debian packages for an arch into the cache and unpack them into a directory
            (used by make deps for the arm64 libseccomp sysroot)

Run 'ingot <command> -h' for a command's flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "build":
		err = cmdBuild(ctx, os.Args[2:])
	case "qemu":
		err = cmdQEMU(os.Args[2:])
	case "profiles":
		err = cmdProfiles(os.Args[2:])
	case "fetch":
		err = cmdFetch(ctx, os.Args[2:])
	case "config":
		err = cmdConfig(os.Args[2:])
	case "node-config":
		err = cmdNodeConfig(os.Args[2:])
	case "cluster":
		err = cmdCluster(ctx, os.Args[2:])
	case "pki":
		err = cmdPKI(os.Args[2:])
	case "ctl":
		err = cmdCtl(ctx, os.Args[2:])
	case "help", "-h", "--help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "ingot: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "ingot: %v\n", err)
		os.Exit(1)
	}
}

// nodeBinary is bin/ingot-node-<arch> beside this executable.
func nodeBinary(a string) string {
	exe, err := os.Executable()
	if err != nil {
		return "ingot-node-" + a
	}
	return filepath.Join(filepath.Dir(exe), "ingot-node-"+a)
}

func loadProfile(nameOrPath string) (*profiles.Profile, []byte, error) {
	if p, raw, err := profiles.Builtin(nameOrPath); err == nil {
		return p, raw, nil
	}
	raw, err := os.ReadFile(nameOrPath)
	if err != nil {
		return nil, nil, fmt.Errorf("profile %q is neither a built-in (%v) nor a readable file: %w", nameOrPath, profiles.Names(), err)
	}
	p, err := profiles.Parse(nameOrPath, raw)
	if err != nil {
		return nil, nil, err
	}
	warnRuntimeConfig(p)
	return p, raw, nil
}

// warnRuntimeConfig prints the warnings of a profile's embedded config.toml (its errors already
// failed the profile): keys ingot accepts but gives no meaning, and keys it does not know.
func warnRuntimeConfig(p *profiles.Profile) {
	if p.Runtime.Config == "" {
		return
	}
	_, warnings, _ := config.Parse(p.Name+": runtime.config", []byte(p.Runtime.Config))
	for _, w := range warnings {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	}
}

func cmdBuild(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ingot build", flag.ContinueOnError)
	profile := fs.String("profile", "dev", "built-in profile name or profile file")
	archName := fs.String("arch", arch.Host(), "target architecture: amd64 or arm64")
	out := fs.String("out", "", "output directory (default out/<profile>-<arch>)")
	kernelPath := fs.String("kernel", "", "kernel to use instead of the profile's Debian package: a .deb, an unpacked package directory, or a vmlinuz file")
	modules := fs.String("modules", "", "with --kernel FILE: the lib/modules/<release> directory")
	node := fs.String("node", "", "ingot-node binary for the target (default bin/ingot-node-<arch> beside ingot)")
	cache := fs.String("cache", cachedir.Default(), "cache directory for downloaded packages")
	version := fs.String("version", "0", "the image's version string (os-release VERSION_ID; ingot ctl status shows it)")
	qcow := fs.Bool("qcow2", false, "also write disk.qcow2, the disk image as QCOW2 (clouds, libvirt)")
	isoOut := fs.Bool("iso", false, "also write ingot.iso, a hybrid ISO booting under UEFI from a CD or USB stick (and disk.qcow2, which it carries)")
	installDisk := fs.String("install-disk", "", "with --iso: the ISO's default boot entry installs the image onto this disk (e.g. /dev/nvme0n1)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("build: unexpected argument %q", fs.Arg(0))
	}
	if _, err := arch.Lookup(*archName); err != nil {
		return err
	}
	if *installDisk != "" && !*isoOut {
		return errors.New("build: --install-disk is for the ISO's installer; add --iso")
	}
	p, raw, err := loadProfile(*profile)
	if err != nil {
		return err
	}
	if *out == "" {
		*out = filepath.Join("out", p.Name+"-"+*archName)
	}
	if *node == "" {
		*node = nodeBinary(*archName)
	}
	m, err := build.Run(ctx, build.Options{
		Profile: p, ProfileTOML: raw, Arch: *archName, Out: *out, Cache: *cache, NodeBinary: *node,
		Kernel: *kernelPath, KernelModules: *modules, SourceDateEpoch: sourceDateEpoch(), Version: *version,
		QCOW2: *qcow, ISO: *isoOut, InstallDisk: *installDisk, Progress: newProgress(os.Stderr),
	})
	if err != nil {
		return err
	}
	fmt.Printf("built %s %s for %s (kernel %s) in %s\n", m.Profile, m.Version, m.Arch, m.KernelRelease, *out)
	for _, o := range m.Outputs {
		fmt.Printf("  %-20s %10d bytes  sha256:%s\n", o.Name, o.Size, o.SHA256[:16])
	}
	return nil
}

func cmdQEMU(args []string) error {
	fs := flag.NewFlagSet("ingot qemu", flag.ContinueOnError)
	image := fs.String("image", "", "image directory written by ingot build (required)")
	archName := fs.String("arch", "", "expected architecture (default: the image's)")
	boot := fs.String("boot", qemu.BootDirect, "boot path: direct (kernel + initramfs), uefi (firmware, systemd-boot, disk) or pxe (firmware, the UKI over QEMU's TFTP server)")
	pxe := fs.Bool("pxe", false, "boot over the network, as --boot pxe, with no disk unless --disk-size asks for an empty one")
	console := fs.Bool("console", false, "attach the serial console to this terminal (Ctrl-A c: QEMU monitor, Ctrl-A x: quit)")
	fresh := fs.Bool("fresh", false, "start from a fresh copy of disk.raw (forget the node's state)")
	mem := fs.Int("memory", 1024, "guest memory in MiB")
	diskSize := fs.String("disk-size", "", "grow a new working disk (first run or --fresh) to SIZE (e.g. 2G); the node grows its state partition into it")
	nodeConfig := fs.String("node-config", "", "give the node this node.toml")
	via := fs.String("node-config-via", "fw_cfg", "how --node-config reaches the node: fw_cfg (opt/ingot/node.toml) or drive (a vfat config drive labelled INGOT-CONFIG, written to DIR/run/config.img)")
	netMode := fs.String("net", qemu.NetRestricted, "guest network: restricted (reaches nothing but forwarded ports) or user (QEMU NAT to wherever the host reaches)")
	var forwards forwardFlag
	fs.Var(&forwards, "forward", "forward TCP HOSTPORT on 127.0.0.1 to GUESTPORT on the node (repeatable)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: ingot qemu --image DIR [flags]

Boots the image with a working copy of its disk (DIR/run/disk.raw, kept across runs so /var
persists). Power: SIGTERM or SIGINT to this process (Ctrl-C when the console is not attached)
sends system_powerdown, the ACPI power button; the node stops its services and powers off. With
--console, press Ctrl-A c and type system_powerdown at the (qemu) prompt.

`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *image == "" {
		return errors.New("qemu: --image is required")
	}
	m, err := manifest.Read(*image)
	if err != nil {
		return err
	}
	if *archName != "" && *archName != m.Arch {
		return fmt.Errorf("qemu: image %s is for %s, not %s", *image, m.Arch, *archName)
	}
	run := filepath.Join(*image, "run")
	if err := os.MkdirAll(run, 0o755); err != nil {
		return err
	}
	var size int64
	if *diskSize != "" {
		if size, err = qemu.ParseSize(*diskSize); err != nil {
			return fmt.Errorf("qemu: --disk-size: %w", err)
		}
	}
	if *pxe {
		*boot = qemu.BootPXE
	}
	if strings.Contains(*image, ",") && *boot == qemu.BootPXE {
		return fmt.Errorf("qemu: image directory %q: QEMU's TFTP option cannot name a path with a comma", *image)
	}
	disk := filepath.Join(run, manifest.FileDisk)
	switch {
	case *boot == qemu.BootPXE && size == 0:
		disk = "" // a diskless machine: /var lives in memory
	case *boot == qemu.BootPXE:
		// An empty disk of that size: the node formats nothing on a disk without a state
		// partition, so this is only for trying an installer or a later write.
		disk = filepath.Join(run, "pxe-disk.raw")
		if err := qemu.EmptyDisk(disk, size, *fresh); err != nil {
			return fmt.Errorf("qemu: %w", err)
		}
	default:
		if _, err := os.Stat(disk); err == nil && !*fresh && size != 0 {
			fmt.Fprintf(os.Stderr, "ingot: --disk-size applies to a new working disk; %s is kept as it is (add --fresh to start over)\n", disk)
		}
		if err := qemu.WorkingDisk(filepath.Join(*image, manifest.FileDisk), disk, *fresh, size); err != nil {
			return fmt.Errorf("qemu: %w", err)
		}
	}
	cfg := qemu.Config{Image: *image, Boot: *boot, Disk: disk, Memory: *mem, RunDir: run, Interactive: *console,
		Net: *netMode, HostFwd: forwards}
	if *nodeConfig != "" {
		if err := attachNodeConfig(&cfg, *nodeConfig, *via); err != nil {
			return err
		}
	}
	if !*console {
		cfg.Tee = os.Stdout
	}
	// The signal handler below presses the power button instead of killing QEMU.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	vm, err := qemu.Start(context.Background(), cfg)
	if err != nil {
		return err
	}
	go func() {
		for range sigs {
			fmt.Fprintln(os.Stderr, "\ningot: sending system_powerdown")
			if err := vm.Powerdown(); err != nil {
				fmt.Fprintf(os.Stderr, "ingot: %v\n", err)
			}
		}
	}()
	return vm.Wait()
}

// attachNodeConfig hands the node file as its node.toml: by fw_cfg, or on a config drive written
// into the VM's run directory (rewritten on every run, so it always holds the file as it is now).
func attachNodeConfig(cfg *qemu.Config, file, via string) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("qemu: --node-config: %w", err)
	}
	switch via {
	case "fw_cfg":
		abs, err := filepath.Abs(file)
		if err != nil {
			return fmt.Errorf("qemu: --node-config: %w", err)
		}
		cfg.FwCfg = map[string]string{"opt/ingot/node.toml": abs}
	case "drive":
		img := filepath.Join(cfg.RunDir, "config.img")
		if err := configdrive.Write(img, configdrive.VFAT, raw, sourceDateEpoch()); err != nil {
			return fmt.Errorf("qemu: --node-config: %w", err)
		}
		cfg.Drives = append(cfg.Drives, img)
	default:
		return fmt.Errorf("qemu: --node-config-via %q: want fw_cfg or drive", via)
	}
	return nil
}

// forwardFlag collects --forward HOSTPORT:GUESTPORT as QEMU hostfwd rules.
type forwardFlag []string

func (f *forwardFlag) String() string { return fmt.Sprint(*f) }

func (f *forwardFlag) Set(s string) error {
	rule, err := qemu.ParseForward(s)
	if err != nil {
		return err
	}
	*f = append(*f, rule)
	return nil
}

func cmdProfiles(args []string) error {
	if len(args) == 0 {
		return errors.New("profiles: want list, show NAME or validate FILE")
	}
	switch args[0] {
	case "list":
		for _, n := range profiles.Names() {
			p, _, err := profiles.Builtin(n)
			if err != nil {
				return err
			}
			fmt.Printf("%-10s %s\n", n, p.Description)
		}
		return nil
	case "show":
		if len(args) != 2 {
			return errors.New("profiles show: want one profile name")
		}
		_, raw, err := profiles.Builtin(args[1])
		if err != nil {
			return fmt.Errorf("profiles show: no built-in profile %q (have %v)", args[1], profiles.Names())
		}
		os.Stdout.Write(raw)
		return nil
	case "validate":
		if len(args) != 2 {
			return errors.New("profiles validate: want one file")
		}
		raw, err := os.ReadFile(args[1])
		if err != nil {
			return err
		}
		p, err := profiles.Parse(args[1], raw)
		if err != nil {
			return err
		}
		warnRuntimeConfig(p)
		fmt.Printf("%s: ok (profile %s)\n", args[1], p.Name)
		return nil
	}
	return fmt.Errorf("profiles: unknown subcommand %q (want list, show or validate)", args[0])
}

func cmdFetch(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ingot fetch", flag.ContinueOnError)
	archName := fs.String("arch", arch.Host(), "Debian architecture")
	into := fs.String("into", "", "directory to unpack the packages into (required)")
	cache := fs.String("cache", cachedir.Default(), "cache directory")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *into == "" || fs.NArg() == 0 {
		return errors.New("fetch: usage: ingot fetch --arch A --into DIR PACKAGE...")
	}
	f := &debpkg.Fetcher{Cache: *cache, Arch: *archName}
	for _, name := range fs.Args() {
		p, err := f.Fetch(ctx, name)
		if err != nil {
			return err
		}
		if err := debpkg.ExtractInto(ctx, p, *into); err != nil {
			return err
		}
		fmt.Printf("%s %s (%s) unpacked into %s\n", p.Name, p.Version, p.Arch, *into)
	}
	return nil
}
