// Package build is the image pipeline behind `ingot build`: it gathers the inputs (kernel, EFI
// stub and boot manager, bundles, the node binary, the profile), assembles the root filesystem,
// and writes the outputs: vmlinuz and initramfs.cpio.zst for direct boot, the UKI ingot.efi,
// disk.raw with systemd-boot and slot A, and manifest.json describing every input and output.
// Every output is written to a temporary file and renamed, and carries no timestamps, so the
// same inputs give the same bytes.
package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"ingot.dev/ingot/image/arch"
	"ingot.dev/ingot/image/bundle"
	"ingot.dev/ingot/image/debpkg"
	"ingot.dev/ingot/image/disk"
	"ingot.dev/ingot/image/e2fsprogs"
	"ingot.dev/ingot/image/initramfs"
	"ingot.dev/ingot/image/iso"
	"ingot.dev/ingot/image/kernel"
	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/image/qcow2"
	"ingot.dev/ingot/image/squashfs"
	"ingot.dev/ingot/image/uki"
	"ingot.dev/ingot/init/statedisk"
	"ingot.dev/ingot/profiles"
)

// Options are the inputs of one build.
type Options struct {
	Profile     *profiles.Profile
	ProfileTOML []byte // the profile's text, placed in the image for init to read
	Arch        string
	Out         string // output directory
	Cache       string // ingot's cache root
	NodeBinary  string // the static ingot-node for Arch
	// Kernel overrides the profile's Debian kernel package: a .deb, a directory laid out like an
	// unpacked package, or a vmlinuz file (then KernelModules names lib/modules/<release>).
	Kernel        string
	KernelModules string
	// SourceDateEpoch is the mtime of every file in the image.
	SourceDateEpoch int64
	// Version is the image's version string (os-release VERSION_ID, the manifest's version,
	// what `ingot ctl status` shows): lowercase letters, digits, '.', '_' and '-'. Empty is "0".
	Version string
	// QCOW2 writes disk.qcow2 too: disk.raw as a QCOW2 image, for clouds and libvirt.
	QCOW2 bool
	// ISO writes ingot.iso (and disk.qcow2, which it carries): a hybrid ISO booting under UEFI
	// from a CD or a USB stick, as a live node or, given a target disk, as an installer.
	ISO bool
	// InstallDisk, with ISO, makes the ISO's default boot entry install the image onto this disk
	// (ingot.install= on the kernel command line), e.g. /dev/nvme0n1.
	InstallDisk string
	Progress    Progress
	Fetcher     func(arch string) *debpkg.Fetcher
}

// versions are what an image's version may be: an os-release VERSION_ID.
var versions = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Progress is told about each step.
type Progress interface {
	Step(i, n int, what string)
	Done()
}

// ESP layout. Slot A holds the built image; slot B is empty until an upgrade writes it.
const (
	SlotAPath  = "EFI/ingot/slot-a.efi"
	SlotBPath  = "EFI/ingot/slot-b.efi"
	EntryAPath = "loader/entries/ingot-a.conf"
)

type job struct {
	buildID   string // the image's build id, once the root filesystem is laid out
	o         Options
	a         arch.Arch
	fetch     *debpkg.Fetcher
	inputs    []manifest.Input
	fw        []manifest.Firmware // shipped firmware files
	fwMissing []string            // firmware files modules name that no package holds
	step      int
	maxSteps  int
}

func (j *job) progress(what string) {
	j.step++
	if j.o.Progress != nil {
		j.o.Progress.Step(j.step, j.maxSteps, what)
	}
}

