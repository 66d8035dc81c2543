// Package worker decides which workflows and activities register on which
// task queue. There is one RunXxx per worker kind (DESIGN.md §1):
//
//	RunControl     queue "airlock":             workflows, store writes, planning
//	RunHypervisor  queue "airlock.hv.<host>":    libvirt and SSH on that host
//	RunApply       queue "airlock.apply.<env>":  ansible-playbook against an environment
//
// Each RunXxx blocks until ctx is done.
package worker

import (
	"context"
	"fmt"

	"go.temporal.io/sdk/client"
	sdkworker "go.temporal.io/sdk/worker"

	"github.com/airlock-dev/airlock/activities/agent"
	"github.com/airlock-dev/airlock/activities/apply"
	"github.com/airlock-dev/airlock/activities/catalog"
	"github.com/airlock-dev/airlock/activities/playbook"
	storeact "github.com/airlock-dev/airlock/activities/store"
	"github.com/airlock-dev/airlock/config"
	"github.com/airlock-dev/airlock/store"
	"github.com/airlock-dev/airlock/workflows"
)

// ControlDeps are the parts the control worker's activities need.
type ControlDeps struct {
	Config config.Config
	Store  *store.Store
}

// RegisterControl registers the AgentTask workflow and the control-queue
// activities on r.
func RegisterControl(r sdkworker.Registry, d ControlDeps) {
	r.RegisterWorkflowWithOptions(workflows.AgentTask, workflows.RegisterOptions())
	r.RegisterActivity(&catalog.Activities{Config: d.Config})
	r.RegisterActivity(&storeact.Activities{Store: d.Store})
	r.RegisterActivity(&playbook.Activities{Artifacts: d.Store})
	r.RegisterActivity(&agent.LLM{Config: d.Config.LLM}) // LLMStep; the key is read from the env at call time
}

// RunControl serves the control queue.
func RunControl(ctx context.Context, c client.Client, d ControlDeps) error {
	w := sdkworker.New(c, workflows.TaskQueue, sdkworker.Options{})
	RegisterControl(w, d)
	return run(ctx, w, "control")
}

// RunApply serves airlock.apply.<env>.
func RunApply(ctx context.Context, c client.Client, env string, a *apply.Activities) error {
	w := sdkworker.New(c, apply.Queue(env), sdkworker.Options{MaxConcurrentActivityExecutionSize: 4})
	w.RegisterActivity(a)
	return run(ctx, w, "apply "+env)
}

func run(ctx context.Context, w sdkworker.Worker, what string) error {
	if err := w.Start(); err != nil {
		return fmt.Errorf("start %s worker: %w", what, err)
	}
	<-ctx.Done()
	w.Stop()
	return nil
}
