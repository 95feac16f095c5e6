package cluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"ingot.dev/ingot/image/bundle"
	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/init/api/apiv1"
	"ingot.dev/ingot/pki"
	"ingot.dev/ingot/profiles/nodeconfig"
	"ingot.dev/ingot/qemu"
)

// Worker VMs. Each is a QEMU process of its own session (it outlives `ingot cluster up`), its
// console appended to logs/NAME.console, its pid in run/NAME.pid, its disk and node config under
// workers/NAME. In QEMU's user network every VM would get 10.0.2.15; the kubelet proxy tells
// nodes apart by InternalIP, so worker i gets 10.0.2.(15+i) from QEMU's DHCP server (dhcpstart),
// all below GuestHostIP.
const (
	dirWorkers = "workers"
	// MaxWorkers keeps the workers' addresses, 10.0.2.16 up, below GuestHostIP (10.0.2.100).
	MaxWorkers = 64
	// DefaultWorkerMemory is a worker VM's RAM in MiB: the node, the kubelet and a few pods.
	DefaultWorkerMemory = 2048
)

// PodCIDR is the pod network of every worker: the runtime's built-in one (netsetup/cniconf).
// Each worker NATs its own pods, so kube-proxy is told it to tell pod traffic from the rest.
const PodCIDR = "10.88.0.0/16"

// DefaultKubeProxyImage is the kube-proxy every worker runs as a static pod: the release the
// workers' kubelet is built from.
const DefaultKubeProxyImage = "registry.k8s.io/kube-proxy:" + bundle.KubernetesVersion

var workerNameRE = regexp.MustCompile(`^worker-[1-9][0-9]*$`)

// WorkerName is the node name of worker i (1-based).
func WorkerName(i int) string { return fmt.Sprintf("worker-%d", i) }

// workerIP is the InternalIP QEMU's DHCP server gives worker i.
func workerIP(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, 2, byte(15 + i)}) }

// WorkerOptions configure StartWorkers.
type WorkerOptions struct {
	Count int
	// Image is an `ingot build` output directory of a profile that runs the kubelet (worker).
	Image string
	// Memory in MiB (default DefaultWorkerMemory), CPUs (default 1).
	Memory, CPUs int
	// Net is qemu.NetUser (the VMs reach the internet: registries) or qemu.NetRestricted (they
	// reach only the forwards).
	Net string
	// GuestFwd are extra guestfwd rules for every worker (a local registry, say).
	GuestFwd []string
	// RelayCommand is what QEMU runs for each guest connection to the API server, the host
	// address appended: `ingot cluster relay`. QEMU splits it at spaces, without a shell.
	RelayCommand []string
	// StaticPods are added to every worker's node config (kubernetes.static_pods).
	StaticPods map[string]string
	// Boot is how the workers boot: qemu.BootDirect (the default: kernel and initramfs given to
	// QEMU) or qemu.BootUEFI (from the disk through the firmware and systemd-boot, as real
	// machines do, which image swaps need).
	Boot string
	// PKI, when set, is an `ingot pki init` directory: each worker gets a node API certificate
	// from it (kept when it exists), an [api] table in its node config, and its node API
	// forwarded from a free port on 127.0.0.1.
	PKI string
	Log *slog.Logger
}

// Worker is a started worker VM.
type Worker struct {
	Name    string
	IP      string
	Kubelet int // the kubelet's forwarded port on 127.0.0.1
	API     int // the node API's forwarded port on 127.0.0.1 (0: no node API)
	Console string
	PID     int
}

