package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/worker"
)

// prodCmd manages prod-web-1: `up` boots it (once defined, it keeps its
// host key, which is pinned in known_hosts) and `down` removes it.
func prodCmd(ctx context.Context, cfg config.Config, args []string) error {
	if len(args) != 1 || (args[0] != "up" && args[0] != "down") {
		return usageError{"prod: want up or down"}
	}
	logger := newLogger()
	drv, err := worker.NewDriver(cfg, "local", logger)
	if err != nil {
		return err
	}
	defer drv.Close()
	dir := filepath.Join(cfg.StateDir, "prod")
	if args[0] == "down" {
		if err := drv.DestroyProduction(ctx, worker.ProdName); err != nil {
			return err
		}
		fmt.Printf("%s removed\n", worker.ProdName)
		return os.RemoveAll(dir)
	}
	vm, err := worker.EnsureProdVM(ctx, cfg.StateDir, drv)
	if err != nil {
		return err
	}
	fmt.Printf("%s is running at %s (host key pinned in %s)\n", worker.ProdName, vm.IP, vm.KnownHosts)
	return nil
}