// Run builds the image and returns its manifest.
func Run(ctx context.Context, o Options) (*manifest.Manifest, error) {
	a, err := arch.Lookup(o.Arch)
	if err != nil {
		return nil, err
	}
	if o.Profile == nil {
		return nil, fmt.Errorf("build: no profile")
	}
	if o.Version == "" {
		o.Version = "0"
	}
	if !versions.MatchString(o.Version) {
		return nil, fmt.Errorf("build: version %q: want 1-64 lowercase letters, digits, '.', '_' and '-', starting with a letter or digit (os-release VERSION_ID)", o.Version)
	}
	j := &job{o: o, a: a, maxSteps: 8}
	if o.Fetcher != nil {
		j.fetch = o.Fetcher(a.Name)
	} else {
		j.fetch = &debpkg.Fetcher{Cache: o.Cache, Arch: a.Name}
	}
	if o.Progress != nil {
		defer o.Progress.Done()
	}

	j.progress("checking the node binary")
	node, err := os.ReadFile(o.NodeBinary)
	if err != nil {
		return nil, fmt.Errorf("node binary for %s: %w (run make build)", a.Name, err)
	}
	j.addInput("ingot-node", "", node)
	j.addInput("profile:"+o.Profile.Name, "", o.ProfileTOML)

	j.progress("fetching the kernel")
	k, err := j.kernel(ctx)
	if err != nil {
		return nil, err
	}
	mods, err := k.Closure(o.Profile.Kernel.Modules)
	if err != nil {
		return nil, fmt.Errorf("profile %s: %w", o.Profile.Name, err)
	}
	// Shipped beside the profile's modules, loaded by PID 1 only when it finds UEFI firmware (on
	// a direct boot efivarfs refuses to load): the node reads and sets systemd-boot's variables
	// through it. A kernel without it (or with it built in) ships nothing more.
	if all, err := k.Closure(append(slices.Clone(o.Profile.Kernel.Modules), firmwareModules()...)); err == nil {
		mods = all
	}
	// The state partition's filesystem: built into the cloud kernels, a module in the generic ones.
	if all, err := k.Closure(append(moduleNames(mods), stateModules(k)...)); err == nil {
		mods = all
	}
	// The module sets: shipped when the kernel has them, loaded by PID 1 for the devices it finds.
	if sets := setModules(o.Profile, k); len(sets) > 0 {
		all, err := k.Closure(append(moduleNames(mods), sets...))
		if err != nil {
			return nil, fmt.Errorf("profile %s: module sets: %w", o.Profile.Name, err)
		}
		mods = all
	}

	j.progress("fetching systemd-boot")
	stub, bootEFI, err := j.systemdBoot(ctx)
	if err != nil {
		return nil, err
	}

	j.progress("assembling the root filesystem")
	sqfsTool, sqfsVersion, err := squashfs.Version(ctx)
	if err != nil {
		return nil, err
	}
	sqfsBin, err := os.ReadFile(sqfsTool)
	if err != nil {
		return nil, fmt.Errorf("root filesystem: %w", err)
	}
	j.addInput(squashfs.Tool, sqfsVersion, sqfsBin)
	tree, modNames, err := j.rootfs(ctx, k, mods)
	if err != nil {
		return nil, err
	}
	root, err := squashfs.Write(ctx, tree, o.SourceDateEpoch)
	if err != nil {
		return nil, fmt.Errorf("root filesystem: %w", err)
	}
	early, err := j.initramfs(node, k, root)
	if err != nil {
		return nil, err
	}
	initrd, err := early.Compressed(o.SourceDateEpoch)
	if err != nil {
		return nil, err
	}
	vmlinuz, err := os.ReadFile(k.Image)
	if err != nil {
		return nil, fmt.Errorf("kernel image: %w", err)
	}
	// loglevel=4: the kernel's informational chatter on a 115200-baud serial console costs boot
	// time under emulation; warnings and panics still show.
	// Every console the profile names gets console=; the kernel makes the last /dev/console.
	var args []string
	for _, c := range o.Profile.Kernel.ConsoleDevices(a.Console) {
		args = append(args, "console="+c)
	}
	cmdline := strings.Join(append(append(args, "loglevel=4"), o.Profile.Kernel.Cmdline...), " ")

	if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, fmt.Errorf("create output directory: %w", err)
	}
	rootSum := sha256.Sum256(root)
	m := &manifest.Manifest{Profile: o.Profile.Name, Version: o.Version, BuildID: j.buildID, Arch: a.Name, KernelRelease: k.Release, Cmdline: cmdline,
		Modules: modNames, SourceDateEpoch: o.SourceDateEpoch, Firmware: j.fw, FirmwareMissing: j.fwMissing,
		RootFS: &manifest.Output{Name: RootFSPath, Size: int64(len(root)), SHA256: hex.EncodeToString(rootSum[:])}}

	j.progress("writing kernel and initramfs")
	for _, f := range []struct {
		name string
		data []byte
	}{{manifest.FileKernel, vmlinuz}, {manifest.FileInitramfs, initrd}} {
		if err := writeAtomic(filepath.Join(o.Out, f.name), f.data); err != nil {
			return nil, err
		}
	}

	j.progress("assembling the UKI")
	efi, err := j.writeUKI(stub, cmdline, k.Release, vmlinuz, initrd)
	if err != nil {
		return nil, err
	}

	j.progress("writing the disk image")
	if err := j.writeDisk(bootEFI, efi); err != nil {
		return nil, err
	}
	// A disk.qcow2 from an earlier build here would not be this image's.
	qcowPath := filepath.Join(o.Out, manifest.FileQCOW2)
	if err := os.Remove(qcowPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove the old %s: %w", qcowPath, err)
	}
	if o.QCOW2 || o.ISO {
		if err := qcow2.Write(qcowPath, filepath.Join(o.Out, manifest.FileDisk)); err != nil {
			return nil, err
		}
	}
	isoPath := filepath.Join(o.Out, manifest.FileISO)
	if err := os.Remove(isoPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove the old %s: %w", isoPath, err)
	}
	if o.ISO {
		j.progress("writing the ISO")
		if err := j.writeISO(bootEFI, efi, cmdline); err != nil {
			return nil, err
		}
	}

	j.progress("writing the manifest")
	if err := j.writeManifest(m); err != nil {
		return nil, err
	}
	return m, nil
}

