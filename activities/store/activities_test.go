package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/workflow"

	storeact "github.com/airlock-dev/airlock/activities/store"
	"github.com/airlock-dev/airlock/store"
	"github.com/airlock-dev/airlock/store/audit"
	"github.com/airlock-dev/airlock/store/storetest"
)

var _ storeact.Backend = (*store.Store)(nil)

type env struct {
	ctx context.Context
	st  *store.Store
	act *storeact.Activities
}

func setup(t *testing.T, dsn string) env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	st, err := store.Open(ctx, dsn)
	require.NoError(t, err)
	t.Cleanup(st.Close)
	return env{ctx: ctx, st: st, act: &storeact.Activities{Store: st}}
}

func (e env) activityEnv() *testsuite.TestActivityEnvironment {
	var s testsuite.WorkflowTestSuite
	ae := s.NewTestActivityEnvironment()
	ae.RegisterActivity(e.act)
	return ae
}

func requireRetryable(t *testing.T, err error, retryable bool) *temporal.ApplicationError {
	t.Helper()
	require.Error(t, err)
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr), "want an ApplicationError, got %T: %v", err, err)
	require.Equal(t, !retryable, appErr.NonRetryable(), "error: %v", err)
	return appErr
}

func TestActivitiesWrite(t *testing.T) {
	e := setup(t, storetest.Start(t))
	ae := e.activityEnv()

	val, err := ae.ExecuteActivity(e.act.StoreArtifact, storeact.StoreArtifactInput{Kind: "playbook", Content: []byte("- hosts: web\n")})
	require.NoError(t, err)
	var ref storeact.ArtifactRef
	require.NoError(t, val.Get(&ref))
	require.Equal(t, int64(13), ref.Size)

	_, err = ae.ExecuteActivity(e.act.RecordEvent, storeact.RecordEventInput{
		Kind: audit.KindPlaybook, Actor: "airlock", ArtifactID: ref.ID, Data: json.RawMessage(`{"version":1}`),
	})
	require.NoError(t, err)
	_, err = ae.ExecuteActivity(e.act.UpsertTask, storeact.TaskRecord{
		WorkflowID: "default-test-workflow-id", Source: audit.SourceUI, Phase: "verify",
	})
	require.NoError(t, err)

	// The key came from activity.GetInfo: the test workflow's ID, this
	// activity's ID, attempt 0 (not a source activity's attempt).
	evs, err := e.st.ListEvents(e.ctx, "default-test-workflow-id")
	require.NoError(t, err)
	require.Len(t, evs, 1)
	require.NotEmpty(t, evs[0].ActivityID)
	require.Equal(t, int32(0), evs[0].Attempt)
	require.Equal(t, ref.ID, evs[0].ArtifactID)
	task, err := e.st.GetTask(e.ctx, "default-test-workflow-id")
	require.NoError(t, err)
	require.Equal(t, "verify", task.Phase)
}

func TestActivitiesBadInputIsNonRetryable(t *testing.T) {
	e := setup(t, storetest.Start(t))
	ae := e.activityEnv()

	_, err := ae.ExecuteActivity(e.act.RecordEvent, storeact.RecordEventInput{})
	require.Equal(t, storeact.ErrTypeInvalidInput, requireRetryable(t, err, false).Type())
	_, err = ae.ExecuteActivity(e.act.RecordEvent, storeact.RecordEventInput{Kind: "x", ArtifactID: "sha256:bad"})
	require.Equal(t, storeact.ErrTypeInvalidInput, requireRetryable(t, err, false).Type())
	_, err = ae.ExecuteActivity(e.act.UpsertTask, storeact.TaskRecord{WorkflowID: "w", Source: "email"})
	require.Equal(t, storeact.ErrTypeInvalidInput, requireRetryable(t, err, false).Type())
	_, err = ae.ExecuteActivity(e.act.StoreArtifact, storeact.StoreArtifactInput{Content: []byte("x")})
	require.Equal(t, storeact.ErrTypeInvalidInput, requireRetryable(t, err, false).Type())

	// One key, two different events: a conflict, not a silent drop.
	in := storeact.RecordEventInput{WorkflowID: "w", SourceActivityID: "5", SourceAttempt: 1, Kind: audit.KindCommand,
		Data: json.RawMessage(`{"cmd":"true"}`)}
	_, err = ae.ExecuteActivity(e.act.RecordEvent, in)
	require.NoError(t, err)
	in.Data = json.RawMessage(`{"cmd":"false"}`)
	_, err = ae.ExecuteActivity(e.act.RecordEvent, in)
	require.Equal(t, storeact.ErrTypeKeyConflict, requireRetryable(t, err, false).Type())

	// A direct call (no activity context) must name the key.
	err = e.act.RecordEvent(e.ctx, storeact.RecordEventInput{WorkflowID: "w", Kind: audit.KindPhase})
	require.Equal(t, storeact.ErrTypeInvalidInput, requireRetryable(t, err, false).Type())
}

