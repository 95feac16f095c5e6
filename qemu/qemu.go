// Package qemu boots ingot images under QEMU: x86_64 on q35 and arm64 on virt, by direct kernel
// boot (vmlinuz + initramfs) or from the disk image through UEFI firmware, with TCG or, where
// /dev/kvm really works, KVM. The guest gets QEMU user networking with restrict=on by default: it
// can reach nothing outside the VM except what explicit forwarding rules allow; NetUser lifts that
// for people who want the guest to pull from the internet (never in tests).
package qemu

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"ingot.dev/ingot/image/arch"
	"ingot.dev/ingot/image/manifest"
)

// Boot paths.
const (
	BootDirect = "direct"
	BootUEFI   = "uefi"
	// BootPXE is a network boot: the UEFI firmware asks QEMU's DHCP server for a boot file and
	// fetches the image's UKI (kernel, initramfs and command line in one EFI program) from its
	// TFTP server. No disk is needed; without one the node keeps /var in memory.
	BootPXE = "pxe"
)

// Config describes one VM.
type Config struct {
	Image  string // an `ingot build` output directory
	Boot   string // BootDirect, BootUEFI or BootPXE
	Disk   string // disk image (UEFI boots from it), raw or, named *.qcow2, QCOW2; empty: none
	Memory int    // MiB; default 1024
	CPUs   int    // default 1
	// RunDir holds the QMP socket and the firmware variable store; required.
	RunDir string
	// Interactive gives QEMU the terminal (serial console and monitor multiplexed on stdio:
	// Ctrl-A c switches to the monitor, Ctrl-A x quits). Otherwise the console is a pipe.
	Interactive bool
	// Net is NetRestricted (the default when empty) or NetUser.
	Net string
	// HostFwd and GuestFwd are QEMU user-network rules, e.g. "tcp:127.0.0.1:2222-:22".
	HostFwd  []string
	GuestFwd []string
	// DHCPStart is the first address QEMU's DHCP server hands out (default 10.0.2.15): VMs that
	// must tell each other apart by address (Kubernetes nodes) each get their own.
	DHCPStart string
	// ConsoleFile, when set, receives the serial console (appended) instead of a pipe: for a VM
	// that outlives the program that started it. Not with Interactive.
	ConsoleFile string
	// ExtraCmdline is appended to the kernel command line (direct boot only).
	ExtraCmdline string
	// Tee, when set, receives a copy of the console output (non-interactive mode).
	Tee io.Writer
	// FwCfg maps fw_cfg names ("opt/ingot/node.toml") to host files the guest reads under
	// /sys/firmware/qemu_fw_cfg/by_name.
	FwCfg map[string]string
	// Drives are extra raw images attached read-only as virtio disks after Disk (config drives).
	Drives []string
	// DiskModel is how Disk is attached: DiskVirtio (the default when empty), DiskNVMe or DiskAHCI,
	// as real machines attach their disks.
	DiskModel string
	// NIC is the network card's model: NICVirtio (the default when empty) or NICE1000e.
	NIC string
	// CDROM is an ISO attached as a CD (SCSI, on virtio-scsi), and USBStick a raw image attached
	// as a USB mass-storage device (on an xHCI controller); either is tried before the disk by
	// UEFI firmware, unless the boot variables say otherwise.
	CDROM, USBStick string
	// ExtraNICs are more network cards, of these models, after the first: card i (from 1) is on
	// a restricted user network of its own, 10.0.(2+i).0/24, its netdev named "net<i>" (for
	// SetLink). For machines with several NICs.
	ExtraNICs []string
	// HotplugPorts adds that many empty PCIe root ports, hp0, hp1, …, for DeviceAdd to plug
	// devices into while the guest runs (amd64's q35 only: its root bus takes no hotplug).
	HotplugPorts int
}

// Disk and NIC models a Config may ask for.
const (
	DiskVirtio = "virtio"
	DiskNVMe   = "nvme"
	DiskAHCI   = "ahci"
	NICVirtio  = "virtio"
	NICE1000e  = "e1000e"
)