// systemdBoot returns the EFI stub a UKI is built on and the systemd-boot boot manager, from
// Debian's systemd-boot-efi for the target arch.
func (j *job) systemdBoot(ctx context.Context) (stub, bootEFI []byte, err error) {
	root, err := j.deb(ctx, "systemd-boot-efi")
	if err != nil {
		return nil, nil, err
	}
	if stub, err = os.ReadFile(filepath.Join(root, j.a.EFIStub)); err != nil {
		return nil, nil, fmt.Errorf("EFI stub: %w", err)
	}
	if bootEFI, err = os.ReadFile(filepath.Join(root, j.a.EFIBoot)); err != nil {
		return nil, nil, fmt.Errorf("systemd-boot: %w", err)
	}
	return stub, bootEFI, nil
}

// writeUKI assembles the unified kernel image (stub, os-release, command line, kernel and
// initramfs) and writes it to the output directory.
func (j *job) writeUKI(stub []byte, cmdline, release string, vmlinuz, initrd []byte) ([]byte, error) {
	o := j.o
	osrel := uki.OSRelease(map[string]string{
		"ID": "ingot", "NAME": "ingot", "PRETTY_NAME": "ingot (" + o.Profile.Name + ", " + release + ")",
		"IMAGE_ID": o.Profile.Name,
	})
	efi, err := uki.Assemble(stub, []uki.Section{
		{Name: ".osrel", Data: osrel},
		{Name: ".cmdline", Data: []byte(cmdline)},
		{Name: ".uname", Data: []byte(release)},
		{Name: ".linux", Data: vmlinuz},
		{Name: ".initrd", Data: initrd},
	})
	if err != nil {
		return nil, fmt.Errorf("assemble UKI: %w", err)
	}
	if err := writeAtomic(filepath.Join(o.Out, manifest.FileUKI), efi); err != nil {
		return nil, err
	}
	return efi, nil
}

// writeDisk writes disk.raw: the ESP with systemd-boot, its loader.conf and slot A's entry and
// UKI, and the blank state partition.
func (j *job) writeDisk(bootEFI, efi []byte) error {
	o, a := j.o, j.a
	loaderConf := "# written by ingot build\ntimeout 0\ndefault ingot-*\neditor no\nconsole-mode keep\n"
	// version is the entry's generation, which the node raises at every image swap
	// (init/slots): systemd-boot boots the highest first.
	entryA := "title ingot " + o.Profile.Name + " " + o.Version + " (slot a)\nsort-key ingot\nversion 1\nefi /" + SlotAPath + "\n"
	files := []disk.File{
		{Path: a.EFIFallback, Data: bootEFI},
		{Path: "loader/loader.conf", Data: []byte(loaderConf)},
		{Path: EntryAPath, Data: []byte(entryA)},
		{Path: SlotAPath, Data: efi},
	}
	return disk.Write(filepath.Join(o.Out, manifest.FileDisk), disk.Layout{ESPMiB: o.Profile.Disk.ESPMiB, StateMiB: o.Profile.Disk.StateMiB, Epoch: o.SourceDateEpoch}, files)
}

