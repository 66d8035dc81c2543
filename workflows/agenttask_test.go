package workflows

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/airlock-dev/airlock/activities/apply"
	"github.com/airlock-dev/airlock/activities/playbook"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

func approve(by string) Decision {
	return Decision{Decision: DecisionApprove, By: by, PlanHash: "sha256:plan1"}
}

func (b *testBundle) signalAt(after time.Duration, d any) {
	b.env.RegisterDelayedCallback(func() { b.env.SignalWorkflow(SignalApproval, d) }, after)
}

func (b *testBundle) result(t *testing.T) Result {
	t.Helper()
	require.True(t, b.env.IsWorkflowCompleted())
	require.NoError(t, b.env.GetWorkflowError())
	var r Result
	require.NoError(t, b.env.GetWorkflowResult(&r))
	return r
}

func TestApproveAfter60Hours(t *testing.T) {
	b := setup(t)
	b.signalAt(60*time.Hour, approve("alice"))
	b.env.ExecuteWorkflow(AgentTask, validInput())

	r := b.result(t)
	require.Equal(t, PhaseApplied, r.Outcome)
	require.Equal(t, "sha256:plan1", r.PlanHash)
	b.acts.mu.Lock()
	require.Len(t, b.acts.applies, 2)
	require.True(t, b.acts.applies[0].Check, "check run comes first")
	require.False(t, b.acts.applies[1].Check)
	require.Equal(t, []string{"prod-web-1"}, b.acts.applies[1].Hosts)
	require.Len(t, b.acts.execs, 1)
	require.Equal(t, "echo hi", b.acts.execs[0].Script)
	b.acts.mu.Unlock()
	// 60h with a 24h reminder interval: reminders at 24h and 48h.
	require.Len(t, b.acts.eventsOf("reminder"), 2)
	require.Len(t, b.acts.eventsOf("approval"), 1)
	b.requireCleanedUp(t)
}

func TestRemindersThenExpiryAt72Hours(t *testing.T) {
	b := setup(t)
	in := validInput()
	in.Approval.RemindEvery = Duration(8 * time.Hour)
	b.env.ExecuteWorkflow(AgentTask, in)

	r := b.result(t)
	require.Equal(t, PhaseExpired, r.Outcome)
	// Reminders at 8h … 64h; the one due at 72h is the expiry.
	require.Len(t, b.acts.eventsOf("reminder"), 8)
	require.Len(t, b.acts.eventsOf("approval_expired"), 1)
	b.acts.mu.Lock()
	require.Empty(t, b.acts.applies, "an expired task must never apply")
	b.acts.mu.Unlock()
	b.requireCleanedUp(t)
}

func TestDeniedDecisionsKeepWaiting(t *testing.T) {
	b := setup(t)
	in := validInput()
	in.Approval.Quorum = 2
	in.Approval.Approvers = append(in.Approval.Approvers, "dave")                                     // dave started the task
	b.signalAt(1*time.Hour, approve("mallory"))                                                       // not an approver
	b.signalAt(2*time.Hour, Decision{Decision: DecisionApprove, By: "alice", PlanHash: "sha256:old"}) // stale plan
	b.signalAt(3*time.Hour, approve("alice"))                                                         // accepted
	b.signalAt(4*time.Hour, approve("alice"))                                                         // duplicate
	b.signalAt(5*time.Hour, approve("dave"))                                                          // the requester, self-approval not allowed
	b.signalAt(6*time.Hour, map[string]any{"garbage": true})                                          // garbage payload
	b.signalAt(7*time.Hour, "not even an object")                                                     // garbage payload
	b.env.RegisterDelayedCallback(func() {
		st := b.status(t)
		require.Equal(t, PhaseAwaiting, st.Phase)
		require.Len(t, st.Approval.Votes, 1)
		require.Len(t, st.Approval.Denied, 4)
	}, 8*time.Hour)
	b.signalAt(9*time.Hour, approve("bob")) // quorum reached
	b.env.ExecuteWorkflow(AgentTask, in)

	r := b.result(t)
	require.Equal(t, PhaseApplied, r.Outcome)
	denied := b.acts.eventsOf("approval_denied")
	require.Len(t, denied, 6)
	reasons := make([]string, 0, len(denied))
	for _, d := range denied {
		reasons = append(reasons, d.Data["reason"].(string))
	}
	require.Contains(t, reasons[0], "mallory is not an approver")
	require.Contains(t, reasons[1], "is not the current plan")
	require.Contains(t, reasons[2], "already voted")
	require.Contains(t, reasons[3], "self-approval")
	require.Contains(t, reasons[4], "garbage approval signal")
	require.Contains(t, reasons[5], "garbage approval signal")
	require.Len(t, b.acts.eventsOf("approval"), 2)
	b.requireCleanedUp(t)
}

