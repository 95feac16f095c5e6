// Package critest runs the CRI conformance suite (critest from sigs.k8s.io/cri-tools, built
// unmodified from the cri-tools release whose crictl ingot bundles) against ingot's runtime on this host, and summarises it.
//
// The runtime (ingot-node runtime) and critest run together inside namespaces this package
// creates: a private network namespace that is the node's (only lo, up, until the runtime adds
// its pod bridge, veths and nftables rules, so pod addresses, hostPorts on 127.0.0.1 and
// hostNetwork pods behave as on a node), and, with unshare, a private mount namespace (made
// rshared inside, for the mount propagation specs), a private IPC namespace (critest's `ipcmk`
// segments for the HostIpc specs stay there), a private UTS namespace and a private PID
// namespace whose init is this program's own small init (Inner), never ingot-node, which would
// act as a node's PID 1. Nothing touches the host's network.
//
// Images come from internal/testimages, served by an in-process registry on the host's
// loopback. The runtime reaches it through a relay: a socket listening on 127.0.0.1 inside the
// node's namespace whose connections this process forwards to the registry. The runtime's
// config.toml names the relay as the mirror of every registry critest pulls from.
//
// Everything the run creates is removed when it ends: the pid namespace's death ends every shim
// and container, the mount namespace takes the overlay and shm mounts with it, the run's own
// cgroup root (a --cgroup-root under every cgroup hierarchy) is removed, the node's network
// namespace goes with its pin and the relay's socket, and the state directories go. Only the
// logs directory stays.
//
// It is a test tool: it must never be imported by the node binary.
package critest

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"ingot.dev/ingot/image/bundle"
	"ingot.dev/ingot/image/toolbuild"
	"ingot.dev/ingot/internal/testimages"
	"ingot.dev/ingot/netsetup/netns"
)

// Options configure a run.
type Options struct {
	Node  string // the ingot-node binary for this host's architecture
	Cache string // ingot's cache: critest and the test images are built into it once
	// Logs is where critest.log, report.json and daemon.log are written; "" makes a new
	// directory under the system's temporary directory.
	Logs    string
	Verbose bool     // ginkgo -v: every spec's steps, not only failures
	Args    []string // more critest flags, e.g. -ginkgo.focus=Image
	Timeout time.Duration
	Out     io.Writer // critest's output as it runs; nil discards it
	Log     func(format string, args ...any)
}

// innerConfig is what the namespace init needs; the host side writes it as JSON.
type innerConfig struct {
	Node, Config, Socket, CgroupRoot, DaemonLog string
	Critest                                     string
	Args                                        []string
}

// InnerArg is the first argument with which the program re-executes itself as the namespace init.
const InnerArg = "__critest-init"

