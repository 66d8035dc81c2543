package workflows

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/airlock-dev/airlock/activities/agent/tools"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

// reply is one scripted LLM answer.
type reply struct {
	calls     []tools.ToolCall
	content   string
	malformed string
	tokens    int // total; prompt tokens are 80 % of it
	err       error
}

func call(name, args string) reply {
	return reply{calls: []tools.ToolCall{{Name: name, Arguments: args}}}
}

// llmFakes is the scripted LLM and the agent's host activities.
type llmFakes struct {
	mu        sync.Mutex
	script    []reply
	inputs    []tools.StepInput // agent steps
	summaries []tools.StepInput // compaction calls
	egress    []sandbox.EgressInput
	edits     []tools.EditFileInput
	reads     []sandbox.ReadFileInput
	started   []string
	stopped   []string
	// answered is set by a test right before it approves egress; an
	// opening before that is a gate violation.
	answered   bool
	violations []string
}

func (b *testBundle) withLLM(script ...reply) *llmFakes {
	f := &llmFakes{script: script}
	reg := func(fn any, name string) { b.env.RegisterActivityWithOptions(fn, activity.RegisterOptions{Name: name}) }
	reg(f.LLMStep, ActLLMStep)
	reg(f.ReadFile, ActReadFile)
	reg(f.EditFile, ActEditFile)
	reg(f.SetEgress, ActSetEgress)
	reg(f.StartSandbox, ActStartSandbox)
	reg(f.StopSandbox, ActStopSandbox)
	return f
}

func (f *llmFakes) LLMStep(ctx context.Context, in tools.StepInput) (tools.StepResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(in.Tools) == 0 { // a compaction
		f.summaries = append(f.summaries, in)
		return tools.StepResult{Message: tools.Message{Role: tools.RoleAssistant, Content: "SUMMARY: inspected nginx"}, Usage: tools.Usage{TotalTokens: 100}}, nil
	}
	f.inputs = append(f.inputs, in)
	r := reply{calls: []tools.ToolCall{{Name: tools.Finish, Arguments: `{"summary":"script ended"}`}}}
	if len(f.script) > 0 {
		r, f.script = f.script[0], f.script[1:]
	}
	if r.err != nil {
		return tools.StepResult{}, r.err
	}
	for i := range r.calls {
		r.calls[i].ID = fmt.Sprintf("call_%d_%d", len(f.inputs), i)
	}
	if r.tokens == 0 {
		r.tokens = 100
	}
	return tools.StepResult{Message: tools.Message{Role: tools.RoleAssistant, Content: r.content, ToolCalls: r.calls}, Malformed: r.malformed,
		Usage: tools.Usage{PromptTokens: r.tokens * 8 / 10, CompletionTokens: r.tokens - r.tokens*8/10, TotalTokens: r.tokens}, Model: "fake", Attempts: 1}, nil
}

func (f *llmFakes) ReadFile(ctx context.Context, in sandbox.ReadFileInput) ([]byte, error) {
	f.mu.Lock()
	f.reads = append(f.reads, in)
	f.mu.Unlock()
	if in.Path == "/etc/shadow" {
		return nil, temporal.NewNonRetryableApplicationError("path policy: /etc/shadow is denied by rule \"/etc/shadow\"", ErrTypeBadInput, nil)
	}
	return []byte("server { listen 80; }\n"), nil
}

func (f *llmFakes) EditFile(ctx context.Context, in tools.EditFileInput) (tools.EditFileResult, error) {
	f.mu.Lock()
	f.edits = append(f.edits, in)
	f.mu.Unlock()
	return tools.EditFileResult{Path: in.Edit.Path, Bytes: 10, Mode: "0644", Owner: "root", Group: "root", Diff: "--- a\n+++ b\n@@ -1 +1 @@\n-old\n+new\n"}, nil
}

func (f *llmFakes) SetEgress(ctx context.Context, in sandbox.EgressInput) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if in.Open && !f.answered {
		f.violations = append(f.violations, "egress opened before an approver answered")
	}
	f.egress = append(f.egress, in)
	return nil
}

