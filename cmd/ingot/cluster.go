package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"ingot.dev/ingot/cluster"
	"ingot.dev/ingot/internal/cachedir"
)

const clusterUsage = `usage: ingot cluster up [--state DIR] [--api-port N] [--token-ttl D]
       ingot cluster down [--state DIR] [--keep]

up starts a Kubernetes control plane on 127.0.0.1 — etcd, kube-apiserver and
kube-controller-manager, built into the cache on first use — with its certificates and a
bootstrap token, and writes DIR/admin.kubeconfig (for kubectl) and DIR/node.toml (how a worker
joins). down stops it and removes DIR unless --keep. See docs/cluster.md.
`

func cmdCluster(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, clusterUsage)
		return errors.New("cluster: want up or down")
	}
	switch args[0] {
	case "up":
		return cmdClusterUp(ctx, args[1:])
	case "down":
		return cmdClusterDown(args[1:])
	case "kubelet-proxy":
		return cmdClusterKubeletProxy(ctx, args[1:])
	case "-h", "--help", "help":
		fmt.Print(clusterUsage)
		return nil
	}
	return fmt.Errorf("cluster: unknown subcommand %q (want up or down)", args[0])
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
join config  %s
state        %s (ingot cluster down --state %s)
`, st.Server, st.GuestServer, filepath.Join(dir, cluster.FileAdminConfig), filepath.Join(dir, cluster.FileNodeConfig), dir, dir)
	return nil
}

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