// writeISO writes ingot.iso: systemd-boot on its ESP with an entry booting the UKI as a live node
// and, with InstallDisk, a default entry installing it; the ISO's files are disk.qcow2 and
// install.json (what the installer checks the written disk against).
func (j *job) writeISO(bootEFI, efi []byte, cmdline string) error {
	o, a := j.o, j.a
	title := "ingot " + o.Profile.Name + " " + o.Version
	loaderConf := "# written by ingot build\ntimeout 3\ndefault ingot-live.conf\neditor yes\n"
	files := []disk.File{
		{Path: a.EFIFallback, Data: bootEFI},
		{Path: "EFI/ingot/ingot.efi", Data: efi},
		{Path: "loader/entries/ingot-live.conf", Data: []byte("title " + title + " (live)\nefi /EFI/ingot/ingot.efi\n")},
	}
	if o.InstallDisk != "" {
		if !installDisks.MatchString(o.InstallDisk) {
			return fmt.Errorf("install disk %q: want a whole disk's device, as /dev/sda, /dev/vda or /dev/nvme0n1", o.InstallDisk)
		}
		loaderConf = "# written by ingot build\ntimeout 3\ndefault ingot-install.conf\neditor yes\n"
		files = append(files, disk.File{Path: "loader/entries/ingot-install.conf",
			Data: []byte("title " + title + ": install to " + o.InstallDisk + "\nefi /EFI/ingot/ingot.efi\noptions " + cmdline + " " + manifest.InstallArg + "=" + o.InstallDisk + "\n")})
	}
	files = append(files, disk.File{Path: "loader/loader.conf", Data: []byte(loaderConf)})
	esp := filepath.Join(o.Out, ".iso-esp.img")
	defer os.Remove(esp)
	if _, err := disk.WriteFAT(esp, "INGOT-ISO", o.SourceDateEpoch, files); err != nil {
		return err
	}
	raw, err := describe(filepath.Join(o.Out, manifest.FileDisk))
	if err != nil {
		return err
	}
	info, _ := json.MarshalIndent(manifest.InstallInfo{Profile: o.Profile.Name, Version: o.Version, BuildID: j.buildID, Arch: a.Name,
		Disk: raw.Name, DiskSize: raw.Size, DiskSHA256: raw.SHA256, Image: manifest.FileQCOW2}, "", "  ")
	infoPath := filepath.Join(o.Out, ".install.json")
	defer os.Remove(infoPath)
	if err := os.WriteFile(infoPath, append(info, '\n'), 0o644); err != nil {
		return err
	}
	return iso.Write(filepath.Join(o.Out, manifest.FileISO), manifest.ISOLabel, esp, map[string]string{
		"/" + manifest.FileQCOW2:       filepath.Join(o.Out, manifest.FileQCOW2),
		"/" + manifest.FileInstallInfo: infoPath,
	})
}

// installDisks are the device names an ISO's install entry may name: whole disks.
var installDisks = regexp.MustCompile(`^/dev/((sd|vd|xvd|hd)[a-z]+|nvme[0-9]+n[0-9]+|mmcblk[0-9]+)$`)

// writeManifest completes m with the sorted inputs and the outputs' sizes and digests, and
// writes manifest.json last, so a manifest only exists beside a complete image.
func (j *job) writeManifest(m *manifest.Manifest) error {
	o := j.o
	sort.Slice(j.inputs, func(a, b int) bool { return j.inputs[a].Name < j.inputs[b].Name })
	m.Inputs = j.inputs
	names := []string{manifest.FileKernel, manifest.FileInitramfs, manifest.FileUKI, manifest.FileDisk}
	if o.QCOW2 || o.ISO {
		names = append(names, manifest.FileQCOW2)
	}
	if o.ISO {
		names = append(names, manifest.FileISO)
	}
	for _, name := range names {
		out, err := describe(filepath.Join(o.Out, name))
		if err != nil {
			return err
		}
		m.Outputs = append(m.Outputs, out)
	}
	data, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(filepath.Join(o.Out, manifest.FileManifest), append(data, '\n'))
}

func (j *job) addInput(name, version string, data []byte) {
	sum := sha256.Sum256(data)
	j.inputs = append(j.inputs, manifest.Input{Name: name, Version: version, SHA256: hex.EncodeToString(sum[:])})
}

// deb fetches and unpacks a Debian package for the target arch and records it as an input.
func (j *job) deb(ctx context.Context, name string) (string, error) {
	p, err := j.fetch.Fetch(ctx, name)
	if err != nil {
		return "", err
	}
	return j.unpack(ctx, p)
}

func (j *job) unpack(ctx context.Context, p *debpkg.Package) (string, error) {
	j.inputs = append(j.inputs, manifest.Input{Name: "deb:" + p.Name, Version: p.Version, SHA256: p.SHA256})
	return j.fetch.Unpack(ctx, p)
}