func (f *llmFakes) StartSandbox(ctx context.Context, name string) (sandbox.Info, error) {
	f.mu.Lock()
	f.started = append(f.started, name)
	f.mu.Unlock()
	return sandbox.Info{Name: name, IP: "10.77.0.100"}, nil
}

func (f *llmFakes) StopSandbox(ctx context.Context, name string) error {
	f.mu.Lock()
	f.stopped = append(f.stopped, name)
	f.mu.Unlock()
	return nil
}

// lastTool is the content of the last tool message the model was sent at
// agent step n (1-based).
func (f *llmFakes) toolResults(n int) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, m := range f.inputs[n-1].Messages {
		if m.Role == tools.RoleTool {
			out = append(out, m.Content)
		}
	}
	return out
}

func (f *llmFakes) lastTool(n int) string {
	r := f.toolResults(n)
	if len(r) == 0 {
		return ""
	}
	return r[len(r)-1]
}

func llmInput() TaskInput {
	in := validInput()
	in.Agent = AgentSpec{Mode: "llm", MaxSteps: 20}
	return in
}

func stepTools(st Status) []string {
	out := []string{}
	for _, s := range st.Steps {
		out = append(out, s.Tool)
	}
	return out
}

func TestLLMAgentWorksThroughTools(t *testing.T) {
	b := setup(t)
	f := b.withLLM(
		call(tools.ListSandboxes, `{}`),
		call(tools.RunCommand, `{"command":"uname -a"}`),
		call(tools.ReadFile, `{"path":"/etc/nginx/sites-enabled/default"}`),
		call(tools.CreateSnapshot, `{"name":"before"}`),
		call(tools.EditFile, `{"path":"/etc/nginx/sites-enabled/default","op":"replace","old_text":"listen 80;","new_text":"listen 8080;"}`),
		call(tools.RestoreSnapshot, `{"name":"before"}`),
		call(tools.EditFile, `{"path":"/etc/motd","op":"write","content":"hello\n","mode":"0644"}`),
		call(tools.Diff, `{}`),
		call(tools.Diff, `{"since_snapshot":"before"}`),
		reply{calls: []tools.ToolCall{
			{Name: tools.CreatePlaybook, Arguments: `{"name":"motd","description":"why the motd changes"}`},
			{Name: tools.AddPlaybookTask, Arguments: `{"playbook":"motd","name":"motd","module":"ansible.builtin.copy","args":{"dest":"/etc/motd","content":"hello\n"}}`},
			{Name: tools.GetPlaybook, Arguments: `{"name":"motd"}`},
		}},
		call(tools.Finish, `{"summary":"motd written"}`),
	)
	b.env.RegisterDelayedCallback(func() {
		st := b.status(t)
		require.Equal(t, PhaseAwaiting, st.Phase)
		require.Equal(t, EndFinished, st.Agent.EndReason)
		require.Equal(t, "motd written", st.Agent.Summary)
		require.Equal(t, []string{"list_sandboxes", "run_command", "read_file", "create_snapshot", "edit_file", "restore_snapshot", "edit_file", "diff", "diff",
			"create_playbook", "add_playbook_task", "get_playbook", "finish"}, stepTools(st))
		for _, s := range st.Steps {
			require.Empty(t, s.Error, "%s: %s", s.Tool, s.Error)
		}
		require.Equal(t, "uname -a", st.Steps[1].Args, "run_command shows the command")
		require.Equal(t, 11, st.Agent.Steps)
		require.Equal(t, 1100, st.Agent.TokensUsed)
		require.Len(t, st.Agent.Playbooks, 1)
		require.True(t, st.Agent.Playbooks[0].AgentWritten)
		require.Equal(t, []string{"before"}, st.Agent.Sandboxes[0].Snapshots)
	}, time.Hour)
	b.signalAt(2*time.Hour, approve("alice"))
	b.env.ExecuteWorkflow(AgentTask, llmInput())

	require.Equal(t, PhaseApplied, b.result(t).Outcome)
	require.Contains(t, f.lastTool(2), "main (its changes are the task's result)")
	require.Contains(t, f.lastTool(3), "exit code 0")
	require.Contains(t, f.lastTool(4), "listen 80;")
	require.Contains(t, f.lastTool(6), "replaced text in /etc/nginx")
	require.Contains(t, f.lastTool(9), "changes since the start of the task")
	require.Contains(t, f.lastTool(10), "changes since snapshot before")
	require.Contains(t, f.lastTool(11), `ansible.builtin.copy: {"dest":"/etc/motd"`)
	require.Len(t, f.edits, 2)
	require.Equal(t, "sbx-"+testWorkflowID, f.edits[0].Sandbox)
	b.acts.mu.Lock()
	require.Equal(t, "uname -a", b.acts.execs[0].Script)
	b.acts.mu.Unlock()
	require.Len(t, b.acts.eventsOf("command"), 13, "every tool call is audited")
	require.Len(t, b.acts.eventsOf("llm_step"), 11)
	require.Equal(t, "finished", b.acts.eventsOf("agent_end")[0].Data["reason"])
	b.requireCleanedUp(t)
}