// Run builds critest and the test images, runs the suite against the runtime in private
// namespaces and returns the summary. An error means the run itself could not happen or clean up;
// failing specs are in the summary.
func Run(ctx context.Context, o Options) (_ Summary, retErr error) {
	logf := o.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if o.Timeout == 0 {
		o.Timeout = time.Hour
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if os.Geteuid() != 0 {
		return Summary{}, errors.New("critest needs root: it runs the container runtime on this host")
	}
	for _, tool := range []string{"unshare", "nsenter"} {
		if _, err := exec.LookPath(tool); err != nil {
			return Summary{}, fmt.Errorf("critest needs %s (util-linux): %w", tool, err)
		}
	}
	if _, err := os.Stat(o.Node); err != nil {
		return Summary{}, fmt.Errorf("the node binary: %w (build it with make bin/ingot-node-%s)", err, runtime.GOARCH)
	}
	self, err := os.Executable()
	if err != nil {
		return Summary{}, fmt.Errorf("find own executable: %w", err)
	}

	logf("building critest %s (cached after the first time)", bundle.CriToolsVersion)
	bin, err := BuildCritest(ctx, o.Cache, "")
	if err != nil {
		return Summary{}, err
	}
	logf("building the test images (cached after the first time)")
	imgs, err := testimages.Build(ctx, testimages.Options{Cache: o.Cache})
	if err != nil {
		return Summary{}, err
	}
	addr, stop, err := testimages.Serve(ctx, imgs)
	if err != nil {
		return Summary{}, err
	}
	defer stop()

	dir, err := os.MkdirTemp("", "ingot-critest-run-")
	if err != nil {
		return Summary{}, err
	}
	defer os.RemoveAll(dir)
	// The runtime's root is below: containers in user namespaces must be able to walk to it.
	if err := os.Chmod(dir, 0o711); err != nil {
		return Summary{}, err
	}
	if o.Logs == "" {
		if o.Logs, err = os.MkdirTemp("", "ingot-critest-logs-"); err != nil {
			return Summary{}, err
		}
	} else if err := os.MkdirAll(o.Logs, 0o755); err != nil {
		return Summary{}, err
	}
	ic := innerConfig{
		Node: o.Node, Config: filepath.Join(dir, "config.toml"), Socket: filepath.Join(dir, "ingot.sock"),
		CgroupRoot: "/ingot-critest-" + randomHex(6), DaemonLog: filepath.Join(o.Logs, "daemon.log"),
		Critest: bin,
	}
	report := filepath.Join(o.Logs, "report.json")
	os.Remove(report)
	ic.Args = Args(report, o.Verbose, o.Args)
	nodeNS := filepath.Join(dir, "node.netns")
	if err := nodeNetNS(nodeNS); err != nil {
		return Summary{}, err
	}
	rl, err := startRelay(nodeNS, addr)
	if err != nil {
		return Summary{}, errors.Join(err, netns.Remove(nodeNS))
	}
	// The relay's socket holds the namespace too: close it before unpinning.
	defer func() { retErr = errors.Join(retErr, rl.Close(), netns.Remove(nodeNS)) }()
	if err := os.WriteFile(ic.Config, []byte(configTOML(dir, ic.Socket, rl.Addr())), 0o644); err != nil {
		return Summary{}, err
	}
	spec, _ := json.Marshal(ic)
	specPath := filepath.Join(dir, "init.json")
	if err := os.WriteFile(specPath, spec, 0o600); err != nil {
		return Summary{}, err
	}

	logf("running critest; logs in %s", o.Logs)
	runErr := runNamespaced(ctx, o, self, specPath, nodeNS)
	cgErr := removeCgroups(ic.CgroupRoot)
	sum, repErr := ReadReport(report)
	if repErr != nil {
		return sum, errors.Join(runErr, repErr, cgErr)
	}
	return sum, cgErr
}

// runNamespaced runs the namespace init (this program, InnerArg) under unshare in the node's
// network namespace, copying its output to o.Out and critest.log.
func runNamespaced(ctx context.Context, o Options, self, spec, nodeNS string) error {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	logFile, err := os.Create(filepath.Join(o.Logs, "critest.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	out := io.MultiWriter(o.Out, logFile)
	// nsenter execs unshare in the node's network namespace (no fork: the pid is unshare's).
	// --kill-child: if unshare dies, so does the namespace init, and with it every process of
	// the pid namespace.
	cmd := exec.CommandContext(ctx, "nsenter", "--net="+nodeNS, "--",
		"unshare", "--mount", "--propagation", "private", "--ipc", "--uts",
		"--pid", "--fork", "--mount-proc", "--kill-child", "--", self, InnerArg, spec)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 30 * time.Second
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == exitSpecsFailed {
		return nil // critest ran; some specs failed: the report says which
	}
	if err != nil {
		return fmt.Errorf("critest in private namespaces: %w", err)
	}
	return nil
}

// Args are critest's flags for a run that writes ginkgo's JSON report to report: no colour, the
// spec skipped by name (SkipArgs), -ginkgo.v when verbose, then the caller's own flags.
func Args(report string, verbose bool, extra []string) []string {
	args := append([]string{"-ginkgo.no-color", "-ginkgo.json-report=" + report}, SkipArgs()...)
	if verbose {
		args = append(args, "-ginkgo.v")
	}
	return append(args, extra...)
}

// configTOML is the runtime's config.toml: state under dir, the test registry (as the runtime
// reaches it) as the mirror of every registry critest names.
func configTOML(dir, socket, registry string) string {
	return fmt.Sprintf("version = 2\nroot = %q\nstate = %q\n\n[grpc]\n  address = %q\n\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), socket) + testimages.MirrorsTOML(registry)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// BuildCritest returns the path of critest for arch ("" or the host's: the one `make critest`
// runs), building it into cache if needed. critest is not a main package but cri-tools' test
// binary (cmd/critest holds only a _test.go file), so it is compiled with `go test -c`, the way
// cri-tools' own Makefile builds it, with CGO_ENABLED=0, so the binary for the other architecture
// is a cross build that runs inside that architecture's VM. It takes a few minutes cold.
func BuildCritest(ctx context.Context, cache, arch string) (string, error) {
	m := bundle.CriToolsModule
	dir := "critest-" + bundle.CriToolsVersion
	if arch == runtime.GOARCH {
		arch = ""
	}
	if arch != "" {
		dir += "-" + arch
	}
	bins, err := toolbuild.Build{Module: m, Version: bundle.CriToolsVersion, Pkgs: []string{m + "/cmd/critest"}, Test: true, Arch: arch}.
		Run(ctx, filepath.Join(cache, "tools", dir))
	if err != nil {
		return "", fmt.Errorf("build critest %s for %s: %w", bundle.CriToolsVersion, cmp.Or(arch, runtime.GOARCH), err)
	}
	return bins[0], nil
}
