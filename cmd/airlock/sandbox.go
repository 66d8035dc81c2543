package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/worker"
)

func sandboxCmd(ctx context.Context, cfg config.Config, args []string) error {
	if len(args) == 0 || args[0] != "reconcile" {
		return usageError{"sandbox: want reconcile --name HOST"}
	}
	fs := flag.NewFlagSet("sandbox reconcile", flag.ContinueOnError)
	name := fs.String("name", "local", "hypervisor host name")
	if err := fs.Parse(args[1:]); err != nil {
		return usageError{err.Error()}
	}
	logger := newLogger()
	c, err := dialFor(cfg, logger)
	if err != nil {
		return err
	}
	defer c.Close()
	drv, err := worker.NewDriver(cfg, *name, logger)
	if err != nil {
		return err
	}
	defer drv.Close()
	destroyed, err := drv.Reconcile(ctx, worker.WorkflowLive(ctx, c))
	if err != nil {
		return err
	}
	for _, d := range destroyed {
		fmt.Println("destroyed", d)
	}
	fmt.Printf("%d orphaned sandbox(es) destroyed\n", len(destroyed))
	return nil
}