func (j *job) kernel(ctx context.Context) (*kernel.Kernel, error) {
	src := j.o.Kernel
	switch {
	case src == "":
		p, err := j.fetch.FetchFollowing(ctx, j.o.Profile.Kernel.PackageFor(j.a.Name), "linux-image-")
		if err != nil {
			return nil, err
		}
		root, err := j.unpack(ctx, p)
		if err != nil {
			return nil, err
		}
		return kernel.FromRoot(root)
	case strings.HasSuffix(src, ".deb"):
		if _, err := os.Stat(src); err != nil {
			return nil, fmt.Errorf("kernel %s: %w", src, err)
		}
		p, err := debpkg.Inspect(ctx, src)
		if err != nil {
			return nil, err
		}
		root, err := j.unpack(ctx, p)
		if err != nil {
			return nil, err
		}
		return kernel.FromRoot(root)
	}
	st, err := os.Stat(src)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", src, err)
	}
	var k *kernel.Kernel
	if st.IsDir() {
		k, err = kernel.FromRoot(src)
	} else {
		if j.o.KernelModules == "" {
			return nil, fmt.Errorf("kernel %s: a vmlinuz file needs --modules DIR (lib/modules/<release>)", src)
		}
		k, err = kernel.New(src, j.o.KernelModules)
	}
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(k.Image)
	if err != nil {
		return nil, err
	}
	j.addInput("kernel:"+k.Release, "", data)
	return k, nil
}

// Where the initramfs holds the root filesystem and the modules mounting it needs; PID 1 reads
// them as init/rootfs.Image and init/rootfs.Modules.
const (
	RootFSPath       = "/ingot/root.sqfs"
	EarlyModulesPath = "/ingot/modules.load"
	// BinDir holds the node binary, NodeBinaryPath, in the initramfs; in the squashfs it is the
	// empty directory PID 1 binds the initramfs' onto (rootfs.Switch). /init links to the binary
	// in both.
	BinDir         = "/lib/ingot"
	NodeBinaryPath = BinDir + "/ingot-node"
)

// firmware ships the firmware files the modules name that the profile's firmware packages hold,
// and records them, and those none holds, for the manifest.
func (j *job) firmware(ctx context.Context, t *initramfs.Tree, k *kernel.Kernel, mods []kernel.Module) error {
	wanted, err := k.Firmware(mods)
	if err != nil || len(wanted) == 0 {
		return err
	}
	var roots []string
	for _, pkg := range j.o.Profile.Kernel.Firmware {
		root, err := j.deb(ctx, pkg)
		if err != nil {
			return fmt.Errorf("profile %s: firmware package: %w (firmware packages are in Debian's %s component)", j.o.Profile.Name, err, debpkg.FirmwareComponent)
		}
		roots = append(roots, root)
	}
	for _, w := range wanted {
		found := false
		for i, root := range roots {
			src, ok := firmwareFile(root, w.Path)
			if !ok {
				continue
			}
			data, err := os.ReadFile(src)
			if err != nil {
				return fmt.Errorf("firmware %s: %w", w.Path, err)
			}
			if err := t.File(path.Join("/lib/firmware", w.Path), data, 0o644); err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			j.fw = append(j.fw, manifest.Firmware{Path: w.Path, Package: j.o.Profile.Kernel.Firmware[i], Modules: w.Modules, SHA256: hex.EncodeToString(sum[:])})
			found = true
			break
		}
		if !found {
			j.fwMissing = append(j.fwMissing, w.Path)
		}
	}
	return nil
}

// firmwareFile finds a firmware file in an unpacked package: under lib/firmware or
// usr/lib/firmware, following the package's own symlinks (absolute ones taken inside the package).
func firmwareFile(root, rel string) (string, bool) {
	for _, dir := range []string{"lib/firmware", "usr/lib/firmware"} {
		p := filepath.Join(root, dir, rel)
		for range 8 {
			st, err := os.Lstat(p)
			if err != nil {
				break
			}
			if st.Mode().IsRegular() {
				return p, true
			}
			if st.Mode()&fs.ModeSymlink == 0 {
				break
			}
			target, err := os.Readlink(p)
			if err != nil {
				break
			}
			if filepath.IsAbs(target) {
				p = filepath.Join(root, target)
			} else {
				p = filepath.Join(filepath.Dir(p), target)
			}
			if !strings.HasPrefix(p, root+string(filepath.Separator)) {
				break
			}
		}
	}
	return "", false
}

