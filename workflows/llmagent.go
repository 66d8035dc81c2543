package workflows

import (
	"encoding/json"
	"fmt"
	"strings"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/airlock-dev/airlock/activities/agent/tools"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

// runLLMAgent runs the LLM tool loop (step 5). The conversation lives in
// workflow state; each LLM call is an activity on the control queue and
// each tool call an activity on the right queue. It returns nil when the
// model finishes or a budget (steps, tokens, wall time) runs out, so that
// the work so far is still diffed, planned and shown; it returns an error
// when the model keeps erring, the endpoint fails, or a human cancels.
func (t *task) runLLMAgent(ctx workflow.Context, sbx sandbox.Info, deadlineHit func() bool) error {
	ag := t.agentState()
	lim := t.in.Agent.limits()
	st := &ag.status
	st.Model, st.MaxSteps, st.MaxTokens, st.MaxErrors = t.in.Agent.Model, lim.maxSteps, lim.maxTokens, lim.maxErrors
	st.Sandboxes = []AgentSandbox{{Name: sbx.Name, IP: sbx.IP, Main: true, State: "running"}}
	offered := tools.Offered(t.in.Agent.ReadOnly)
	ag.messages = []tools.Message{
		{Role: tools.RoleSystem, Content: t.systemPrompt(lim)},
		{Role: tools.RoleUser, Content: fmt.Sprintf("Goal: %s\n\nMain sandbox: %s (ip %s). After approval the change goes to %s.", t.in.Goal, sbx.Name, sbx.IP, targetLabel(t.in.Target))},
	}
	t.record(ctx, "agent_started", "airlock", map[string]any{"model": t.in.Agent.Model, "read_only": t.in.Agent.ReadOnly, "max_steps": lim.maxSteps,
		"max_tokens": lim.maxTokens, "deadline": t.in.Limits.Deadline.D().String(), "tools": tools.Names(offered)})

	for {
		switch {
		case ag.cancel != nil:
			t.endAgent(ctx, EndCancelled, fmt.Sprintf("cancelled by %s: %s", ag.cancel.By, ag.cancel.Reason))
			return t.cancelled()
		case deadlineHit():
			t.endAgent(ctx, EndDeadline, fmt.Sprintf("wall time budget limits.deadline=%s used up after %d steps; the work so far is diffed", t.in.Limits.Deadline.D(), st.Steps))
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case st.ConsecutiveErrors >= lim.maxErrors:
			detail := fmt.Sprintf("the model made %d errors in a row (agent.max_errors=%d)", st.ConsecutiveErrors, lim.maxErrors)
			t.endAgent(ctx, EndTooManyErrors, detail)
			return temporal.NewNonRetryableApplicationError(detail, "AgentErrors", nil)
		case st.Steps >= lim.maxSteps:
			t.endAgent(ctx, EndMaxSteps, fmt.Sprintf("step budget agent.max_steps=%d used up; the work so far is diffed", lim.maxSteps))
			return nil
		case st.TokensUsed >= lim.maxTokens:
			t.endAgent(ctx, EndMaxTokens, fmt.Sprintf("token budget agent.max_tokens=%d used up (%d used); the work so far is diffed", lim.maxTokens, st.TokensUsed))
			return nil
		}
		t.injectPending()
		if t.needsCompaction(lim) {
			t.compact(ctx)
			continue // budgets again: compaction spends tokens
		}
		res, err := t.llmStep(ctx, offered)
		if err != nil {
			if deadlineHit() || temporal.IsCanceledError(err) {
				continue
			}
			t.endAgent(ctx, EndLLMFailed, appMessage(err))
			return fmt.Errorf("agent step %d: %w", st.Steps, err)
		}
		if done := t.handleReply(ctx, res); done {
			t.endAgent(ctx, EndFinished, "the model called finish")
			return nil
		}
	}
}

// handleReply executes the model's tool calls and feeds the results
// back. It reports whether the model called finish.
func (t *task) handleReply(ctx workflow.Context, res tools.StepResult) bool {
	ag := t.agentState()
	calls := res.Message.ToolCalls
	switch {
	case res.Malformed != "":
		ag.messages = append(ag.messages, tools.Message{Role: tools.RoleUser, Content: "[Airlock] Your last reply could not be used: " + res.Malformed + ". Reply with a tool call."})
		t.countError(ctx, "malformed reply: "+res.Malformed)
		return false
	case len(calls) == 0:
		ag.messages = append(ag.messages, res.Message,
			tools.Message{Role: tools.RoleUser, Content: "[Airlock] Reply with a tool call. When the goal is reached and checked, call finish with a summary."})
		t.countError(ctx, "reply without a tool call")
		return false
	}
	ag.messages = append(ag.messages, res.Message)
	finished := false
	for i, call := range calls {
		var r toolResult
		switch {
		case i >= maxCallsPerTurn:
			r = errResult("not run: at most %d tool calls per reply", maxCallsPerTurn)
		case ag.cancel != nil || ctx.Err() != nil || finished:
			r = toolResult{text: "not run: the agent is stopping"}
		default:
			r = t.execTool(ctx, call)
		}
		ag.messages = append(ag.messages, tools.Message{Role: tools.RoleTool, ToolCallID: call.ID, Name: call.Name, Content: r.text})
		t.recordToolStep(ctx, call, r)
		if r.isErr {
			t.countError(ctx, call.Name+": "+firstLine(r.text))
		} else {
			ag.status.ConsecutiveErrors = 0
		}
		if r.finish != "" {
			ag.status.Summary, finished = r.finish, true
		}
	}
	return finished
}

func (t *task) countError(ctx workflow.Context, what string) {
	st := &t.agentState().status
	st.Errors++
	st.ConsecutiveErrors++
	t.logger.Warn("agent error", "n", st.ConsecutiveErrors, "what", what)
}

// llmStep is one LLM call with the whole (bounded) conversation.
func (t *task) llmStep(ctx workflow.Context, offered []tools.Spec) (tools.StepResult, error) {
	ag := t.agentState()
	st := &ag.status
	st.Steps++
	in := tools.StepInput{WorkflowID: t.st.WorkflowID, Step: st.Steps, Model: t.in.Agent.Model, Messages: ag.messages, Tools: offered}
	var res tools.StepResult
	if err := workflow.ExecuteActivity(llmCtx(ctx), ActLLMStep, in).Get(ctx, &res); err != nil {
		return res, err
	}
	st.TokensUsed += res.Usage.TotalTokens
	ag.lastPrompt = res.Usage.PromptTokens
	if st.Model == "" {
		st.Model = res.Model
	}
	names := make([]string, 0, len(res.Message.ToolCalls))
	for _, c := range res.Message.ToolCalls {
		names = append(names, c.Name)
	}
	t.record(ctx, "llm_step", "agent", map[string]any{"step": st.Steps, "prompt_tokens": res.Usage.PromptTokens, "completion_tokens": res.Usage.CompletionTokens,
		"tokens_used": st.TokensUsed, "finish_reason": res.FinishReason, "content": capText(res.Message.Content, 2000), "tool_calls": names,
		"malformed": res.Malformed, "attempts": res.Attempts})
	return res, nil
}

// recordToolStep shows a tool call in the status query (and so in
// `airlock task watch`) and writes it to the audit.
func (t *task) recordToolStep(ctx workflow.Context, call tools.ToolCall, r toolResult) {
	ag := t.agentState()
	ag.status.ToolCalls++
	args := call.Arguments
	if call.Name == tools.RunCommand {
		var a struct {
			Command string `json:"command"`
		}
		if json.Unmarshal([]byte(args), &a) == nil && a.Command != "" {
			args = a.Command // as the runbook's run steps: the playbook generator cites it
		}
		if r.isErr {
			r.exitCode = -1
		}
	}
	rec := StepRecord{N: len(t.st.Steps) + 1, Tool: call.Name, Args: capText(args, 2048), ExitCode: r.exitCode,
		Output: capText(r.text, t.in.Limits.OutputCap), TotalBytes: r.totalBytes, OutputRef: r.outputRef, DurationMs: r.durationMs}
	if r.isErr {
		rec.Error = capText(strings.TrimPrefix(firstLine(r.text), "ERROR: "), 500)
	}
	t.st.Steps = append(t.st.Steps, rec)
	data := map[string]any{"n": rec.N, "tool": rec.Tool, "args": rec.Args, "exit_code": rec.ExitCode, "duration_ms": rec.DurationMs,
		"total_bytes": rec.TotalBytes, "output": rec.Output, "call_id": call.ID, "llm_step": ag.status.Steps}
	if rec.Error != "" {
		data["error"] = rec.Error
	}
	t.recordArtifact(ctx, "command", "agent", data, rec.OutputRef)
}

// injectPending gives the model what arrived since its last step: human
// instructions and Airlock's notes.
func (t *task) injectPending() {
	ag := t.agentState()
	for _, in := range ag.instructions {
		ag.messages = append(ag.messages, tools.Message{Role: tools.RoleUser, Content: fmt.Sprintf("[Instruction from %s, a human operator of this task. Follow it.]\n%s", in.By, in.Text)})
	}
	for _, n := range ag.notes {
		ag.messages = append(ag.messages, tools.Message{Role: tools.RoleUser, Content: "[Airlock] " + n})
	}
	ag.instructions, ag.notes = nil, nil
}

func (t *task) endAgent(ctx workflow.Context, reason, detail string) {
	st := &t.agentState().status
	if st.EndReason != "" {
		return
	}
	st.EndReason, st.EndDetail = reason, detail
	t.record(ctx, "agent_end", "airlock", map[string]any{"reason": reason, "detail": detail, "summary": st.Summary, "steps": st.Steps,
		"tool_calls": st.ToolCalls, "tokens_used": st.TokensUsed, "errors": st.Errors})
}

func (t *task) systemPrompt(lim agentLimits) string {
	var b strings.Builder
	fmt.Fprintf(&b, `You are Airlock's system administration agent. You work as root inside a disposable sandbox VM (Debian, image %s), never on production. Everything you change in the main sandbox is captured as a diff, turned into an Ansible playbook, verified on a fresh clone, and applied to production (%s) only after a human approves it.

How to work:
- Act only through the tools. Every call is recorded and shown to the reviewer.
- Inspect before you change. Prefer precise edits (edit_file op=replace) to rewriting whole files.
- The sandbox has no network. If you really need it (for example to install a package that is not in the image), call request_egress with the reason and the destinations, and wait for a human's answer.
- Destructive commands (rm -rf /, mkfs, dd onto disks, reboot, stopping ssh) are refused, and file tools only reach configuration paths.
- Take a snapshot before a risky change; restore_snapshot undoes it.
- When the goal is reached, check it (for example with curl), then call finish with a short summary for the reviewer.
Budgets: at most %d steps and %d tokens; wall time %s.`, t.in.Source.Image, targetLabel(t.in.Target), lim.maxSteps, lim.maxTokens, t.in.Limits.Deadline.D())
	if t.in.Agent.ReadOnly {
		b.WriteString("\nThis task is READ-ONLY: investigate and report. Tools that change anything are not offered and are refused. Call finish with your findings.")
	}
	return b.String()
}

// needsCompaction: the context nears agent.context_tokens (by the last
// prompt's count or an estimate of 4 bytes per token), or the token
// budget nears its end while there are older turns to fold.
func (t *task) needsCompaction(lim agentLimits) bool {
	ag := t.agentState()
	if _, older := compactionCut(ag.messages); older < 4 {
		return false
	}
	est := max(ag.lastPrompt, conversationBytes(ag.messages)/4)
	remaining := lim.maxTokens - ag.status.TokensUsed
	return est > lim.contextTokens*3/4 || (ag.lastPrompt > lim.contextTokens/4 && remaining < 3*ag.lastPrompt)
}

// compactionCut returns the index where the kept tail of the conversation
// starts (an assistant message, so that tool results stay with their
// calls) and how many older messages it would fold.
func compactionCut(msgs []tools.Message) (int, int) {
	const keep = 6
	cut := len(msgs) - keep
	for cut > 2 && msgs[cut].Role != tools.RoleAssistant {
		cut--
	}
	if cut <= 2 {
		return len(msgs), 0
	}
	return cut, cut - 2
}

func conversationBytes(msgs []tools.Message) int {
	n := 0
	for _, m := range msgs {
		n += len(m.Content) + 16
		for _, c := range m.ToolCalls {
			n += len(c.Name) + len(c.Arguments) + 16
		}
	}
	return n
}

// compact folds the older turns into a summary written by the LLM (or,
// if that fails, a note that they were dropped). The summary is recorded
// as an event.
func (t *task) compact(ctx workflow.Context) {
	ag := t.agentState()
	cut, older := compactionCut(ag.messages)
	var transcript strings.Builder
	for _, m := range ag.messages[2:cut] {
		switch {
		case m.Role == tools.RoleTool:
			fmt.Fprintf(&transcript, "RESULT of %s: %s\n", m.Name, capText(m.Content, 1500))
		case len(m.ToolCalls) > 0:
			for _, c := range m.ToolCalls {
				fmt.Fprintf(&transcript, "CALL %s %s\n", c.Name, capText(c.Arguments, 1500))
			}
			if m.Content != "" {
				fmt.Fprintf(&transcript, "AGENT: %s\n", capText(m.Content, 1500))
			}
		default:
			fmt.Fprintf(&transcript, "%s: %s\n", strings.ToUpper(m.Role), capText(m.Content, 1500))
		}
	}
	in := tools.StepInput{WorkflowID: t.st.WorkflowID, Step: ag.status.Steps, Model: t.in.Agent.Model, MaxCompletionTokens: 1000, Messages: []tools.Message{
		{Role: tools.RoleSystem, Content: "You compress the work log of a system administration agent so it can continue with less context. Keep facts: what was inspected and found, what was changed (paths, packages, services), snapshots taken, questions asked and their answers, and what is still to do. At most 300 words."},
		{Role: tools.RoleUser, Content: "Goal: " + t.in.Goal + "\n\nWork log:\n" + capText(transcript.String(), 32<<10)},
	}}
	var res tools.StepResult
	summary, failed := "", ""
	if err := workflow.ExecuteActivity(llmCtx(ctx), ActLLMStep, in).Get(ctx, &res); err != nil {
		failed = appMessage(err)
	} else if res.Malformed != "" || strings.TrimSpace(res.Message.Content) == "" {
		failed = "empty or malformed summary " + res.Malformed
	} else {
		summary = res.Message.Content
		ag.status.TokensUsed += res.Usage.TotalTokens
	}
	if failed != "" {
		summary = fmt.Sprintf("(%d earlier messages were dropped to save context; summarising them failed: %s)", older, failed)
	}
	head := []tools.Message{ag.messages[0], ag.messages[1], {Role: tools.RoleUser, Content: "[Airlock] Summary of your earlier work (older turns were folded to save context):\n" + summary}}
	ag.messages = append(head, ag.messages[cut:]...)
	ag.lastPrompt = 0
	ag.status.Compactions++
	t.record(ctx, "agent_compaction", "agent", map[string]any{"summary": summary, "folded_messages": older, "tokens": res.Usage.TotalTokens, "error": failed})
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
