// Package daemon is `ingot-node runtime`: it reads the containerd-compatible config.toml, opens
// the image store, recovers the runtime's pods and containers, and serves the CRI on the socket
// until SIGTERM or SIGINT. Stopping the daemon leaves pods running in their shims.
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"google.golang.org/grpc"

	"ingot.dev/ingot/runtime/config"
	"ingot.dev/ingot/runtime/cri"
	"ingot.dev/ingot/runtime/images"
	"ingot.dev/ingot/runtime/images/archive"
	"ingot.dev/ingot/runtime/metrics"
)

// DefaultConfig is where the node's runtime configuration lives.
const DefaultConfig = "/etc/ingot/config.toml"

// Main parses flags and runs the daemon; it returns the process exit code.
func Main(args []string) int {
	fs := flag.NewFlagSet("ingot-node runtime", flag.ContinueOnError)
	cfgPath := fs.String("config", DefaultConfig, "containerd-compatible config.toml (missing file: defaults)")
	root := fs.String("root", "", "override the config's root directory")
	state := fs.String("state", "", "override the config's state directory")
	socket := fs.String("socket", "", "override the config's CRI socket path")
	cgroupRoot := fs.String("cgroup-root", "", "parent cgroup of pods that name none (default /ingot.pods); tests use a private one")
	nodeNetNS := fs.String("node-netns", "", "network namespace file the pod network treats as the node's (default: the runtime's own); tests use a private one")
	podNetwork := fs.Bool("pod-network", true, "set up the pod network from the CNI configuration; false: pods get loopback only")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg, err := loadConfig(*cfgPath, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "ingot-node runtime:", err)
		return 1
	}
	if *root != "" {
		cfg.RootDir = *root
	}
	if *state != "" {
		cfg.StateDir = *state
	}
	if *socket != "" {
		cfg.GRPC.Address = *socket
	}
	log = newLogger(os.Stderr, cfg.Log)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	opts := runOptions{cgroupRoot: *cgroupRoot, nodeNetNS: *nodeNetNS, podNetwork: *podNetwork}
	if err := run(ctx, cfg, log, opts); err != nil {
		fmt.Fprintln(os.Stderr, "ingot-node runtime:", err)
		return 1
	}
	return 0
}

func loadConfig(path string, log *slog.Logger) (*config.Config, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		log.Info("no runtime config; using defaults", "path", path)
		return config.Default(), nil
	}
	cfg, warnings, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	for _, w := range warnings {
		log.Warn("config: " + w.String())
	}
	return cfg, nil
}

// Run serves the CRI until ctx ends.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	return run(ctx, cfg, log, runOptions{podNetwork: true})
}

// runOptions are the daemon's settings beyond config.toml (test isolation).
type runOptions struct {
	cgroupRoot string
	nodeNetNS  string
	podNetwork bool
}

func run(ctx context.Context, cfg *config.Config, log *slog.Logger, o runOptions) error {
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	m := metrics.New(metrics.Options{GRPCHistogram: cfg.Metrics.GRPCHistogram})
	store, err := images.Open(filepath.Join(cfg.RootDir, "images"), images.Options{
		MaxConcurrentDownloads: cfg.Images.MaxConcurrentDownloads,
		Hosts:                  registryHosts{&cfg.Registry},
		Logger:                 log,
		OnPull:                 pullObserver(m),
		Unpack: archive.Limits{
			MaxPathLength: cfg.Unpack.MaxPathLength,
			MaxPathDepth:  cfg.Unpack.MaxPathDepth,
			MaxEntries:    int64(cfg.Unpack.MaxEntries),
			MaxBytes:      int64(cfg.Unpack.MaxUncompressedBytes),
		},
	})
	if err != nil {
		return err
	}
	defer store.Close()
	criOpts := cri.Options{
		Root: cfg.RootDir, State: cfg.StateDir, Exe: exe, MaxLogLine: cfg.MaxContainerLogLineSize,
		Images: imageAdapter{store}, Log: log, CgroupRoot: o.cgroupRoot,
		UnsetSeccompProfile: cfg.Containers.UnsetSeccompProfile, DrainExecSyncIOTimeout: cfg.DrainExecSyncIOTimeout,
	}
	if o.podNetwork {
		nw := &network{cfg: cfg, nodeNetNS: o.nodeNetNS, log: log}
		p, err := nw.open(ctx)
		if err != nil {
			return err
		}
		defer nw.close()
		criOpts.Network, criOpts.PodCIDR = p, nw.podCIDR
	}
	srv, err := cri.New(ctx, criOpts)
	if err != nil {
		return err
	}
	defer srv.Close()
	// Before the CRI socket: the URLs Exec, Attach and PortForward hand out must work from the
	// first request on.
	streams, err := srv.ServeStreams(cri.StreamOptions{
		Address: cfg.Stream.Address, Port: cfg.Stream.Port, IdleTimeout: cfg.Stream.IdleTimeout,
		TLS: cfg.Stream.TLS, TLSCertFile: cfg.Stream.TLSCertFile, TLSKeyFile: cfg.Stream.TLSKeyFile,
	})
	if err != nil {
		return err
	}
	defer streams.Close()
	l, err := cri.Listen(cfg.GRPC.Address)
	if err != nil {
		return err
	}
	if cfg.GRPC.UID != 0 || cfg.GRPC.GID != 0 {
		os.Chown(cfg.GRPC.Address, cfg.GRPC.UID, cfg.GRPC.GID)
	}
	m.WatchState(census(srv))
	g := grpc.NewServer(grpc.MaxRecvMsgSize(cfg.GRPC.MaxRecvMessageSize), grpc.MaxSendMsgSize(cfg.GRPC.MaxSendMessageSize),
		grpc.ChainUnaryInterceptor(m.UnaryInterceptor(), logRequests(log)), grpc.ChainStreamInterceptor(m.StreamInterceptor()))
	srv.Register(g)
	ep, err := metrics.Serve(cfg.Metrics.Address, m, log)
	if err != nil {
		l.Close()
		return err
	}
	defer ep.Close()
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(l) }()
	log.Info("CRI runtime serving", "socket", cfg.GRPC.Address, "root", cfg.RootDir, "state", cfg.StateDir, "metrics", cfg.Metrics.Address,
		"streaming", streams.URL())
	select {
	case <-ctx.Done():
		log.Info("stopping the CRI server; pods keep running in their shims")
		g.GracefulStop()
		return nil
	case err := <-errc:
		return fmt.Errorf("serve CRI: %w", err)
	}
}