func TestQuorumTwoNeedsTwoDistinctApprovers(t *testing.T) {
	b := setup(t)
	in := validInput()
	in.Approval.Quorum = 2
	b.signalAt(time.Hour, approve("alice"))
	b.env.RegisterDelayedCallback(func() {
		st := b.status(t)
		require.Equal(t, PhaseAwaiting, st.Phase, "one vote of two must not apply")
	}, 2*time.Hour)
	b.signalAt(3*time.Hour, approve("carol"))
	b.env.ExecuteWorkflow(AgentTask, in)
	require.Equal(t, PhaseApplied, b.result(t).Outcome)
	b.requireCleanedUp(t)
}

func TestRejectNeedsCommentAndStopsTheTask(t *testing.T) {
	b := setup(t)
	b.signalAt(time.Hour, Decision{Decision: DecisionReject, By: "bob", PlanHash: "sha256:plan1"})
	b.signalAt(2*time.Hour, Decision{Decision: DecisionReject, By: "bob", PlanHash: "sha256:plan1", Comment: "not on a Friday"})
	b.env.ExecuteWorkflow(AgentTask, validInput())

	r := b.result(t)
	require.Equal(t, PhaseRejected, r.Outcome)
	require.Contains(t, r.Detail, "not on a Friday")
	require.Contains(t, b.acts.eventsOf("approval_denied")[0].Data["reason"], "needs a comment")
	b.acts.mu.Lock()
	require.Empty(t, b.acts.applies)
	b.acts.mu.Unlock()
	b.requireCleanedUp(t)
}

func TestApplyFailureFailsTheTask(t *testing.T) {
	b := setup(t)
	b.acts.ApplyFunc = func(ctx context.Context, in apply.Input) (apply.Result, error) {
		if in.Check {
			return apply.Result{OK: true, Check: true}, nil
		}
		return apply.Result{OK: false, Failed: 1, Recap: "prod-web-1: failed=1"}, nil
	}
	b.signalAt(time.Hour, approve("alice"))
	b.env.ExecuteWorkflow(AgentTask, validInput())

	require.True(t, b.env.IsWorkflowCompleted())
	err := b.env.GetWorkflowError()
	require.Error(t, err)
	var appErr *temporal.ApplicationError
	require.True(t, errors.As(err, &appErr))
	require.Equal(t, "ApplyFailed", appErr.Type())
	b.requireCleanedUp(t)
}

func TestCancellationMidTaskCleansUp(t *testing.T) {
	b := setup(t)
	b.env.RegisterDelayedCallback(func() { b.env.CancelWorkflow() }, 10*time.Hour)
	b.env.ExecuteWorkflow(AgentTask, validInput())

	require.True(t, b.env.IsWorkflowCompleted())
	require.True(t, temporal.IsCanceledError(b.env.GetWorkflowError()))
	b.requireCleanedUp(t)
	phases := b.acts.eventsOf("phase")
	require.Equal(t, PhaseCancelled, phases[len(phases)-1].Data["phase"])
}

func TestUpdateGivesSynchronousAnswers(t *testing.T) {
	b := setup(t)
	var denied, accepted error
	var res DecisionResult
	b.env.RegisterDelayedCallback(func() {
		b.env.UpdateWorkflow(UpdateDecide, "u1", &testsuite.TestUpdateCallback{
			OnAccept: func() {}, OnReject: func(err error) { denied = err },
			OnComplete: func(v interface{}, err error) { denied = err },
		}, approve("mallory"))
	}, time.Hour)
	b.env.RegisterDelayedCallback(func() {
		b.env.UpdateWorkflow(UpdateDecide, "u2", &testsuite.TestUpdateCallback{
			OnAccept: func() {}, OnReject: func(err error) { accepted = err },
			OnComplete: func(v interface{}, err error) {
				accepted = err
				if err == nil {
					res = v.(DecisionResult)
				}
			},
		}, approve("alice"))
	}, 2*time.Hour)
	b.env.ExecuteWorkflow(AgentTask, validInput())

	require.Equal(t, PhaseApplied, b.result(t).Outcome)
	require.Error(t, denied)
	require.Contains(t, denied.Error(), "not an approver")
	require.NoError(t, accepted)
	require.Equal(t, "approved", res.Outcome)
	require.Len(t, b.acts.eventsOf("approval_denied"), 1, "a denied update is audited")
}

