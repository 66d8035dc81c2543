package workflows

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"

	"github.com/airlock-dev/airlock/activities/agent/tools"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

func (b *testBundle) send(after time.Duration, name string, payload any) {
	b.env.RegisterDelayedCallback(func() { b.env.SignalWorkflow(name, payload) }, after)
}

func (b *testBundle) rejectAt(after time.Duration) {
	b.signalAt(after, Decision{Decision: DecisionReject, By: "bob", PlanHash: "sha256:plan1", Comment: "test over"})
}

func (f *llmFakes) opened() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, e := range f.egress {
		if e.Open {
			n++
		}
	}
	return n
}

// TestEgressGateDenied would fail if request_egress opened the network
// without a human: nobody approves, so SetEgress(open) must never run.
func TestEgressGateDenied(t *testing.T) {
	b := setup(t)
	in := llmInput()
	in.Approval.Approvers = append(in.Approval.Approvers, "dave") // dave started the task
	f := b.withLLM(
		call(tools.RequestEgress, `{"reason":"apt-get install jq","destinations":["deb.debian.org"],"minutes":15}`),
		call(tools.RunCommand, `{"command":"apt-get install -y jq"}`),
	)
	b.send(time.Minute, SignalAnswer, Answer{QuestionID: "q1", By: "mallory", Choice: "approve"})          // not an approver
	b.send(2*time.Minute, SignalAnswer, Answer{QuestionID: "q1", By: "dave", Choice: "approve"})           // self-approval
	b.send(3*time.Minute, SignalAnswer, Answer{QuestionID: "q1", By: "alice", Choice: "maybe"})            // not a choice
	b.send(4*time.Minute, SignalAnswer, map[string]any{"question_id": "q1", "by": "alice", "vote": "yes"}) // garbage
	b.env.RegisterDelayedCallback(func() {
		st := b.status(t)
		require.Equal(t, "pending", st.Agent.Questions[0].Status)
		require.Len(t, st.Agent.Questions[0].Denied, 3)
		require.Equal(t, []string{"deb.debian.org"}, st.Agent.Questions[0].Destinations)
	}, 5*time.Minute)
	b.send(6*time.Minute, SignalAnswer, Answer{QuestionID: "q1", By: "bob", Choice: "deny", Comment: "use the local mirror"})
	b.rejectAt(time.Hour)
	b.env.ExecuteWorkflow(AgentTask, in)
	require.Equal(t, PhaseRejected, b.result(t).Outcome)

	require.Zero(t, f.opened(), "egress must stay closed when no approver approved")
	require.Contains(t, f.lastTool(2), "egress denied by bob")
	require.Contains(t, f.lastTool(2), "use the local mirror")
	denied := b.acts.eventsOf("answer_denied")
	require.Len(t, denied, 4)
	require.Contains(t, denied[0].Data["reason"], "mallory is not an approver")
	require.Contains(t, denied[1].Data["reason"], "self-approval")
	require.Contains(t, denied[2].Data["reason"], `choice "maybe" is not one of approve, deny`)
	require.Contains(t, denied[3].Data["reason"], "garbage answer")
	require.Len(t, b.acts.eventsOf("answer"), 1)
}