func TestLLMAgentErrorsGoBackToTheModelAndEndTheTask(t *testing.T) {
	b := setup(t)
	in := llmInput()
	in.Agent.MaxErrors = 3
	f := b.withLLM(
		call("format_disk", `{}`),                      // 1: unknown tool
		call(tools.RunCommand, `{"command": "ls"`),     // 2: not JSON
		call(tools.RunCommand, `{"command":"true"}`),   // fine: resets the count
		reply{content: "I think I am done"},            // 1: no tool call
		reply{malformed: "not a chat completion"},      // 2: the endpoint's reply was unusable
		call(tools.ReadFile, `{"path":"/etc/shadow"}`), // 3: path policy
		call(tools.Finish, `{"summary":"never reached"}`),
	)
	b.env.ExecuteWorkflow(AgentTask, in)

	require.True(t, b.env.IsWorkflowCompleted())
	err := b.env.GetWorkflowError()
	var ae *temporal.ApplicationError
	require.True(t, errors.As(err, &ae), "%v", err)
	require.Equal(t, "AgentErrors", ae.Type())
	require.Contains(t, err.Error(), "3 errors in a row")
	require.Contains(t, f.lastTool(2), `unknown tool "format_disk"`)
	require.Contains(t, f.lastTool(3), "not valid JSON")
	require.Contains(t, f.lastTool(4), "exit code 0")
	last := f.inputs[4].Messages[len(f.inputs[4].Messages)-1]
	require.Contains(t, last.Content, "Reply with a tool call")
	last = f.inputs[5].Messages[len(f.inputs[5].Messages)-1]
	require.Contains(t, last.Content, "could not be used: not a chat completion")
	st := b.status(t)
	require.Equal(t, EndTooManyErrors, st.Agent.EndReason)
	require.Equal(t, 5, st.Agent.Errors)
	require.Contains(t, st.Steps[len(st.Steps)-1].Error, "path policy")
	require.Len(t, f.script, 1, "the loop stopped before the next step")
	b.requireCleanedUp(t)
}

func TestLLMAgentDenyListRefusesWithoutRunning(t *testing.T) {
	b := setup(t)
	f := b.withLLM(call(tools.RunCommand, `{"command":"rm -rf / --no-preserve-root"}`), call(tools.RunCommand, `{"command":"systemctl reboot"}`))
	b.env.RegisterDelayedCallback(func() {
		b.env.SignalWorkflow(SignalApproval, Decision{Decision: DecisionReject, By: "bob", PlanHash: "sha256:plan1", Comment: "test"})
	}, time.Hour)
	b.env.ExecuteWorkflow(AgentTask, llmInput())
	require.Equal(t, PhaseRejected, b.result(t).Outcome)
	require.Contains(t, f.lastTool(2), "deny-list")
	require.Contains(t, f.lastTool(3), "stop_sandbox then start_sandbox")
	b.acts.mu.Lock()
	require.Empty(t, b.acts.execs, "a denied command never reaches the sandbox")
	b.acts.mu.Unlock()
	st := b.status(t)
	require.Equal(t, -1, st.Steps[0].ExitCode)
}