func TestModifyReverifiesAndAsksAgain(t *testing.T) {
	b := setup(t)
	b.signalAt(time.Hour, Decision{Decision: DecisionModify, By: "alice", PlanHash: "sha256:plan1", Playbook: "- hosts: all\n  tasks: []\n"})
	b.env.RegisterDelayedCallback(func() {
		st := b.status(t)
		require.Equal(t, PhaseAwaiting, st.Phase)
		require.Equal(t, "sha256:plan2", st.Plan.PlanHash)
		require.True(t, st.Plan.Edited)
		require.Empty(t, st.Approval.Votes, "votes start over for the edited plan")
	}, 2*time.Hour)
	b.signalAt(3*time.Hour, approve("alice")) // stale: names the old plan
	b.signalAt(4*time.Hour, Decision{Decision: DecisionApprove, By: "bob", PlanHash: "sha256:plan2"})
	b.env.ExecuteWorkflow(AgentTask, validInput())

	r := b.result(t)
	require.Equal(t, PhaseApplied, r.Outcome)
	require.Equal(t, "sha256:plan2", r.PlanHash)
	b.acts.mu.Lock()
	require.Len(t, b.acts.verifies, 2, "the edited plan is verified again")
	require.Equal(t, 2, b.acts.verifies[1].Attempt)
	require.Equal(t, "sha256:bundle2", b.acts.applies[1].BundleRef)
	b.acts.mu.Unlock()
}

func TestUnverifiedPlanNeedsOverride(t *testing.T) {
	b := setup(t)
	b.acts.VerifyFunc = func(ctx context.Context, in sandbox.VerifyInput) (sandbox.VerifyResult, error) {
		return sandbox.VerifyResult{Status: "residual diff", Detail: "/etc/x differs"}, nil
	}
	b.signalAt(time.Hour, approve("alice"))
	over := approve("bob")
	over.Override = true
	b.signalAt(2*time.Hour, over)
	b.env.ExecuteWorkflow(AgentTask, validInput())

	require.Equal(t, PhaseApplied, b.result(t).Outcome)
	require.Contains(t, b.acts.eventsOf("approval_denied")[0].Data["reason"], "failed verification")
	require.Equal(t, true, b.acts.eventsOf("approval")[0].Data["override_verification"])
}

func TestBadInputFailsBeforeAnyVM(t *testing.T) {
	cases := map[string]struct {
		mutate func(*TaskInput)
		field  string
	}{
		"no goal":        {func(in *TaskInput) { in.Goal = "" }, "goal"},
		"unknown image":  {func(in *TaskInput) { in.Source.Image = "windows95" }, "source.image"},
		"unknown target": {func(in *TaskInput) { in.Target.Hosts = []string{"db-9"} }, "target.hosts[0]"},
		"quorum too big": {func(in *TaskInput) { in.Approval.Quorum = 5 }, "approval.quorum"},
		"bad step":       {func(in *TaskInput) { in.Agent.Steps = []RunbookStep{{Run: "x", Snapshot: "y"}} }, "agent.steps[0]"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			b := setup(t)
			in := validInput()
			tc.mutate(&in)
			b.env.ExecuteWorkflow(AgentTask, in)
			require.True(t, b.env.IsWorkflowCompleted())
			err := b.env.GetWorkflowError()
			require.Error(t, err)
			require.Contains(t, err.Error(), tc.field)
			var appErr *temporal.ApplicationError
			require.True(t, errors.As(err, &appErr))
			require.Equal(t, ErrTypeBadInput, appErr.Type())
			b.acts.mu.Lock()
			require.Empty(t, b.acts.created, "no VM may be created for bad input")
			b.acts.mu.Unlock()
		})
	}
}

func TestFailedRunbookStepStillCleansUp(t *testing.T) {
	b := setup(t)
	b.acts.ExecFunc = func(ctx context.Context, in sandbox.ExecInput) (sandbox.ExecResult, error) {
		return sandbox.ExecResult{ExitCode: 3, Output: "boom"}, nil
	}
	b.env.ExecuteWorkflow(AgentTask, validInput())
	require.True(t, b.env.IsWorkflowCompleted())
	require.ErrorContains(t, b.env.GetWorkflowError(), "exit code 3, expected 0")
	b.requireCleanedUp(t)
}

