package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/temporal"
	sdkworker "go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/airlock-dev/airlock/activities/sandbox"
	"github.com/airlock-dev/airlock/testsuite"
)

// sshExecLoopInput asks sshExecLoop for n Exec activities in one sandbox.
type sshExecLoopInput struct {
	Sandbox string `json:"sandbox"`
	N       int    `json:"n"`
}

// sshExecLoop runs `true` n times through the Exec activity, one after the
// other, as the agent loop does, and returns each round trip as the
// workflow sees it: from the workflow task that scheduled the activity to
// the one that got its result (workflow.Now is the task's start time).
func sshExecLoop(ctx workflow.Context, in sshExecLoopInput) ([]time.Duration, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout:    time.Minute,
		ScheduleToStartTimeout: time.Minute,
		RetryPolicy:            &temporal.RetryPolicy{MaximumAttempts: 1},
	})
	out := make([]time.Duration, 0, in.N)
	for range in.N {
		t0 := workflow.Now(ctx)
		var res sandbox.ExecResult
		if err := workflow.ExecuteActivity(ctx, "Exec", sandbox.ExecInput{Sandbox: in.Sandbox, Script: "true", Timeout: 30 * time.Second}).Get(ctx, &res); err != nil {
			return out, err
		}
		if res.ExitCode != 0 {
			return out, fmt.Errorf("`true` exited %d: %s", res.ExitCode, res.Output)
		}
		out = append(out, workflow.Now(ctx).Sub(t0))
	}
	return out, nil
}

// sshTemporalMethod starts a Temporal dev server from ./bin/temporal and a
// worker serving the hypervisor activities (over the benchmark's pool) and
// sshExecLoop. Without the CLI it returns nil and the reason.
func sshTemporalMethod(b *testing.B, e *sbxEnv, name string) (*sshMethod, string) {
	b.Helper()
	bin := os.Getenv("AIRLOCK_TEMPORAL_BIN")
	if bin == "" {
		bin = filepath.Join(testsuite.RepoRoot(), "bin", "temporal")
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Sprintf("no temporal CLI at %s (make temporal)", bin)
	}
	tp := testsuite.StartTemporal(b)
	queue := "bench-ssh-" + e.runID
	w := sdkworker.New(tp.Client, queue, sdkworker.Options{})
	w.RegisterWorkflowWithOptions(sshExecLoop, workflow.RegisterOptions{Name: "BenchSSHExecLoop"})
	w.RegisterActivity(e.acts)
	if err := w.Start(); err != nil {
		b.Fatalf("temporal worker: %v", err)
	}
	b.Cleanup(w.Stop)
	runs := 0
	return &sshMethod{
		name: "temporal",
		what: "Exec activity scheduled by a workflow (dev server)",
		batch: func(ctx context.Context, n int) ([]time.Duration, error) {
			runs++
			run, err := tp.Client.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
				ID: fmt.Sprintf("bench-ssh-%s-%d", e.runID, runs), TaskQueue: queue,
			}, "BenchSSHExecLoop", sshExecLoopInput{Sandbox: name, N: n})
			if err != nil {
				return nil, fmt.Errorf("start workflow: %w", err)
			}
			var ds []time.Duration
			if err := run.Get(ctx, &ds); err != nil {
				return nil, fmt.Errorf("workflow: %w", err)
			}
			return ds, nil
		},
	}, ""
}
