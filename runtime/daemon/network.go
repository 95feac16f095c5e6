package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"ingot.dev/ingot/netsetup/cniconf"
	"ingot.dev/ingot/netsetup/cniexec"
	"ingot.dev/ingot/netsetup/podnet"
	"ingot.dev/ingot/runtime/config"
)

// openNetwork reads the CNI configuration (the first conflist in conf_dir, as containerd does;
// none: ingot's default bridge network) and opens the pod network: built in when every plugin of
// the list is one ingot implements, otherwise the plugins' binaries through libcni. A bad
// conflist stops the runtime with the file and field named; pods already running keep their
// network, which lives in their own namespaces.
func openNetwork(ctx context.Context, cfg *config.Config, nodeNetNS string, log *slog.Logger) (podnet.Provider, error) {
	list, err := cniconf.Load(cfg.CNI.ConfDir)
	if errors.Is(err, os.ErrNotExist) {
		log.Info("no CNI configuration; using the built-in default network", "dir", cfg.CNI.ConfDir)
		list = cniconf.Default()
	} else if err != nil {
		return nil, fmt.Errorf("pod network: %w", err)
	}
	if ok, why := list.Native(); !ok {
		log.Info("pod network through CNI plugins", "network", list.Name, "why", why, "bin_dirs", cfg.CNI.BinDirs)
		return cniexec.New(cniexec.Options{Conf: list, BinDirs: cfg.CNI.BinDirs,
			CacheDir: filepath.Join(cfg.RootDir, "cni", "cache"), Log: log})
	}
	n, err := podnet.Open(ctx, podnet.Options{Conf: list, StateDir: filepath.Join(cfg.RootDir, "net"), NodeNetNS: nodeNetNS, Log: log})
	if err != nil {
		return nil, fmt.Errorf("pod network: %w", err)
	}
	log.Info("built-in pod network", "network", list.Name, "subnets", fmt.Sprint(list.Subnets()))
	return n, nil
}
