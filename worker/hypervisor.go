package worker

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/airlock-dev/airlock/activities/hv"
	"github.com/airlock-dev/airlock/activities/remote"
	"github.com/airlock-dev/airlock/activities/sandbox"
	"github.com/airlock-dev/airlock/activities/sandbox/virt"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/store"
)

// HypervisorDeps are what the hypervisor worker needs.
type HypervisorDeps struct {
	Config config.Config
	Host   string
	Store  *store.Store
	Logger *slog.Logger
}

// NewDriver opens the libvirt driver configured for this host.
func NewDriver(cfg config.Config, host string, logger *slog.Logger) (*virt.Driver, error) {
	return virt.New(virt.Config{
		URI:          cfg.Hypervisor.URI,
		Host:         host,
		ImageCache:   cfg.Images.CacheDir,
		StateDir:     cfg.StateDir,
		Network:      cfg.Hypervisor.Network,
		DomainType:   cfg.Hypervisor.DomainType,
		MemoryMiB:    cfg.Hypervisor.MemoryMiB,
		MaxSandboxes: cfg.Hypervisor.MaxSandboxes,
		Logf:         func(f string, a ...any) { logger.Info(fmt.Sprintf(f, a...), "host", host) },
	})
}

// NewHypervisorActivities builds the host queue's activities.
func NewHypervisorActivities(hvd sandbox.Hypervisor, d HypervisorDeps) (*hv.Activities, error) {
	cas, err := remote.LoadOrCreateCAs(d.Config.StateDir)
	if err != nil {
		return nil, err
	}
	pool := remote.NewPool(&remote.Dialer{CAs: cas}, remote.PoolOptions{})
	return &hv.Activities{Host: d.Host, HV: hvd, CAs: cas, Pool: pool, Artifacts: d.Store,
		Baselines: hv.NewImageBaselines(d.Config.StateDir, d.Config.Images.CacheDir)}, nil
}

// RunHypervisor serves airlock.hv.<host>: it prepares the fast-start
// templates in the background, reconciles orphaned sandboxes every few
// minutes, and runs the host's activities.
func RunHypervisor(ctx context.Context, c client.Client, d HypervisorDeps) error {
	drv, err := NewDriver(d.Config, d.Host, d.Logger)
	if err != nil {
		return fmt.Errorf("hypervisor %s: %w", d.Host, err)
	}
	defer drv.Close()
	acts, err := NewHypervisorActivities(drv, d)
	if err != nil {
		return err
	}
	defer acts.Pool.Close()
	for _, img := range d.Config.Images.Names {
		go func(img string) {
			start := time.Now()
			if _, err := drv.EnsureTemplate(ctx, img); err != nil {
				d.Logger.Warn("no fast-start template; sandboxes cold-boot", "image", img, "error", err)
				return
			}
			d.Logger.Info("fast-start template ready", "image", img, "took", time.Since(start).String())
		}(img)
	}
	go reconcileLoop(ctx, c, drv, d.Logger)

	w := sdkworker.New(c, sandbox.Queue(d.Host), sdkworker.Options{
		// Only about two TCG guests can work at once on two cores.
		MaxConcurrentActivityExecutionSize: 8,
	})
	w.RegisterActivity(acts)
	return run(ctx, w, "hypervisor "+d.Host)
}

// reconcileLoop destroys sandboxes whose owning workflow is not running.
func reconcileLoop(ctx context.Context, c client.Client, drv *virt.Driver, logger *slog.Logger) {
	t := time.NewTicker(5 * time.Minute)
	defer t.Stop()
	for {
		destroyed, err := drv.Reconcile(ctx, WorkflowLive(ctx, c))
		if err != nil {
			logger.Warn("reconcile", "error", err)
		} else if len(destroyed) > 0 {
			logger.Info("reconciled orphaned sandboxes", "destroyed", destroyed)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// WorkflowLive reports whether a workflow ID has a running execution.
func WorkflowLive(ctx context.Context, c client.Client) func(owner string) (bool, error) {
	return func(owner string) (bool, error) {
		resp, err := c.DescribeWorkflowExecution(ctx, owner, "")
		if err != nil {
			if _, ok := err.(*serviceerror.NotFound); ok {
				return false, nil
			}
			return false, err
		}
		return resp.GetWorkflowExecutionInfo().GetStatus() == enums.WORKFLOW_EXECUTION_STATUS_RUNNING, nil
	}
}