// StartWorkers boots opts.Count worker VMs that join the cluster of stateDir (which Up started):
// worker-1 … worker-N, each with a copy of the image's disk (its state partition keeps the
// kubelet's certificate, images and logs across reboots), a node config with its hostname and the
// join settings, a forward from GuestServer to the API server and one from a free port on
// 127.0.0.1 to its kubelet, recorded for the kubelet proxy. A worker whose VM runs already is
// left alone; one whose VM has stopped is booted again on its kept disk.
func StartWorkers(ctx context.Context, stateDir string, opts WorkerOptions) ([]Worker, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Count < 1 || opts.Count > MaxWorkers {
		return nil, fmt.Errorf("workers: %d: want 1 to %d", opts.Count, MaxWorkers)
	}
	if opts.Memory == 0 {
		opts.Memory = DefaultWorkerMemory
	}
	switch opts.Boot {
	case "":
		opts.Boot = qemu.BootDirect
	case qemu.BootDirect, qemu.BootUEFI:
	default:
		return nil, fmt.Errorf("workers: boot %q: want %s or %s", opts.Boot, qemu.BootDirect, qemu.BootUEFI)
	}
	if len(opts.RelayCommand) == 0 {
		return nil, errors.New("workers: no relay command")
	}
	for _, a := range opts.RelayCommand {
		if a == "" || strings.ContainsAny(a, " \t\n") {
			return nil, fmt.Errorf("workers: relay command argument %q: QEMU splits its command at spaces, so no argument may hold one (move ingot or the state directory to a path without spaces)", a)
		}
	}
	dir, err := filepath.Abs(stateDir)
	if err != nil {
		return nil, err
	}
	// QEMU runs in the state directory: a relative image path would not be found there.
	if opts.Image, err = filepath.Abs(opts.Image); err != nil {
		return nil, err
	}
	st, err := ReadState(dir)
	if err != nil {
		return nil, err
	}
	m, err := manifest.Read(opts.Image)
	if err != nil {
		return nil, fmt.Errorf("workers: image: %w", err)
	}
	if !slices.ContainsFunc(m.Inputs, func(in manifest.Input) bool { return strings.HasPrefix(in.Name, "kubelet ") }) {
		return nil, fmt.Errorf("workers: image %s (profile %s) does not run the kubelet: build the worker profile (ingot build --profile worker)", opts.Image, m.Profile)
	}
	join, err := os.ReadFile(filepath.Join(dir, FileNodeConfig))
	if err != nil {
		return nil, err
	}
	kubelets, err := readKubelets(dir)
	if err != nil {
		return nil, err
	}
	var ws []Worker
	for i := 1; i <= opts.Count; i++ {
		w, err := startWorker(dir, st, m, join, kubelets, i, opts)
		if err != nil {
			return ws, fmt.Errorf("workers: %s: %w", WorkerName(i), err)
		}
		ws = append(ws, w)
	}
	return ws, nil
}

func startWorker(dir string, st *State, m *manifest.Manifest, join []byte, kubelets map[string]Kubelet, i int, opts WorkerOptions) (Worker, error) {
	name := WorkerName(i)
	wdir := filepath.Join(dir, dirWorkers, name)
	w := Worker{Name: name, IP: workerIP(i).String(), Console: filepath.Join(dir, dirLogs, name+".console")}
	if pid, ok := running(dir, name); ok {
		w.PID, w.Kubelet, w.API = pid, kubelets[name].Port, kubelets[name].API
		opts.Log.Info("worker runs already", "worker", name, "pid", pid)
		return w, nil
	}
	if err := os.MkdirAll(wdir, 0o700); err != nil {
		return w, err
	}
	disk := filepath.Join(wdir, manifest.FileDisk)
	if _, err := os.Stat(disk); errors.Is(err, os.ErrNotExist) {
		// Sparse: the image's disk is mostly an empty state partition.
		tmp := disk + ".tmp"
		if out, err := exec.Command("cp", "--sparse=always", filepath.Join(opts.Image, manifest.FileDisk), tmp).CombinedOutput(); err != nil {
			return w, fmt.Errorf("copy the image's disk: %v: %s", err, bytes.TrimSpace(out))
		}
		if err := os.Rename(tmp, disk); err != nil {
			return w, err
		}
	}
	// A kept worker keeps its ports: the proxy's map and the node's address stay as they were.
	w.Kubelet, w.API = kubelets[name].Port, kubelets[name].API
	var api []byte
	var err error
	if opts.PKI != "" {
		if w.API == 0 {
			if w.API, err = freePort(); err != nil {
				return w, err
			}
		}
		if api, err = nodeAPI(opts.PKI, name); err != nil {
			return w, err
		}
	}
	nc, err := workerNodeConfig(name, join, opts.StaticPods, api)
	if err != nil {
		return w, err
	}
	ncPath := filepath.Join(wdir, FileNodeConfig)
	if err := writeFile(ncPath, nc, 0o600); err != nil {
		return w, err
	}
	if w.Kubelet == 0 {
		if w.Kubelet, err = freePort(); err != nil {
			return w, err
		}
	}
	if err := AddKubelet(dir, name, Kubelet{Address: w.IP, Port: w.Kubelet, API: w.API}); err != nil {
		return w, err
	}
	relay := strings.Join(opts.RelayCommand, " ") + " " + net.JoinHostPort("127.0.0.1", strconv.Itoa(st.APIPort))
	hostFwd := []string{KubeletHostFwd(w.Kubelet)}
	if w.API != 0 {
		hostFwd = append(hostFwd, fmt.Sprintf("tcp:127.0.0.1:%d-:%d", w.API, apiv1.DefaultPort))
	}
	cfg := qemu.Config{
		Image: opts.Image, Boot: opts.Boot, Disk: disk,
		Memory: opts.Memory, CPUs: opts.CPUs, RunDir: filepath.Join(wdir, "run"),
		Net: opts.Net, DHCPStart: w.IP, ConsoleFile: w.Console,
		GuestFwd: append([]string{fmt.Sprintf("tcp:%s:%d-cmd:%s", GuestHostIP, st.APIPort, relay)}, opts.GuestFwd...),
		HostFwd:  hostFwd,
		FwCfg:    map[string]string{"opt/ingot/node.toml": ncPath},
	}
	cmd, err := qemu.Command(cfg)
	if err != nil {
		return w, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, dirLogs, name+".qemu.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return w, err
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = childEnv()
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return w, fmt.Errorf("start QEMU: %w", err)
	}
	w.PID = cmd.Process.Pid
	// Not waited for here: the VM outlives this process; down stops it by its pid file. Release
	// lets the kernel's init reap it when we exit.
	cmd.Process.Release()
	opts.Log.Info("worker started", "worker", name, "ip", w.IP, "kubelet", "127.0.0.1:"+strconv.Itoa(w.Kubelet), "console", w.Console)
	return w, writeFile(filepath.Join(dir, dirRun, name+".pid"), []byte(strconv.Itoa(w.PID)+"\n"), 0o644)
}