// TestLLMAgentReadOnlyIsEnforced would fail if the read-only gate were
// removed from execTool: the model calls write tools that were not
// offered, and none of them may run.
func TestLLMAgentReadOnlyIsEnforced(t *testing.T) {
	b := setup(t)
	in := llmInput()
	in.Agent.ReadOnly = true
	in.Agent.MaxErrors = 10
	f := b.withLLM(
		call(tools.RunCommand, `{"command":"touch /etc/pwned"}`),
		call(tools.EditFile, `{"path":"/etc/motd","op":"write","content":"x"}`),
		call(tools.RequestEgress, `{"reason":"apt","destinations":["deb.debian.org"]}`),
		call(tools.CreateSnapshot, `{"name":"s"}`),
		call(tools.StopSandbox, `{}`),
		call(tools.ReadFile, `{"path":"/etc/nginx/nginx.conf"}`),
		call(tools.Finish, `{"summary":"nginx listens on 80"}`),
	)
	b.env.RegisterDelayedCallback(func() {
		b.env.SignalWorkflow(SignalApproval, Decision{Decision: DecisionReject, By: "bob", PlanHash: "sha256:plan1", Comment: "report only"})
	}, time.Hour)
	b.env.ExecuteWorkflow(AgentTask, in)
	require.Equal(t, PhaseRejected, b.result(t).Outcome)

	offered := f.inputs[0].Tools
	names := tools.Names(offered)
	require.NotContains(t, names, tools.RunCommand)
	require.NotContains(t, names, tools.EditFile)
	require.Contains(t, names, tools.ReadFile)
	for n := 2; n <= 6; n++ {
		require.Contains(t, f.lastTool(n), "read-only", "step %d", n)
	}
	require.Contains(t, f.lastTool(7), "listen 80")
	b.acts.mu.Lock()
	require.Empty(t, b.acts.execs, "no command may run in a read-only task")
	b.acts.mu.Unlock()
	require.Empty(t, f.edits)
	require.Empty(t, f.egress)
	require.Empty(t, f.stopped)
	st := b.status(t)
	require.Equal(t, EndFinished, st.Agent.EndReason)
	require.Empty(t, st.Agent.Sandboxes[0].Snapshots)
}

func TestLLMAgentStepBudgetStillDiffs(t *testing.T) {
	b := setup(t)
	in := llmInput()
	in.Agent.MaxSteps = 3
	var script []reply
	for i := 0; i < 10; i++ {
		script = append(script, call(tools.RunCommand, fmt.Sprintf(`{"command":"echo %d"}`, i)))
	}
	f := b.withLLM(script...)
	b.env.RegisterDelayedCallback(func() {
		st := b.status(t)
		require.Equal(t, PhaseAwaiting, st.Phase, "the work so far is diffed, planned and verified")
		require.Equal(t, EndMaxSteps, st.Agent.EndReason)
		require.Contains(t, st.Agent.EndDetail, "max_steps=3")
		require.NotNil(t, st.Plan)
		require.Equal(t, "1 file added", st.DiffText)
		require.Len(t, st.Steps, 3)
	}, time.Hour)
	b.signalAt(2*time.Hour, approve("alice"))
	b.env.ExecuteWorkflow(AgentTask, in)
	require.Equal(t, PhaseApplied, b.result(t).Outcome)
	require.Len(t, f.inputs, 3)
}