// FindFirmware returns the UEFI code image and vars template for a.
func FindFirmware(a arch.Arch) (arch.Firmware, error) {
	for _, f := range a.Firmware {
		if _, err := os.Stat(f.Code); err != nil {
			continue
		}
		if _, err := os.Stat(f.Vars); err != nil {
			continue
		}
		return f, nil
	}
	return arch.Firmware{}, fmt.Errorf("no UEFI firmware for %s (looked for %s; run make deps)", a.Name, a.Firmware[0].Code)
}

// Args builds QEMU's command line.
func (c Config) Args(m *manifest.Manifest) ([]string, error) {
	a, err := arch.Lookup(m.Arch)
	if err != nil {
		return nil, err
	}
	if c.RunDir == "" {
		return nil, errors.New("qemu: no run directory")
	}
	mem, cpus := c.Memory, c.CPUs
	if mem == 0 {
		mem = 1024
	}
	if cpus == 0 {
		cpus = 1
	}
	args := append([]string{}, a.Machine...)
	if KVMUsable(a.Name) {
		args = append(args, "-accel", "kvm")
	} else {
		args = append(args, "-accel", "tcg")
	}
	args = append(args, "-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus), "-nodefaults", "-display", "none",
		"-qmp", "unix:"+QMPSocket(c.RunDir)+",server=on,wait=off")
	switch {
	case c.Interactive && c.ConsoleFile != "":
		return nil, errors.New("qemu: a console file and an interactive console exclude each other")
	case c.Interactive:
		args = append(args, "-serial", "mon:stdio")
	case c.ConsoleFile != "":
		args = append(args, "-chardev", "file,id=console0,append=on,path="+c.ConsoleFile,
			"-serial", "chardev:console0", "-monitor", "none")
	default:
		args = append(args, "-serial", "stdio", "-monitor", "none")
	}

	switch c.Boot {
	case BootDirect, "":
		cmdline := m.Cmdline
		if c.ExtraCmdline != "" {
			cmdline += " " + c.ExtraCmdline
		}
		args = append(args, "-kernel", filepath.Join(c.Image, manifest.FileKernel),
			"-initrd", filepath.Join(c.Image, manifest.FileInitramfs), "-append", cmdline)
	case BootUEFI, BootPXE:
		if c.Disk == "" && c.CDROM == "" && c.USBStick == "" && c.Boot == BootUEFI {
			return nil, errors.New("qemu: UEFI boot needs a disk image, a CD or a USB stick")
		}
		fw, err := FindFirmware(a)
		if err != nil {
			return nil, err
		}
		// A fresh copy of the variable store per VM: firmware writes boot entries into it.
		vars := filepath.Join(c.RunDir, "efivars.fd")
		if err := copyFile(fw.Vars, vars); err != nil {
			return nil, fmt.Errorf("qemu: firmware vars: %w", err)
		}
		args = append(args,
			"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+fw.Code,
			"-drive", "if=pflash,format=raw,unit=1,file="+vars)
	default:
		return nil, fmt.Errorf("qemu: unknown boot path %q (want direct, uefi or pxe)", c.Boot)
	}
	// A CD or USB stick goes on the PCI bus ahead of the disk, so the firmware's own boot order
	// (by device) tries it first, as a machine set to boot removable media does. No bootindex:
	// with one, OVMF rewrites the boot order from QEMU's and deletes the boot options it does not
	// know, such as the one an installer adds for the disk it wrote.
	if c.CDROM != "" {
		args = append(args, "-drive", "if=none,id=cd0,media=cdrom,readonly=on,format=raw,file="+c.CDROM,
			"-device", "virtio-scsi-pci,id=scsi0", "-device", "scsi-cd,drive=cd0,bus=scsi0.0")
	}
	if c.USBStick != "" {
		args = append(args, "-drive", "if=none,id=stick0,format=raw,readonly=on,file="+c.USBStick,
			"-device", "qemu-xhci,id=xhci0", "-device", "usb-storage,drive=stick0,bus=xhci0.0,removable=on")
	}
	if c.Disk != "" {
		format := "raw"
		if strings.HasSuffix(c.Disk, ".qcow2") {
			format = "qcow2"
		}
		args = append(args, "-drive", "if=none,id=disk0,format="+format+",file="+c.Disk)
		switch c.DiskModel {
		case DiskVirtio, "":
			args = append(args, "-device", "virtio-blk-pci,drive=disk0")
		case DiskNVMe:
			args = append(args, "-device", "nvme,drive=disk0,serial=ingot0")
		case DiskAHCI:
			args = append(args, "-device", "ahci,id=ahci0", "-device", "ide-hd,drive=disk0,bus=ahci0.0")
		default:
			return nil, fmt.Errorf("qemu: unknown disk model %q (want virtio, nvme or ahci)", c.DiskModel)
		}
	}
	for i, d := range c.Drives {
		id := fmt.Sprintf("drive%d", i+1)
		args = append(args, "-drive", "if=none,id="+id+",format=raw,readonly=on,file="+d,
			"-device", "virtio-blk-pci,drive="+id)
	}
	for i := range c.HotplugPorts {
		args = append(args, "-device", fmt.Sprintf("pcie-root-port,id=hp%d,chassis=%d,slot=%d", i, i+1, i+1))
	}
	for _, name := range slices.Sorted(maps.Keys(c.FwCfg)) {
		args = append(args, "-fw_cfg", "name="+name+",file="+c.FwCfg[name])
	}
	var net string
	switch c.Net {
	case NetRestricted, "":
		net = "user,id=net0,restrict=on"
	case NetUser:
		net = "user,id=net0"
	default:
		return nil, fmt.Errorf("qemu: unknown network %q (want restricted or user)", c.Net)
	}
	if c.DHCPStart != "" {
		if a, err := netip.ParseAddr(c.DHCPStart); err != nil || !a.Is4() {
			return nil, fmt.Errorf("qemu: DHCP start %q: want an IPv4 address", c.DHCPStart)
		}
		net += ",dhcpstart=" + c.DHCPStart
	}
	if c.Boot == BootPXE {
		// QEMU's TFTP server serves the image directory; its DHCP server names the UKI.
		net += ",tftp=" + c.Image + ",bootfile=" + manifest.FileUKI
	}
	for _, h := range c.HostFwd {
		net += ",hostfwd=" + h
	}
	for _, g := range c.GuestFwd {
		net += ",guestfwd=" + g
	}
	// romfile= : no iPXE option ROM, so UEFI does not try a network boot first.
	nic, err := nicDevice(c.NIC)
	if err != nil {
		return nil, err
	}
	nicOpts := ",netdev=net0,romfile="
	if c.Boot == BootPXE {
		nicOpts += ",bootindex=0" // the firmware's own NIC driver and PXE client, tried first
	}
	args = append(args, "-netdev", net, "-device", nic+nicOpts)
	for i, model := range c.ExtraNICs {
		nic, err := nicDevice(model)
		if err != nil {
			return nil, err
		}
		id := fmt.Sprintf("net%d", i+1)
		args = append(args, "-netdev", fmt.Sprintf("user,id=%s,restrict=on,net=10.0.%d.0/24", id, i+3),
			"-device", nic+",netdev="+id+",romfile=")
	}
	// An entropy source, as clouds provide: without it the guest's first getrandom() (formatting
	// the state partition needs random UUIDs) waits a second or more for the entropy pool.
	args = append(args, "-device", "virtio-rng-pci")
	return args, nil
}