// setModules lists the members of the profile's module sets that the kernel has as module files,
// each once, in set order. Members it lacks or has built in are skipped.
func setModules(p *profiles.Profile, k *kernel.Kernel) []string {
	var out []string
	for _, set := range p.Kernel.ModuleSets {
		for _, m := range profiles.ModuleSet(set) {
			if k.Has(m) && !slices.Contains(out, kernel.Normalize(m)) {
				out = append(out, kernel.Normalize(m))
			}
		}
	}
	return out
}

func moduleNames(mods []kernel.Module) []string {
	out := make([]string, len(mods))
	for i, m := range mods {
		out[i] = m.Name
	}
	return out
}

// stateModules are what mounting the state partition needs when the kernel has them as modules
// (Debian's generic kernels): ext4, and crc32c, which ext4 asks the crypto API for by name at
// mount (metadata_csum) rather than depending on. PID 1 loads them first, before the profile's.
func stateModules(k *kernel.Kernel) []string {
	var out []string
	for _, m := range []string{"ext4", "crc32c_generic"} {
		if k.Has(m) {
			out = append(out, m)
		}
	}
	return out
}

// firmwareModules are shipped when the kernel has them, for PID 1 to load on UEFI boots.
func firmwareModules() []string { return []string{"efivarfs"} }

// earlyModules are what PID 1 loads from the initramfs to mount the root filesystem: the loop
// device and squashfs (modules in Debian's cloud kernels).
func earlyModules() []string { return []string{"loop", "squashfs"} }

// initramfs lays out what the kernel unpacks into RAM: PID 1, the modules it needs to mount the
// root filesystem, and the root filesystem itself, the squashfs that stays compressed. Everything
// else is in that squashfs.
func (j *job) initramfs(node []byte, k *kernel.Kernel, root []byte) (*initramfs.Tree, error) {
	t := initramfs.New()
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	for _, d := range []string{"/dev", "/proc", "/sys"} {
		add(t.Dir(d, 0o755))
	}
	// The kernel opens /dev/console for init's stdio before anything is mounted.
	add(t.CharDev("/dev/console", 0o600, 5, 1))
	add(t.CharDev("/dev/null", 0o666, 1, 3))
	add(t.Dir("/lib", 0o755))
	add(t.Dir(BinDir, 0o755))
	add(t.File(NodeBinaryPath, node, 0o755))
	add(t.Symlink("/init", NodeBinaryPath))
	add(t.File(RootFSPath, root, 0o444))
	mods, err := k.Closure(earlyModules())
	add(err)
	var names []string
	for _, m := range mods {
		names = append(names, m.Name)
		add(t.CopyFile(filepath.Join("/lib/modules", k.Release, m.Path), filepath.Join(k.ModulesDir, m.Path), 0o644))
	}
	add(t.File(filepath.Join("/lib/modules", k.Release, "modules.dep"), kernel.ModulesDep(mods), 0o644))
	add(t.File(EarlyModulesPath, []byte(strings.Join(names, "\n")+"\n"), 0o644))
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	return t, nil
}