// nodeAPI issues worker name's node API certificate in the PKI directory dir, unless it has
// one, and returns its [api] table. The node is reached through its forward on 127.0.0.1.
func nodeAPI(dir, name string) ([]byte, error) {
	if _, err := os.Stat(filepath.Join(dir, pki.DirNodes, name+".crt")); errors.Is(err, os.ErrNotExist) {
		if err := pki.Node(dir, name, []net.IP{net.IPv4(127, 0, 0, 1)}, nil, time.Now()); err != nil {
			return nil, fmt.Errorf("node API certificate: %w", err)
		}
	} else if err != nil {
		return nil, err
	}
	return pki.APITable(dir, name, 0)
}

// workerNodeConfig is worker name's node.toml: its hostname, the join settings, the static
// pods every worker runs, and api (its [api] table, or nothing).
func workerNodeConfig(name string, join []byte, pods map[string]string, api []byte) ([]byte, error) {
	var b bytes.Buffer
	fmt.Fprintf(&b, "hostname = %q\n\n", name)
	b.Write(join)
	if len(pods) > 0 {
		b.WriteString("\n[kubernetes.static_pods]\n")
		for _, f := range slices.Sorted(maps.Keys(pods)) {
			// strconv.Quote of printable text is a valid TOML basic string.
			fmt.Fprintf(&b, "%s = %s\n", strconv.Quote(f), strconv.Quote(pods[f]))
		}
	}
	if len(api) > 0 {
		b.WriteString("\n")
		b.Write(api)
	}
	if _, err := nodeconfig.Parse(name+"/node.toml", b.Bytes()); err != nil {
		return nil, fmt.Errorf("node config: %w", err)
	}
	return b.Bytes(), nil
}

// RebootWorker resets worker name's VM (QMP system_reset: the reset button, so the node
// goes down as it would on a power cut and boots again from its own disk).
func RebootWorker(stateDir, name string) error {
	dir, err := filepath.Abs(stateDir)
	if err != nil {
		return err
	}
	if !workerNameRE.MatchString(name) {
		return fmt.Errorf("reboot %q: not a worker's name (worker-1, worker-2, …)", name)
	}
	if _, ok := running(dir, name); !ok {
		return fmt.Errorf("reboot %s: its VM is not running (pid file %s)", name, filepath.Join(dir, dirRun, name+".pid"))
	}
	if err := qemu.QMP(qemu.QMPSocket(filepath.Join(dir, dirWorkers, name, "run")), "system_reset"); err != nil {
		return fmt.Errorf("reboot %s: %w", name, err)
	}
	return nil
}

