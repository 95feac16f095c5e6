package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"ingot.dev/ingot/cluster"
	"ingot.dev/ingot/image/manifest"
	"ingot.dev/ingot/internal/cachedir"
	"ingot.dev/ingot/qemu"
)

const clusterUsage = `usage: ingot cluster up [--state DIR] [--api-port N] [--token-ttl D]
                        [--workers N [--arch A] [--image DIR] [--net user|restricted]
                         [--boot direct|uefi] [--pki DIR] ...]
       ingot cluster reboot [--state DIR] WORKER
       ingot cluster down [--state DIR] [--keep]

up starts a Kubernetes control plane on 127.0.0.1 — etcd, kube-apiserver and
kube-controller-manager, built into the cache on first use — with its certificates and a
bootstrap token, and writes DIR/admin.kubeconfig (for kubectl) and DIR/node.toml (how a worker
joins). With --workers N it boots N worker VMs (worker-1 … worker-N) from a worker image, which
join, and waits until their nodes are Ready; each runs kube-proxy as a static pod. reboot resets
a worker's VM. down stops the VMs and the control plane and removes
DIR unless --keep. See docs/cluster.md.
`

func cmdCluster(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, clusterUsage)
		return errors.New("cluster: want up, reboot or down")
	}
	switch args[0] {
	case "up":
		return cmdClusterUp(ctx, args[1:])
	case "down":
		return cmdClusterDown(args[1:])
	case "reboot":
		fs, state := clusterFlags("reboot")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return errors.New("cluster reboot: want one worker's name, e.g. worker-1")
		}
		return cluster.RebootWorker(*state, fs.Arg(0))
	case "kubelet-proxy":
		return cmdClusterKubeletProxy(ctx, args[1:])
	case "relay":
		// What QEMU runs for each worker connection to the API server (not meant for people).
		if len(args) != 2 {
			return errors.New("cluster relay: want HOST:PORT")
		}
		return cluster.Relay(ctx, args[1], os.Stdin, os.Stdout)
	case "-h", "--help", "help":
		fmt.Print(clusterUsage)
		return nil
	}
	return fmt.Errorf("cluster: unknown subcommand %q (want up, reboot or down)", args[0])
}

func clusterFlags(name string) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("ingot cluster "+name, flag.ContinueOnError)
	state := fs.String("state", cluster.DefaultStateDir(), "state directory: certificates, etcd data, logs, pid files")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), clusterUsage+"\n")
		fs.PrintDefaults()
	}
	return fs, state
}

