package workflows

import (
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/airlock-dev/airlock/activities/apply"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

// Activity names. Workers register the activity structs, whose method names
// are these; the workflow refers to them by name so that it links none of
// the worker-side code (libvirt, SSH, SQL).
const (
	// control queue
	ActCatalog          = "Catalog"
	ActRecordEvent      = "RecordEvent"
	ActUpsertTask       = "UpsertTask"
	ActGeneratePlaybook = "GeneratePlaybook"
	ActPlanFromEdit     = "PlanFromEdit"
	// hypervisor queue
	ActCapacity        = "Capacity"
	ActCreateSandbox   = "CreateSandbox"
	ActDestroySandbox  = "DestroySandbox"
	ActExec            = "Exec"
	ActWriteFile       = "WriteFile"
	ActCreateSnapshot  = "CreateSnapshot"
	ActRestoreSnapshot = "RestoreSnapshot"
	ActTakeManifest    = "TakeManifest"
	ActCaptureChanges  = "CaptureChanges"
	ActVerifyPlaybook  = "VerifyPlaybook"
	// apply queue
	ActApplyPlaybook = "ApplyPlaybook"
)

// Error types that are never retried.
const (
	ErrTypeBadInput = "BadInput"
	// ErrTypeNoCapacity: the host has no room; a human may approve an
	// overcommit.
	ErrTypeNoCapacity = "NoCapacity"
)

// Event is one audit record. The store keys it by workflow, activity ID
// and attempt, so a retried RecordEvent never adds a second row.
type Event struct {
	WorkflowID string         `json:"workflow_id"`
	Seq        int32          `json:"seq"` // order of recording within the task
	Kind       string         `json:"kind"`
	Actor      string         `json:"actor,omitempty"`
	At         time.Time      `json:"at"`
	Data       map[string]any `json:"data,omitempty"`
	ArtifactID string         `json:"artifact_id,omitempty"`
}

// TaskRecord mirrors workflow state into the store for lists.
type TaskRecord struct {
	WorkflowID string    `json:"workflow_id"`
	RunID      string    `json:"run_id"`
	Goal       string    `json:"goal"`
	Source     string    `json:"source"`
	StartedBy  string    `json:"started_by"`
	Target     string    `json:"target"`
	Phase      string    `json:"phase"`
	PlanHash   string    `json:"plan_hash,omitempty"`
	UpdatedAt  time.Time `json:"updated_at"` // workflow.Now(): orders mirror writes
}

var noRetryBadInput = []string{ErrTypeBadInput}

// controlCtx runs short store and planning activities on the control queue.
func controlCtx(ctx workflow.Context, timeout time.Duration) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           TaskQueue,
		StartToCloseTimeout: timeout,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        time.Minute,
			NonRetryableErrorTypes: noRetryBadInput,
		},
	})
}

// storeCtx retries store writes for a long time: Postgres may be down for
// a while and no audit row may be lost.
func storeCtx(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              TaskQueue,
		StartToCloseTimeout:    30 * time.Second,
		ScheduleToCloseTimeout: 24 * time.Hour,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        500 * time.Millisecond,
			BackoffCoefficient:     2,
			MaximumInterval:        30 * time.Second,
			NonRetryableErrorTypes: noRetryBadInput,
		},
	})
}

// hostCtx runs an activity on the hypervisor host's queue. A dead host
// shows up as a ScheduleToStart timeout instead of an endless wait.
func hostCtx(ctx workflow.Context, host string, timeout time.Duration, attempts int32) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              sandbox.Queue(host),
		ScheduleToStartTimeout: 2 * time.Minute,
		StartToCloseTimeout:    timeout,
		HeartbeatTimeout:       heartbeatFor(timeout),
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        2 * time.Second,
			BackoffCoefficient:     2,
			MaximumInterval:        30 * time.Second,
			MaximumAttempts:        attempts,
			NonRetryableErrorTypes: noRetryBadInput,
		},
	})
}

// applyCtx runs ansible-playbook on the environment's apply worker. The
// real run is not retried automatically: a half-applied change needs a
// human, not a second blind attempt.
func applyCtx(ctx workflow.Context, env string, attempts int32) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:              apply.Queue(env),
		ScheduleToStartTimeout: 10 * time.Minute,
		StartToCloseTimeout:    30 * time.Minute,
		HeartbeatTimeout:       2 * time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:        5 * time.Second,
			MaximumAttempts:        attempts,
			NonRetryableErrorTypes: noRetryBadInput,
		},
	})
}

func heartbeatFor(timeout time.Duration) time.Duration {
	if timeout <= 30*time.Second {
		return 0
	}
	return 30 * time.Second
}