func TestBrokenModifyKeepsCurrentPlan(t *testing.T) {
	b := setup(t)
	b.acts.PlanFromEditFunc = func(ctx context.Context, in playbook.EditInput) (playbook.Plan, error) {
		return playbook.Plan{}, temporal.NewNonRetryableApplicationError("the edited playbook fails ansible-playbook --syntax-check", "BadPlaybook", nil)
	}
	b.signalAt(time.Hour, Decision{Decision: DecisionModify, By: "alice", PlanHash: "sha256:plan1", Playbook: "{{{"})
	b.signalAt(2*time.Hour, approve("bob"))
	b.env.ExecuteWorkflow(AgentTask, validInput())
	r := b.result(t)
	require.Equal(t, PhaseApplied, r.Outcome)
	require.Equal(t, "sha256:plan1", r.PlanHash)
	require.Len(t, b.acts.eventsOf("modify_refused"), 1)
}

// TestRawJSONInputErrorsNameTheField starts the workflow the way
// `temporal workflow start --input '{…}'` does: with raw JSON.
func TestRawJSONInputErrorsNameTheField(t *testing.T) {
	base := func() map[string]any {
		return map[string]any{
			"goal": "x", "source": map[string]any{"image": "bookworm"},
			"agent":    map[string]any{"mode": "runbook", "steps": []any{map[string]any{"run": "true"}}},
			"approval": map[string]any{"approvers": []any{"alice"}},
		}
	}
	cases := map[string]struct {
		mutate func(map[string]any)
		want   string
	}{
		"unknown field": {func(m map[string]any) { m["gaol"] = "typo" }, `gaol: unknown field`},
		"bad duration":  {func(m map[string]any) { m["approval"].(map[string]any)["expires_after"] = "3 days" }, `bad duration "3 days"`},
		"wrong type":    {func(m map[string]any) { m["approval"].(map[string]any)["quorum"] = "two" }, `approval.quorum`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			b := setup(t)
			in := base()
			tc.mutate(in)
			b.env.ExecuteWorkflow(WorkflowType, in) // by name: the payload is the raw JSON
			require.True(t, b.env.IsWorkflowCompleted())
			require.ErrorContains(t, b.env.GetWorkflowError(), tc.want)
			b.acts.mu.Lock()
			require.Empty(t, b.acts.created)
			b.acts.mu.Unlock()
		})
	}
}

func noCapacityUnlessOvercommit(ctx context.Context, in sandbox.CreateInput) (sandbox.Info, error) {
	if !in.Overcommit {
		return sandbox.Info{}, temporal.NewNonRetryableApplicationError("not enough capacity: want 512 MiB, 100 MiB free", ErrTypeNoCapacity, nil)
	}
	return sandbox.Info{Name: sandbox.NameFor(in.Owner, in.Suffix), IP: "10.77.0.100", Image: in.Image}, nil
}

func TestNoCapacityAsksForOvercommit(t *testing.T) {
	b := setup(t)
	b.acts.CreateSandboxFunc = noCapacityUnlessOvercommit
	in := validInput()
	in.Approval.Approvers = append(in.Approval.Approvers, "dave") // dave started the task
	b.env.RegisterDelayedCallback(func() {
		st := b.status(t)
		require.Equal(t, PhasePlacing, st.Phase)
		require.Len(t, st.Agent.Questions, 1)
		require.Equal(t, "overcommit", st.Agent.Questions[0].Kind)
		b.env.SignalWorkflow(SignalAnswer, Answer{QuestionID: "q1", By: "dave", Choice: "approve"}) // the requester
		b.env.SignalWorkflow(SignalAnswer, Answer{QuestionID: "q1", By: "carol", Choice: "approve"})
	}, time.Minute)
	b.signalAt(time.Hour, approve("alice"))
	b.env.ExecuteWorkflow(AgentTask, in)

	require.Equal(t, PhaseApplied, b.result(t).Outcome)
	require.Contains(t, b.acts.eventsOf("answer_denied")[0].Data["reason"], "self-approval")
	b.acts.mu.Lock()
	require.Equal(t, 2, len(b.acts.created), "one refused create, one approved overcommit")
	b.acts.mu.Unlock()
	b.requireCleanedUp(t)
}

func TestOvercommitDeniedFailsCleanly(t *testing.T) {
	b := setup(t)
	b.acts.CreateSandboxFunc = noCapacityUnlessOvercommit
	b.env.RegisterDelayedCallback(func() {
		b.env.SignalWorkflow(SignalAnswer, Answer{QuestionID: "q1", By: "bob", Choice: "deny", Comment: "wait for the batch job"})
	}, time.Minute)
	b.env.ExecuteWorkflow(AgentTask, validInput())
	require.True(t, b.env.IsWorkflowCompleted())
	require.ErrorContains(t, b.env.GetWorkflowError(), "placement on local refused")
	b.acts.mu.Lock()
	require.Len(t, b.acts.created, 1)
	b.acts.mu.Unlock()
	b.requireCleanedUp(t)
}