// nicDevice is QEMU's device for a NIC model.
func nicDevice(model string) (string, error) {
	switch model {
	case NICVirtio, "":
		return "virtio-net-pci", nil
	case NICE1000e:
		return "e1000e", nil
	}
	return "", fmt.Errorf("qemu: unknown NIC model %q (want virtio or e1000e)", model)
}

// VM is a running QEMU.
type VM struct {
	Console *Console // nil when interactive
	Started time.Time
	cmd     *exec.Cmd
	qmp     string
	done    chan struct{}
	err     error
}

// Command is the QEMU command that runs c, its run directory made; for a caller that runs the VM
// itself, e.g. detached with its console in c.ConsoleFile.
func Command(c Config) (*exec.Cmd, error) {
	m, err := manifest.Read(c.Image)
	if err != nil {
		return nil, err
	}
	a, _ := arch.Lookup(m.Arch)
	if err := os.MkdirAll(c.RunDir, 0o755); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	args, err := c.Args(m)
	if err != nil {
		return nil, err
	}
	bin, err := exec.LookPath(a.QEMU)
	if err != nil {
		return nil, fmt.Errorf("%s is not installed (run make deps)", a.QEMU)
	}
	return exec.Command(bin, args...), nil
}

// Start launches QEMU. In interactive mode QEMU inherits the terminal.
func Start(ctx context.Context, c Config) (*VM, error) {
	cmd, err := Command(c)
	if err != nil {
		return nil, err
	}
	vm := &VM{cmd: cmd, qmp: QMPSocket(c.RunDir), done: make(chan struct{})}
	os.Remove(vm.qmp)
	if c.Interactive {
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	} else {
		in, err := cmd.StdinPipe()
		if err != nil {
			return nil, err
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		cmd.Stderr = cmd.Stdout
		log, err := os.Create(filepath.Join(c.RunDir, "console.log"))
		if err != nil {
			return nil, fmt.Errorf("qemu: console log: %w", err)
		}
		var sink io.WriteCloser = log
		if c.Tee != nil {
			sink = teeCloser{log, c.Tee}
		}
		vm.Console = newConsole(in, out, sink)
	}
	vm.Started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	go func() {
		vm.err = cmd.Wait()
		close(vm.done)
	}()
	go func() {
		select {
		case <-ctx.Done():
			vm.Kill()
		case <-vm.done:
		}
	}()
	return vm, nil
}

// Done is closed when QEMU has exited.
func (vm *VM) Done() <-chan struct{} { return vm.done }

// Wait waits for QEMU to exit.
func (vm *VM) Wait() error {
	<-vm.done
	return vm.err
}

// Kill stops QEMU at once.
func (vm *VM) Kill() {
	if vm.cmd.Process != nil {
		vm.cmd.Process.Kill()
	}
}

// Powerdown presses the guest's power button (QMP system_powerdown).
func (vm *VM) Powerdown() error { return vm.QMP("system_powerdown") }

// QMP runs one QMP command without arguments.
func (vm *VM) QMP(command string) error { return QMP(vm.qmp, command) }

// DeviceAdd plugs a device into the running guest (QMP device_add): props are its driver, id,
// bus and properties, as -device takes them.
func (vm *VM) DeviceAdd(props map[string]string) error {
	b, err := json.Marshal(map[string]any{"execute": "device_add", "arguments": props})
	if err != nil {
		return err
	}
	return qmpRaw(vm.qmp, "device_add", string(b))
}

// SetLink plugs (up) or pulls (down) the cable of the NIC on netdev name ("net0", "net1", …),
// QMP set_link: the guest sees its carrier come or go.
func (vm *VM) SetLink(name string, up bool) error {
	b, err := json.Marshal(map[string]any{"execute": "set_link", "arguments": map[string]any{"name": name, "up": up}})
	if err != nil {
		return err
	}
	return qmpRaw(vm.qmp, "set_link", string(b))
}

// QMPSocket is where a VM started with run directory runDir takes QMP commands.
func QMPSocket(runDir string) string { return filepath.Join(runDir, "qmp.sock") }

// QMP runs one QMP command without arguments on the QMP socket sock, of a VM this process may
// not have started (a cluster's worker).
func QMP(sock, command string) error {
	return qmpRaw(sock, command, fmt.Sprintf(`{"execute":%q}`, command))
}

// qmpRaw sends one QMP message, msg, for command. QEMU makes the socket a moment after it
// starts, so the dial is retried for up to 5 s.
func qmpRaw(sock, command, msg string) error {
	var conn net.Conn
	var err error
	for range 50 {
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	defer conn.Close()
	return qmpSession(conn, command, msg)
}

func qmpSession(conn net.Conn, command, msg string) error {
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(conn)
	if _, err := r.ReadString('\n'); err != nil { // greeting
		return fmt.Errorf("qmp %s: greeting: %w", command, err)
	}
	for _, m := range []struct{ c, msg string }{{"qmp_capabilities", `{"execute":"qmp_capabilities"}`}, {command, msg}} {
		c := m.c
		if _, err := fmt.Fprintf(conn, "%s\n", m.msg); err != nil {
			return fmt.Errorf("qmp %s: %w", c, err)
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("qmp %s: %w", c, err)
			}
			if strings.Contains(line, `"return"`) {
				break
			}
			if strings.Contains(line, `"error"`) {
				return fmt.Errorf("qmp %s: %s", c, strings.TrimSpace(line))
			}
		}
	}
	return nil
}

// Console is the guest's serial console as a pipe: everything it prints is kept (and logged),
// and tests wait for lines and type commands.
type Console struct {
	in   io.WriteCloser
	mu   sync.Mutex
	buf  []byte
	cond chan struct{} // closed and replaced on every new output
	eof  bool
}

func newConsole(in io.WriteCloser, out io.Reader, log io.WriteCloser) *Console {
	c := &Console{in: in, cond: make(chan struct{})}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := out.Read(b)
			c.mu.Lock()
			if n > 0 {
				c.buf = append(c.buf, b[:n]...)
				if log != nil {
					log.Write(b[:n])
				}
			}
			if err != nil {
				c.eof = true
			}
			close(c.cond)
			c.cond = make(chan struct{})
			c.mu.Unlock()
			if err != nil {
				if log != nil {
					log.Close()
				}
				return
			}
		}
	}()
	return c
}