func TestLLMAgentTokenBudget(t *testing.T) {
	b := setup(t)
	in := llmInput()
	in.Agent.MaxTokens = 2500
	f := b.withLLM(reply{calls: []tools.ToolCall{{Name: tools.ListSandboxes, Arguments: "{}"}}, tokens: 1000},
		reply{calls: []tools.ToolCall{{Name: tools.ListSandboxes, Arguments: "{}"}}, tokens: 1000},
		reply{calls: []tools.ToolCall{{Name: tools.ListSandboxes, Arguments: "{}"}}, tokens: 1000},
		reply{calls: []tools.ToolCall{{Name: tools.ListSandboxes, Arguments: "{}"}}, tokens: 1000})
	b.signalAt(time.Hour, approve("alice"))
	b.env.ExecuteWorkflow(AgentTask, in)
	require.Equal(t, PhaseApplied, b.result(t).Outcome)
	require.Len(t, f.inputs, 3)
	st := b.status(t)
	require.Equal(t, EndMaxTokens, st.Agent.EndReason)
	require.Equal(t, 3000, st.Agent.TokensUsed)
}

func TestLLMAgentDeadlineEndsTheAgentButNotTheTask(t *testing.T) {
	b := setup(t)
	in := llmInput()
	in.Limits.Deadline = Duration(10 * time.Minute)
	b.withLLM(call(tools.RunCommand, `{"command":"echo work"}`), call(tools.RequestApproval, `{"question":"which port?","options":["80","8080"]}`))
	b.env.RegisterDelayedCallback(func() {
		st := b.status(t)
		require.Equal(t, PhaseAwaiting, st.Phase)
		require.Equal(t, EndDeadline, st.Agent.EndReason)
		require.Equal(t, "cancelled", st.Agent.Questions[0].Status)
	}, time.Hour)
	b.signalAt(2*time.Hour, approve("alice"))
	b.env.ExecuteWorkflow(AgentTask, in)
	require.Equal(t, PhaseApplied, b.result(t).Outcome)
}

func TestLLMAgentEndpointFailureFailsClearly(t *testing.T) {
	b := setup(t)
	b.withLLM(call(tools.ListSandboxes, `{}`),
		reply{err: temporal.NewNonRetryableApplicationError("LLM endpoint http://x/v1 failed 5 times; last: HTTP 503", tools.ErrTypeLLMUnavailable, nil)})
	b.env.ExecuteWorkflow(AgentTask, llmInput())
	require.True(t, b.env.IsWorkflowCompleted())
	require.ErrorContains(t, b.env.GetWorkflowError(), "failed 5 times")
	st := b.status(t)
	require.Equal(t, EndLLMFailed, st.Agent.EndReason)
	require.Contains(t, st.Agent.EndDetail, "HTTP 503")
	b.requireCleanedUp(t)
}

func TestLLMAgentCompactsOlderTurns(t *testing.T) {
	b := setup(t)
	in := llmInput()
	in.Agent.ContextTokens = 2000
	var script []reply
	for i := 0; i < 8; i++ {
		script = append(script, reply{calls: []tools.ToolCall{{Name: tools.RunCommand, Arguments: fmt.Sprintf(`{"command":"echo %d"}`, i)}}, tokens: 2000 + 100*i})
	}
	f := b.withLLM(script...)
	b.signalAt(time.Hour, approve("alice"))
	b.env.ExecuteWorkflow(AgentTask, in)
	require.Equal(t, PhaseApplied, b.result(t).Outcome)

	require.NotEmpty(t, f.summaries, "older turns were summarised by the LLM")
	require.Contains(t, f.summaries[0].Messages[1].Content, "echo 0", "the summary sees the folded turns")
	ev := b.acts.eventsOf("agent_compaction")
	require.NotEmpty(t, ev)
	require.Equal(t, "SUMMARY: inspected nginx", ev[0].Data["summary"])
	var after tools.StepInput
	for _, in := range f.inputs {
		if len(in.Messages) > 3 && strings.Contains(in.Messages[2].Content, "Summary of your earlier work") {
			after = in
			break
		}
	}
	require.NotEmpty(t, after.Messages, "a later step starts from the summary")
	require.Less(t, len(after.Messages), len(f.inputs[len(f.inputs)-1].Messages)+8)
	for _, m := range after.Messages[3:] {
		require.NotContains(t, m.Content, "echo 0")
	}
	require.Equal(t, tools.RoleAssistant, after.Messages[3].Role, "the kept tail starts with a call, not an orphaned result")
	require.Positive(t, b.status(t).Agent.Compactions)
}