func cmdClusterUp(ctx context.Context, args []string) error {
	fs, state := clusterFlags("up")
	apiPort := fs.Int("api-port", 0, "the API server's port on 127.0.0.1 (0: a free one)")
	ttl := fs.Duration("token-ttl", cluster.DefaultTokenTTL, "how long the bootstrap token lets nodes join")
	cache := fs.String("cache", cachedir.Default(), "cache directory (the control plane's binaries)")
	workers := fs.Int("workers", 0, "worker VMs to boot and join (0: none; join your own with node.toml)")
	archName := fs.String("arch", runtime.GOARCH, "the workers' architecture: amd64 or arm64")
	image := fs.String("image", "", "the workers' image, an `ingot build --profile worker` output (default out/worker-ARCH)")
	netMode := fs.String("net", qemu.NetUser, "the workers' network: user (they reach the internet, for registries) or restricted (only the forwards)")
	memory := fs.Int("memory", cluster.DefaultWorkerMemory, "each worker's RAM in MiB")
	var guestFwd multiFlag
	fs.Var(&guestFwd, "guestfwd", "an extra QEMU guestfwd rule for every worker (repeatable), e.g. a local registry")
	kubeProxy := fs.String("kube-proxy-image", cluster.DefaultKubeProxyImage, "the image of the kube-proxy static pod every worker runs (none: no kube-proxy)")
	wait := fs.Duration("wait", 15*time.Minute, "how long to wait for the workers' nodes to be Ready")
	boot := fs.String("boot", qemu.BootDirect, "how the workers boot: direct (kernel and initramfs) or uefi (from the disk, as machines do; image swaps need it)")
	pkiDir := fs.String("pki", "", "an `ingot pki init` directory: each worker gets a node API certificate from it and serves the node API on a forwarded port")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("cluster up: unexpected argument %q", fs.Arg(0))
	}
	dir, err := filepath.Abs(*state)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cluster up: %w", err)
	}
	if *workers > 0 {
		if *image == "" {
			*image = filepath.Join("out", "worker-"+*archName)
		}
		m, err := manifest.Read(*image)
		if err != nil {
			return fmt.Errorf("cluster up: workers' image: %w (make cluster builds it)", err)
		}
		if m.Arch != *archName {
			return fmt.Errorf("cluster up: image %s is for %s, not --arch %s", *image, m.Arch, *archName)
		}
	}
	pods := map[string]string{}
	if *kubeProxy != "none" {
		kp, err := cluster.KubeProxyPod(*kubeProxy, cluster.PodCIDR)
		if err != nil {
			return fmt.Errorf("cluster up: %w", err)
		}
		pods[cluster.KubeProxyManifest] = kp
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	start := time.Now()
	log.Info("building the control plane (minutes the first time, cached after)", "cache", *cache)
	bins, err := cluster.Build(ctx, *cache)
	if err != nil {
		return fmt.Errorf("cluster up: %w", err)
	}
	log.Info("control plane binaries ready", "took", time.Since(start).Round(time.Second))
	st, err := cluster.Up(ctx, cluster.Options{
		StateDir: dir, Binaries: bins, APIPort: *apiPort, TokenTTL: *ttl, Log: log,
		ProxyCommand: []string{exe, "cluster", "kubelet-proxy", "--state", dir},
	})
	if err != nil {
		return err
	}
	fmt.Printf(`API server   %s (guests: %s)
kubeconfig   export KUBECONFIG=%s
kubectl      %s
join config  %s
state        %s (ingot cluster down --state %s)
`, st.Server, st.GuestServer, filepath.Join(dir, cluster.FileAdminConfig), bins.Kubectl, filepath.Join(dir, cluster.FileNodeConfig), dir, dir)
	if *workers == 0 {
		return nil
	}
	ws, err := cluster.StartWorkers(ctx, dir, cluster.WorkerOptions{
		Count: *workers, Image: *image, Memory: *memory, Net: *netMode, GuestFwd: guestFwd,
		RelayCommand: []string{exe, "cluster", "relay"}, StaticPods: pods, Boot: *boot, PKI: *pkiDir, Log: log,
	})
	if err != nil {
		return fmt.Errorf("cluster up: %w (ingot cluster down --state %s stops what runs)", err, dir)
	}
	var names []string
	for _, w := range ws {
		names = append(names, w.Name)
		api := ""
		if w.API != 0 {
			api = fmt.Sprintf(", node API on 127.0.0.1:%d (ingot ctl --node 127.0.0.1:%d --pki %s)", w.API, w.API, *pkiDir)
		}
		fmt.Printf("%-12s %s, kubelet on 127.0.0.1:%d%s, console %s\n", w.Name, w.IP, w.Kubelet, api, w.Console)
	}
	if err := cluster.WaitReady(ctx, dir, names, *wait, log); err != nil {
		return fmt.Errorf("cluster up: %w", err)
	}
	fmt.Printf("ready        %d node(s) Ready %s after start\n", len(names), time.Since(start).Round(time.Second))
	return nil
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, " ") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func cmdClusterDown(args []string) error {
	fs, state := clusterFlags("down")
	keep := fs.Bool("keep", false, "keep the state directory (certificates, token, etcd data) for the next up")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("cluster down: unexpected argument %q", fs.Arg(0))
	}
	return cluster.Down(*state, *keep)
}

// cmdClusterKubeletProxy is the process up starts to carry the API server's connections to
// kubelets (see cluster.KubeletProxy); it is not meant to be run by hand.
func cmdClusterKubeletProxy(ctx context.Context, args []string) error {
	fs, state := clusterFlags("kubelet-proxy")
	if err := fs.Parse(args); err != nil {
		return err
	}
	return cluster.ServeKubeletProxy(ctx, *state, slog.New(slog.NewTextHandler(os.Stderr, nil)))
}