// Output returns everything printed so far.
func (c *Console) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return string(c.buf)
}

// Len is the number of bytes printed so far; pass it to WaitFor to look only at newer output.
func (c *Console) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.buf)
}

// WaitFor waits until text appears in the output after offset from, and returns the offset just
// past it. It fails early if the console closes or the guest kernel panics.
func (c *Console) WaitFor(ctx context.Context, from int, text string) (int, error) {
	for {
		c.mu.Lock()
		seen := string(c.buf[min(from, len(c.buf)):])
		eof, ch := c.eof, c.cond
		c.mu.Unlock()
		if i := strings.Index(seen, text); i >= 0 {
			return from + i + len(text), nil
		}
		if i := strings.Index(seen, "Kernel panic"); i >= 0 {
			return 0, fmt.Errorf("guest kernel panic while waiting for %q: %s", text, tail(seen[i:], 600))
		}
		if eof {
			return 0, fmt.Errorf("console closed while waiting for %q; last output:\n%s", text, tail(seen, 1500))
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for %q: %w; last output:\n%s", text, ctx.Err(), tail(seen, 1500))
		case <-ch:
		}
	}
}

// Send types s on the console.
func (c *Console) Send(s string) error {
	_, err := io.WriteString(c.in, s)
	return err
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}

// CopySparse copies a disk image, skipping runs of zeros so the copy stays sparse.
func CopySparse(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	var off int64
	for {
		n, err := in.ReadAt(buf, off)
		if n > 0 {
			chunk := buf[:n]
			if !allZero(chunk) {
				if _, werr := out.WriteAt(chunk, off); werr != nil {
					out.Close()
					return fmt.Errorf("copy %s: %w", src, werr)
				}
			}
			off += int64(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			out.Close()
			return fmt.Errorf("copy %s: %w", src, err)
		}
	}
	if err := out.Truncate(st.Size()); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

type teeCloser struct {
	f   *os.File
	tee io.Writer
}

func (t teeCloser) Write(b []byte) (int, error) {
	t.tee.Write(b)
	return t.f.Write(b)
}

func (t teeCloser) Close() error { return t.f.Close() }