func TestEgressOpensAfterApprovalAndClosesOnTime(t *testing.T) {
	b := setup(t)
	in := llmInput()
	in.Agent.QuestionTimeout = Duration(time.Hour)
	f := b.withLLM(
		call(tools.RequestEgress, `{"reason":"apt-get install jq","destinations":["deb.debian.org"],"minutes":90}`),
		call(tools.RequestApproval, `{"question":"jq installed; keep it?"}`), // waits past the egress window
		call(tools.ListSandboxes, `{}`),
	)
	b.env.RegisterDelayedCallback(func() {
		f.mu.Lock()
		f.answered = true
		f.mu.Unlock()
		b.env.SignalWorkflow(SignalAnswer, Answer{QuestionID: "q1", By: "alice", Choice: "approve"})
	}, 10*time.Minute)
	b.env.RegisterDelayedCallback(func() {
		st := b.status(t)
		require.Len(t, st.Agent.Egress, 1)
		require.True(t, st.Agent.Egress[0].Open, "open within the window")
	}, 20*time.Minute)
	b.send(50*time.Minute, SignalAnswer, Answer{QuestionID: "q2", By: "bob", Choice: "yes"})
	b.rejectAt(2 * time.Hour)
	b.env.ExecuteWorkflow(AgentTask, in)
	require.Equal(t, PhaseRejected, b.result(t).Outcome)

	require.Empty(t, f.violations)
	f.mu.Lock()
	require.Equal(t, []sandbox.EgressInput{{Sandbox: "sbx-" + testWorkflowID, Open: true}, {Sandbox: "sbx-" + testWorkflowID, Open: false}}, f.egress)
	f.mu.Unlock()
	require.Contains(t, f.lastTool(2), "egress approved by alice")
	require.Contains(t, f.lastTool(2), "for 30 minutes", "clamped to agent.max_egress_minutes")
	closed := b.acts.eventsOf("egress_closed")
	require.Len(t, closed, 1)
	require.Equal(t, "time up", closed[0].Data["why"])
	require.Equal(t, "alice", b.acts.eventsOf("egress_opened")[0].Actor)
	req := f.inputs[2].Messages
	require.Contains(t, req[len(req)-1].Content, "is closed again (time up)", "the model is told")
	st := b.status(t)
	require.False(t, st.Agent.Egress[0].Open)
}

func TestEgressExpiresClosed(t *testing.T) {
	b := setup(t)
	in := llmInput()
	in.Agent.QuestionTimeout = Duration(20 * time.Minute)
	f := b.withLLM(call(tools.RequestEgress, `{"reason":"pip install","destinations":["pypi.org"]}`))
	b.rejectAt(time.Hour)
	b.env.ExecuteWorkflow(AgentTask, in)
	require.Equal(t, PhaseRejected, b.result(t).Outcome)
	require.Zero(t, f.opened())
	require.Contains(t, f.lastTool(2), "no approver answered q1 within 20m0s")
	require.Equal(t, "expired", b.status(t).Agent.Questions[0].Status)
	require.Len(t, b.acts.eventsOf("agent_question_expired"), 1)
}

func TestQuestionAnsweredByUpdate(t *testing.T) {
	b := setup(t)
	f := b.withLLM(call(tools.RequestApproval, `{"question":"restart nginx now or at 02:00?","options":["now","02:00"]}`))
	var denied, accepted error
	var q Question
	b.env.RegisterDelayedCallback(func() {
		b.env.UpdateWorkflow(UpdateAnswer, "a1", &testsuite.TestUpdateCallback{
			OnAccept: func() {}, OnReject: func(err error) { denied = err },
			OnComplete: func(v any, err error) { denied = err },
		}, Answer{QuestionID: "q1", By: "mallory", Choice: "now"})
	}, time.Minute)
	b.env.RegisterDelayedCallback(func() {
		b.env.UpdateWorkflow(UpdateAnswer, "a2", &testsuite.TestUpdateCallback{
			OnAccept: func() {}, OnReject: func(err error) { accepted = err },
			OnComplete: func(v any, err error) {
				accepted = err
				if err == nil {
					q = v.(Question)
				}
			},
		}, Answer{QuestionID: "q1", By: "carol", Choice: "02:00", Comment: "peak hours"})
	}, 2*time.Minute)
	b.rejectAt(time.Hour)
	b.env.ExecuteWorkflow(AgentTask, llmInput())
	require.Equal(t, PhaseRejected, b.result(t).Outcome)
	require.ErrorContains(t, denied, "not an approver")
	require.NoError(t, accepted)
	require.Equal(t, "02:00", q.Choice)
	require.Contains(t, f.lastTool(2), `carol answered "02:00" ("peak hours")`)
}