// workerNames lists the workers with a pid file in dir, whether they run or not.
func workerNames(dir string) []string {
	pids, _ := filepath.Glob(filepath.Join(dir, dirRun, "worker-*.pid"))
	var names []string
	for _, p := range pids {
		names = append(names, strings.TrimSuffix(filepath.Base(p), ".pid"))
	}
	slices.Sort(names)
	return names
}

// WaitReady waits until every named node is Ready in the API server of stateDir, or timeout.
func WaitReady(ctx context.Context, stateDir string, names []string, timeout time.Duration, log *slog.Logger) error {
	stateDir, err := filepath.Abs(stateDir)
	if err != nil {
		return err
	}
	c, err := AdminClient(stateDir)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pending := slices.Clone(names)
	gone := map[string]int{}
	for {
		var still []string
		for _, n := range pending {
			// A VM that has stopped will not turn Ready: say why now rather than at the timeout.
			// Twice in a row: a QEMU that has just been exec'd may not show its command line yet.
			if _, ok := running(stateDir, n); ok {
				gone[n] = 0
			} else if gone[n]++; gone[n] > 1 {
				if _, err := os.Stat(filepath.Join(stateDir, dirRun, n+".pid")); err == nil {
					return fmt.Errorf("worker %s: its VM has stopped; QEMU's log ends:\n%s\nits console ends:\n%s", n,
						logTail(filepath.Join(stateDir, dirLogs, n+".qemu.log"), 5), logTail(filepath.Join(stateDir, dirLogs, n+".console"), 10))
				}
			}
			ready, why := nodeReady(ctx, c, n)
			if ready {
				log.Info("node Ready", "node", n)
				continue
			}
			still = append(still, n+" ("+why+")")
		}
		if len(still) == 0 {
			return nil
		}
		pending = pending[:0]
		for _, s := range still {
			n, _, _ := strings.Cut(s, " ")
			pending = append(pending, n)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for nodes Ready: %w; not Ready: %s (consoles in %s)", ctx.Err(), strings.Join(still, ", "), filepath.Join(stateDir, dirLogs))
		case <-time.After(3 * time.Second):
		}
	}
}

// nodeReady asks for node name's Ready condition; why says what it is when not true.
func nodeReady(ctx context.Context, c *Client, name string) (bool, string) {
	var n struct {
		Status struct {
			Conditions []struct{ Type, Status, Reason string }
		}
	}
	if err := c.Do(ctx, "GET", "/api/v1/nodes/"+name, nil, &n); err != nil {
		return false, "not registered"
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == "Ready" {
			return cond.Status == "True", cond.Reason
		}
	}
	return false, "no Ready condition yet"
}

// AdminClient is a client of stateDir's API server as the cluster admin.
func AdminClient(stateDir string) (*Client, error) {
	st, err := ReadState(stateDir)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(stateDir, dirPKI, FileCA))
	if err != nil {
		return nil, err
	}
	admin, err := tls.LoadX509KeyPair(filepath.Join(stateDir, dirPKI, FileAdmin+".crt"), filepath.Join(stateDir, dirPKI, FileAdmin+".key"))
	if err != nil {
		return nil, fmt.Errorf("load admin certificate: %w", err)
	}
	return NewClient(st.Server, caPEM, &admin)
}

// Relay copies in to a TCP connection to addr and what comes back to out: what QEMU runs for
// each guest connection to the API server (guestfwd cmd:, the guest's connection on stdin and
// stdout). It returns when the server has finished; the end of in half-closes the connection.
func Relay(ctx context.Context, addr string, in io.Reader, out io.Writer) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("relay to %s: %w", addr, err)
	}
	defer conn.Close()
	go func() {
		io.Copy(conn, in)
		conn.(*net.TCPConn).CloseWrite()
	}()
	if _, err := io.Copy(out, conn); err != nil {
		return fmt.Errorf("relay from %s: %w", addr, err)
	}
	return nil
}