// recordWorkflow records one phase event through the RecordEvent activity
// with a retry policy, as the AgentTask workflow does.
func recordWorkflow(ctx workflow.Context) error {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		StartToCloseTimeout: time.Minute,
		RetryPolicy:         &temporal.RetryPolicy{InitialInterval: time.Second, MaximumAttempts: 5},
	})
	var a *storeact.Activities
	return workflow.ExecuteActivity(ctx, a.RecordEvent, storeact.RecordEventInput{
		Kind: audit.KindPhase, Actor: "airlock", Data: json.RawMessage(`{"phase":"agent"}`),
	}).Get(ctx, nil)
}

// TestPostgresDownWhenActivityRuns stops a dedicated cluster (its own data
// dir and port; the shared one is untouched), shows that RecordEvent fails
// with a retryable error, and that Temporal's retry after a restart writes
// exactly one row.
func TestPostgresDownWhenActivityRuns(t *testing.T) {
	cluster := storetest.NewCluster(t)
	e := setup(t, cluster.DSN)
	require.NoError(t, e.st.Ping(e.ctx)) // the pool holds a live connection
	cluster.Stop(t)

	// 1. One execution against the stopped server: a retryable error.
	_, err := e.activityEnv().ExecuteActivity(e.act.RecordEvent, storeact.RecordEventInput{Kind: audit.KindPhase})
	t.Logf("with Postgres down: %v", requireRetryable(t, err, true))
	// A direct call (no Temporal) says the same: a plain, retryable error.
	direct := storeact.RecordEventInput{WorkflowID: "task-down", SourceActivityID: "9", SourceAttempt: 1, Kind: audit.KindCommand}
	err = e.act.RecordEvent(e.ctx, direct)
	require.Error(t, err)
	var appErr *temporal.ApplicationError
	require.False(t, errors.As(err, &appErr), "want a plain error, got %v", err)

	// 2. Through a workflow with a retry policy: attempt 1 fails (server
	// down); before attempt 2 starts the server is back; attempt 2 writes.
	var s testsuite.WorkflowTestSuite
	we := s.NewTestWorkflowEnvironment()
	we.RegisterActivity(e.act)
	we.RegisterWorkflow(recordWorkflow)
	var attempts []int32
	we.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
		attempts = append(attempts, info.Attempt)
		if info.Attempt == 2 {
			cluster.Start(t) // waits until it accepts connections
		}
	})
	we.ExecuteWorkflow(recordWorkflow)
	require.True(t, we.IsWorkflowCompleted())
	require.NoError(t, we.GetWorkflowError())
	require.Equal(t, []int32{1, 2}, attempts)

	// The direct call again, now that the server is up: once is enough.
	require.NoError(t, e.act.RecordEvent(e.ctx, direct))
	require.NoError(t, e.act.RecordEvent(e.ctx, direct))

	evs, err := e.st.ListEvents(e.ctx, "default-test-workflow-id")
	require.NoError(t, err)
	require.Len(t, evs, 1, "exactly one row for the retried activity")
	require.Equal(t, audit.KindPhase, evs[0].Kind)
	evs, err = e.st.ListEvents(e.ctx, "task-down")
	require.NoError(t, err)
	require.Len(t, evs, 1)
}

// flakyAck commits through the real store, then reports a failure once, as
// when the connection drops after COMMIT or the activity's completion never
// reaches Temporal.
type flakyAck struct {
	*store.Store
	failed atomic.Bool
}

func (f *flakyAck) AppendEvent(ctx context.Context, ev audit.Event) (int64, bool, error) {
	id, ins, err := f.Store.AppendEvent(ctx, ev)
	if err == nil && f.failed.CompareAndSwap(false, true) {
		return 0, false, errors.New("connection reset after commit")
	}
	return id, ins, err
}

// TestRetryAfterCommitDoesNotDuplicate: attempt 1 commits but fails; the
// retry (attempt 2, same activity ID) re-writes the same event under the
// same key, so there is still exactly one row.
func TestRetryAfterCommitDoesNotDuplicate(t *testing.T) {
	e := setup(t, storetest.Start(t))
	var s testsuite.WorkflowTestSuite
	we := s.NewTestWorkflowEnvironment()
	we.RegisterActivity(&storeact.Activities{Store: &flakyAck{Store: e.st}})
	we.RegisterWorkflow(recordWorkflow)
	var attempts []int32
	we.SetOnActivityStartedListener(func(info *activity.Info, _ context.Context, _ converter.EncodedValues) {
		attempts = append(attempts, info.Attempt)
	})
	we.ExecuteWorkflow(recordWorkflow)
	require.NoError(t, we.GetWorkflowError())
	require.Equal(t, []int32{1, 2}, attempts)

	evs, err := e.st.ListEvents(e.ctx, "default-test-workflow-id")
	require.NoError(t, err)
	require.Len(t, evs, 1)
}