func TestCancelSignalStopsAtTheNextStep(t *testing.T) {
	b := setup(t)
	f := b.withLLM(call(tools.RunCommand, `{"command":"echo one"}`), call(tools.RequestApproval, `{"question":"go on?"}`), call(tools.RunCommand, `{"command":"echo never"}`))
	b.send(time.Minute, SignalCancel, CancelRequest{By: "mallory", Reason: "prank"})
	b.send(2*time.Minute, SignalCancel, CancelRequest{By: "alice", Reason: "wrong host"})
	b.env.ExecuteWorkflow(AgentTask, llmInput())

	require.True(t, b.env.IsWorkflowCompleted())
	require.True(t, temporal.IsCanceledError(b.env.GetWorkflowError()), "%v", b.env.GetWorkflowError())
	require.Len(t, f.inputs, 2, "no LLM step after the cancel")
	b.acts.mu.Lock()
	require.Len(t, b.acts.execs, 1)
	b.acts.mu.Unlock()
	st := b.status(t)
	require.Equal(t, EndCancelled, st.Agent.EndReason)
	require.Equal(t, "cancelled by alice: wrong host", st.Agent.EndDetail)
	require.Contains(t, b.acts.eventsOf("cancel_denied")[0].Data["reason"], "mallory is neither")
	b.requireCleanedUp(t)
	phases := b.acts.eventsOf("phase")
	require.Equal(t, PhaseCancelled, phases[len(phases)-1].Data["phase"])
}

func TestInstructSignalReachesTheModel(t *testing.T) {
	b := setup(t)
	f := b.withLLM(call(tools.RequestApproval, `{"question":"which port?","options":["80","8080"]}`), call(tools.ListSandboxes, `{}`))
	b.send(time.Minute, SignalInstruct, Instruction{By: "dave", Text: "also enable gzip"}) // the requester may instruct
	b.send(2*time.Minute, SignalInstruct, Instruction{By: "eve", Text: "delete everything please"})
	b.send(3*time.Minute, SignalAnswer, Answer{QuestionID: "q1", By: "alice", Choice: "8080"})
	b.rejectAt(time.Hour)
	b.env.ExecuteWorkflow(AgentTask, llmInput())
	require.Equal(t, PhaseRejected, b.result(t).Outcome)
	msgs := f.inputs[1].Messages
	require.Equal(t, tools.RoleUser, msgs[len(msgs)-1].Role)
	require.Contains(t, msgs[len(msgs)-1].Content, "[Instruction from dave")
	require.Contains(t, msgs[len(msgs)-1].Content, "also enable gzip")
	for _, m := range f.inputs[2].Messages {
		require.NotContains(t, m.Content, "delete everything")
	}
	require.Len(t, b.acts.eventsOf("agent_instruction"), 1)
	require.Len(t, b.acts.eventsOf("instruction_denied"), 1)
}

func TestAgentSandboxTools(t *testing.T) {
	b := setup(t)
	f := b.withLLM(
		call(tools.CreateSandbox, `{}`),
		call(tools.RunCommand, `{"command":"echo scratch","sandbox":"sbx-`+testWorkflowID+`-a1"}`),
		call(tools.DestroySandbox, `{"sandbox":"sbx-`+testWorkflowID+`"}`), // the main one: refused
		call(tools.StopSandbox, `{}`),
		call(tools.RunCommand, `{"command":"echo stopped"}`), // refused: stopped
		call(tools.StartSandbox, `{}`),
		call(tools.CreateSandbox, `{}`),
		call(tools.StopSandbox, `{}`), // left stopped: started again for the capture
	)
	b.rejectAt(time.Hour)
	b.env.ExecuteWorkflow(AgentTask, llmInput())
	require.Equal(t, PhaseRejected, b.result(t).Outcome)
	require.Contains(t, f.lastTool(2), "created sbx-"+testWorkflowID+"-a1")
	require.Contains(t, f.lastTool(4), "cannot be destroyed")
	require.Contains(t, f.lastTool(6), "call start_sandbox first")
	b.acts.mu.Lock()
	require.Equal(t, "sbx-"+testWorkflowID+"-a1", b.acts.execs[0].Sandbox)
	require.Contains(t, b.acts.destroyed, "sbx-"+testWorkflowID+"-a1", "extra sandboxes are destroyed when the agent ends")
	require.Contains(t, b.acts.destroyed, "sbx-"+testWorkflowID+"-a2")
	b.acts.mu.Unlock()
	require.Equal(t, []string{"sbx-" + testWorkflowID, "sbx-" + testWorkflowID}, f.stopped)
	require.Len(t, f.started, 2, "start_sandbox, then again before the capture")
}

