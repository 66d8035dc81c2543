package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/airlock-dev/airlock/activities/changes"
	"github.com/airlock-dev/airlock/activities/hv"
	"github.com/airlock-dev/airlock/activities/remote"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/worker"
)

func sandboxCmd(ctx context.Context, cfg config.Config, args []string) error {
	if len(args) == 0 {
		return usageError{"sandbox: want diff or reconcile"}
	}
	switch args[0] {
	case "reconcile":
		return sandboxReconcile(ctx, cfg, args[1:])
	case "diff":
		return sandboxDiff(ctx, cfg, args[1:])
	}
	return usageError{fmt.Sprintf("sandbox: unknown subcommand %q (want diff or reconcile)", args[0])}
}

func sandboxReconcile(ctx context.Context, cfg config.Config, args []string) error {
	fs := flag.NewFlagSet("sandbox reconcile", flag.ContinueOnError)
	name := fs.String("name", "local", "hypervisor host name")
	if err := fs.Parse(args); err != nil {
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

// sandboxDiff prints the classified diff between two points of a running
// sandbox on this host:
//
//	airlock sandbox diff SANDBOX --from SNAPSHOT [--to SNAPSHOT|now] [--json]
//
// It takes an in-guest manifest at each point (see hv.DiffSnapshots):
// the sandbox is saved in a temporary snapshot, reverted to --from, then
// to --to, and finally back to where it was. Limits: it must run on the
// sandbox's hypervisor host (sandbox networks are host-local); the
// sandbox must be running and the snapshots must be Airlock's (internal,
// with memory); no task should be using the sandbox meanwhile (its clock
// jumps and its SSH connections are re-dialled); unified diffs are shown
// for text files under the configuration trees (hv.BaselineTrees) only.
// Nothing is stored in the audit store.
func sandboxDiff(ctx context.Context, cfg config.Config, args []string) error {
	fs := flag.NewFlagSet("sandbox diff", flag.ContinueOnError)
	from := fs.String("from", "", "snapshot to diff from (required)")
	to := fs.String("to", hv.Now, `snapshot to diff to, or "now" for the sandbox's current state`)
	asJSON := fs.Bool("json", false, "print the classified diff as JSON")
	host := fs.String("name", "local", "hypervisor host name (for logs)")
	timeout := fs.Duration("timeout", 20*time.Minute, "give up after this long")
	var sbx string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sbx, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return usageError{err.Error()}
	}
	if sbx == "" && fs.NArg() > 0 {
		sbx = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("sandbox diff: unexpected argument %q", fs.Arg(0))}
	}
	if sbx == "" || *from == "" {
		return usageError{"sandbox diff: want SANDBOX --from SNAPSHOT [--to SNAPSHOT|now] [--json]"}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	logger := newLogger()
	drv, err := worker.NewDriver(cfg, *host, logger)
	if err != nil {
		return err
	}
	defer drv.Close()
	cas, err := remote.LoadOrCreateCAs(cfg.StateDir)
	if err != nil {
		return fmt.Errorf("sandbox diff: %w", err)
	}
	pool := remote.NewPool(&remote.Dialer{CAs: cas}, remote.PoolOptions{})
	defer pool.Close()
	acts := &hv.Activities{Host: *host, HV: drv, CAs: cas, Pool: pool, Artifacts: &hv.MemArtifacts{},
		Baselines: hv.NewImageBaselines(cfg.StateDir, cfg.Images.CacheDir)}

	fmt.Fprintf(os.Stderr, "diffing %s from %s to %s (the sandbox is reverted to each point and then returned to its current state)…\n", sbx, *from, *to)
	start := time.Now()
	c, err := hv.SnapshotChanges(ctx, acts, hv.SnapshotDiffInput{Sandbox: sbx, From: *from, To: *to})
	if err != nil {
		return fmt.Errorf("sandbox diff: %w", err)
	}
	fmt.Fprintf(os.Stderr, "done in %.1fs\n", time.Since(start).Seconds())
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(c)
	}
	return changes.Format(os.Stdout, c)
}