// rootfs lays out the node's root filesystem, the squashfs PID 1 mounts read-only as /.
func (j *job) rootfs(ctx context.Context, k *kernel.Kernel, mods []kernel.Module) (*initramfs.Tree, []string, error) {
	t := initramfs.New()
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	for _, d := range []string{"/dev", "/proc", "/sys", "/run", "/var", "/etc/ingot", "/bin", "/lib"} {
		add(t.Dir(d, 0o755))
	}
	add(t.Dir("/tmp", 0o1777))
	add(t.Dir("/root", 0o700))
	// The kernel opens /dev/console for init's stdio before anything is mounted.
	add(t.CharDev("/dev/console", 0o600, 5, 1))
	add(t.CharDev("/dev/null", 0o666, 1, 3))
	// The node binary is not stored here a second time: BinDir is an empty mount point that PID 1
	// bind-mounts the initramfs' BinDir onto when it switches root (rootfs.Switch). The kernel has
	// already unpacked that copy into RAM, so the squashfs would only add its compressed size to
	// the UKI and the time to decompress it again when PID 1 re-executes itself.
	add(t.Dir(BinDir, 0o755))
	add(t.Symlink("/init", NodeBinaryPath))
	add(t.File("/etc/ingot/profile.toml", j.o.ProfileTOML, 0o644))
	add(t.File("/etc/passwd", []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"), 0o644))
	add(t.File("/etc/group", []byte("root:x:0:\ntty:x:5:\nnogroup:x:65534:\n"), 0o644))
	// The node binary under its own name, for `ingot-node net show` and friends, and as the
	// modprobe the kernel runs to load a module it needs (/proc/sys/kernel/modprobe).
	add(t.Symlink("/bin/ingot-node", "/init"))
	add(t.Symlink("/bin/modprobe", "/init"))
	// Merged /usr: everything lives in /bin.
	for _, l := range []string{"/sbin", "/usr/bin", "/usr/sbin"} {
		add(t.Symlink(l, "/bin"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, fmt.Errorf("root filesystem: %w", err)
	}

	var names, load []string
	for _, m := range mods {
		if err := t.CopyFile(filepath.Join("/lib/modules", k.Release, m.Path), filepath.Join(k.ModulesDir, m.Path), 0o644); err != nil {
			return nil, nil, err
		}
		names = append(names, m.Name)
	}
	for _, n := range append(stateModules(k), j.o.Profile.Kernel.Modules...) {
		if !k.Builtin(n) && !slices.Contains(load, kernel.Normalize(n)) {
			load = append(load, kernel.Normalize(n))
		}
	}
	if err := j.firmware(ctx, t, k, mods); err != nil {
		return nil, nil, err
	}
	if err := t.File(filepath.Join("/lib/modules", k.Release, "modules.dep"), kernel.ModulesDep(mods), 0o644); err != nil {
		return nil, nil, err
	}
	alias, err := k.ModulesAlias(mods)
	if err != nil {
		return nil, nil, err
	}
	if err := t.File(filepath.Join("/lib/modules", k.Release, "modules.alias"), alias, 0o644); err != nil {
		return nil, nil, err
	}
	if err := t.File("/etc/ingot/modules.load", []byte(strings.Join(load, "\n")+"\n"), 0o644); err != nil {
		return nil, nil, err
	}
	if list := j.o.Profile.Network.CNI; list != "" {
		// Validated with the profile; the runtime loads the first conflist of /etc/cni/net.d.
		if err := t.File("/etc/cni/net.d/10-ingot.conflist", []byte(list), 0o644); err != nil {
			return nil, nil, err
		}
	}
	if cfg := j.o.Profile.Runtime.Config; cfg != "" {
		// Validated with the profile; the node reads it as its containerd config.toml.
		if err := t.File("/etc/ingot/config.toml", []byte(cfg), 0o644); err != nil {
			return nil, nil, err
		}
	}

	if err := j.e2fsprogs(ctx, t); err != nil {
		return nil, nil, err
	}
	for _, b := range j.o.Profile.Bundles {
		switch b {
		case profiles.BundleBusybox:
			if err := j.busybox(ctx, t); err != nil {
				return nil, nil, err
			}
		case profiles.BundleCrictl:
			if err := j.crictl(ctx, t); err != nil {
				return nil, nil, err
			}
		case profiles.BundleCNIPlugins:
			if err := j.cniPlugins(ctx, t); err != nil {
				return nil, nil, err
			}
		case profiles.BundleKubelet:
			if err := j.kubelet(ctx, t); err != nil {
				return nil, nil, err
			}
		default:
			return nil, nil, fmt.Errorf("profile %s: unknown bundle %q", j.o.Profile.Name, b)
		}
	}
	// Last: the build id covers every input recorded so far (node binary, profile, kernel,
	// systemd-boot, bundles).
	osrel, buildID := osRelease(j.o.Profile.Name, j.a.Name, j.o.Version, j.inputs)
	j.buildID = buildID
	if err := t.File("/etc/os-release", osrel, 0o644); err != nil {
		return nil, nil, err
	}
	if err := t.File(BuildIDPath, []byte(buildID+"\n"), 0o644); err != nil {
		return nil, nil, err
	}
	return t, names, nil
}

// BuildIDPath holds the image's build id in its root filesystem, also os-release's BUILD_ID.
const BuildIDPath = "/etc/ingot/build-id"

// osRelease renders the image's /etc/os-release and returns its build id: the sha256 of the
// architecture and every input (name, version, digest), so two images have the same id exactly
// when they were built from the same things. VERSION_ID is the version the builder was given
// (Options.Version); the build id covers it too.
func osRelease(profile, arch, version string, inputs []manifest.Input) ([]byte, string) {
	h := sha256.New()
	fmt.Fprintf(h, "arch %s\nversion %s\n", arch, version)
	for _, in := range inputs {
		fmt.Fprintf(h, "%s %s %s\n", in.Name, in.Version, in.SHA256)
	}
	id := hex.EncodeToString(h.Sum(nil))
	return uki.OSRelease(map[string]string{
		"NAME": "ingot", "ID": "ingot", "VERSION_ID": version, "IMAGE_ID": profile, "BUILD_ID": id,
		"PRETTY_NAME": "ingot " + profile + " " + version + " (" + arch + ", build " + id[:12] + ")",
	}), id
}

// e2fsprogs adds what PID 1 formats, checks and grows the state partition with (mke2fs,
// e2fsck, resize2fs from Debian, their libraries and loader) and their configuration. Every
// image has a state partition, so every image carries them.
func (j *job) e2fsprogs(ctx context.Context, t *initramfs.Tree) error {
	files, err := e2fsprogs.Collect(ctx, j.deb)
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := t.CopyFile(f.Path, f.Src, f.Mode); err != nil {
			return fmt.Errorf("e2fsprogs: %w", err)
		}
	}
	etc := statedisk.NodeTools.Etc
	if err := t.File(path.Join(etc, statedisk.MkfsConfName), []byte(statedisk.MkfsConf), 0o644); err != nil {
		return err
	}
	return t.File(path.Join(etc, statedisk.FsckConfName), []byte(statedisk.FsckConf), 0o644)
}

func (j *job) busybox(ctx context.Context, t *initramfs.Tree) error {
	root, err := j.deb(ctx, "busybox-static")
	if err != nil {
		return err
	}
	bin, err := os.ReadFile(filepath.Join(root, "bin/busybox"))
	if err != nil {
		return fmt.Errorf("bundle busybox: %w", err)
	}
	applets, err := initramfs.BusyboxApplets(bin)
	if err != nil {
		return fmt.Errorf("bundle busybox: %w", err)
	}
	if err := t.File("/bin/busybox", bin, 0o755); err != nil {
		return err
	}
	for _, a := range applets {
		// modprobe is the node binary's own (the kernel's autoloader runs it; it reads the
		// image's modules.dep and modules.alias).
		if a == "busybox" || a == "modprobe" {
			continue
		}
		if t.Has("/bin/" + a) { // e2fsprogs' mke2fs, not busybox's
			continue
		}
		if err := t.Symlink("/bin/"+a, "busybox"); err != nil {
			return fmt.Errorf("bundle busybox: %w", err)
		}
	}
	profile := "# written by ingot build\nexport PS1='\\h:\\w\\$ '\nalias ll='ls -l'\n"
	return t.File("/etc/profile", []byte(profile), 0o644)
}

// crictl adds cri-tools' crictl for the target arch (built from the Go module proxy into the
// cache) and a crictl.yaml pointing at the runtime's socket.
func (j *job) crictl(ctx context.Context, t *initramfs.Tree) error {
	bin, err := bundle.Crictl(ctx, j.o.Cache, j.a.Name)
	if err != nil {
		return fmt.Errorf("bundle crictl: %w", err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return fmt.Errorf("bundle crictl: %w", err)
	}
	j.addInput("crictl "+bundle.CriToolsVersion, bundle.CriToolsVersion, data)
	if err := t.File("/bin/crictl", data, 0o755); err != nil {
		return err
	}
	yaml := "runtime-endpoint: unix:///run/ingot/ingot.sock\nimage-endpoint: unix:///run/ingot/ingot.sock\ntimeout: 30\n"
	return t.File("/etc/crictl.yaml", []byte(yaml), 0o644)
}

// cniPlugins adds the CNI reference plugins for the target arch to /opt/cni/bin.
func (j *job) cniPlugins(ctx context.Context, t *initramfs.Tree) error {
	bins, err := bundle.CNIPlugins(ctx, j.o.Cache, j.a.Name)
	if err != nil {
		return fmt.Errorf("bundle cni-plugins: %w", err)
	}
	for _, b := range bins {
		data, err := os.ReadFile(b)
		if err != nil {
			return fmt.Errorf("bundle cni-plugins: %w", err)
		}
		j.addInput("cni-plugin "+filepath.Base(b)+" "+bundle.CNIPluginsVersion, bundle.CNIPluginsVersion, data)
		if err := t.File("/opt/cni/bin/"+filepath.Base(b), data, 0o755); err != nil {
			return err
		}
	}
	return nil
}

func writeAtomic(path string, data []byte) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func describe(path string) (manifest.Output, error) {
	sum, err := debpkg.FileSHA256(path)
	if err != nil {
		return manifest.Output{}, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return manifest.Output{}, err
	}
	return manifest.Output{Name: filepath.Base(path), Size: st.Size(), SHA256: sum}, nil
}