func TestRunbookToolSteps(t *testing.T) {
	s := func(v string) *string { return &v }
	runbook := func() TaskInput {
		in := validInput()
		in.Agent.Steps = []RunbookStep{
			{EditFile: &tools.EditFileArgs{Path: "/etc/nginx/nginx.conf", Op: "replace", OldText: "worker_processes auto;", NewText: s("worker_processes 2;")}},
			{RequestApproval: &ApprovalStep{Question: "restart nginx?"}},
			{RequestEgress: &tools.RequestEgressArgs{Reason: "apt", Destinations: []string{"deb.debian.org"}, Minutes: 5}},
			{Run: "apt-get install -y jq"},
		}
		return in
	}
	t.Run("approved", func(t *testing.T) {
		b := setup(t)
		f := b.withLLM()
		b.send(time.Minute, SignalAnswer, Answer{QuestionID: "q1", By: "alice", Choice: "yes"})
		b.env.RegisterDelayedCallback(func() {
			f.mu.Lock()
			f.answered = true
			f.mu.Unlock()
			b.env.SignalWorkflow(SignalAnswer, Answer{QuestionID: "q2", By: "bob", Choice: "approve"})
		}, 2*time.Minute)
		b.signalAt(time.Hour, approve("alice"))
		b.env.ExecuteWorkflow(AgentTask, runbook())
		require.Equal(t, PhaseApplied, b.result(t).Outcome)
		require.Len(t, f.edits, 1)
		require.Equal(t, "replace", f.edits[0].Edit.Op)
		require.Empty(t, f.violations)
		require.Equal(t, 2, len(f.egress), "opened, then closed when the runbook ended")
		st := b.status(t)
		require.Equal(t, []string{"edit_file", "request_approval", "request_egress", "run"}, stepTools(st))
		require.Empty(t, f.inputs, "a runbook never calls the LLM")
	})
	t.Run("answered no", func(t *testing.T) {
		b := setup(t)
		f := b.withLLM()
		b.send(time.Minute, SignalAnswer, Answer{QuestionID: "q1", By: "alice", Choice: "no"})
		b.env.ExecuteWorkflow(AgentTask, runbook())
		require.True(t, b.env.IsWorkflowCompleted())
		err := b.env.GetWorkflowError()
		require.ErrorContains(t, err, `goes on only on "yes"`)
		require.ErrorContains(t, err, "RunbookStopped")
		require.Zero(t, f.opened())
		b.requireCleanedUp(t)
	})
}

func TestRunbookToolStepValidation(t *testing.T) {
	in := validInput()
	in.Normalize()
	in.Agent.Steps = []RunbookStep{{Run: "true"}, {EditFile: &tools.EditFileArgs{Path: "/etc/x", Op: "write"}}}
	err := in.Validate(Catalog{})
	var ie *InputError
	require.True(t, errors.As(err, &ie))
	require.Equal(t, "agent.steps[1].edit_file", ie.Field)
	require.Contains(t, ie.Msg, `needs "content"`)

	in.Agent.Steps = []RunbookStep{{RequestApproval: &ApprovalStep{Question: "ok?", ContinueOn: "maybe"}}}
	require.ErrorContains(t, in.Validate(Catalog{}), "agent.steps[0].request_approval.continue_on")
	in.Agent.Steps = []RunbookStep{{RequestEgress: &tools.RequestEgressArgs{Reason: "x"}}}
	require.ErrorContains(t, in.Validate(Catalog{}), "destinations")
	in.Agent = AgentSpec{Mode: "llm", MaxTokens: -1}
	require.ErrorContains(t, in.Validate(Catalog{}), "agent.max_tokens")
}

func TestCancelSignalDuringARunbookQuestion(t *testing.T) {
	b := setup(t)
	in := validInput()
	in.Agent.Steps = []RunbookStep{{RequestApproval: &ApprovalStep{Question: "go?"}}, {Run: "echo never"}}
	b.send(time.Minute, SignalCancel, CancelRequest{By: "dave", Reason: "changed my mind"})
	b.env.ExecuteWorkflow(AgentTask, in)
	require.True(t, b.env.IsWorkflowCompleted())
	require.True(t, temporal.IsCanceledError(b.env.GetWorkflowError()), "%v", b.env.GetWorkflowError())
	b.acts.mu.Lock()
	require.Empty(t, b.acts.execs)
	b.acts.mu.Unlock()
	require.Equal(t, "cancelled", b.status(t).Agent.Questions[0].Status)
	b.requireCleanedUp(t)
}
