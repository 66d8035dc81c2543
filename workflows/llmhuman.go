package workflows

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/airlock-dev/airlock/activities/agent/tools"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

// This file holds what puts a human in the agent's loop: durable
// questions (request_approval, request_egress) answered by the `answer`
// signal or update, the `instruct` and `cancel` signals, and egress that
// is opened only after an approver said so and closed again on a timer.

// agentState is the agent's workflow state (shared by the LLM agent and
// the runbook agent's human steps).
type agentState struct {
	status       AgentStatus
	messages     []tools.Message // the LLM conversation
	lastPrompt   int             // prompt tokens of the last LLM call
	instructions []Instruction   // received, not yet shown to the model
	notes        []string        // Airlock's notes for the model (egress closed, ...)
	cancel       *CancelRequest
	extras       int               // extra sandboxes created so far
	snapshots    map[string]string // main sandbox snapshot -> manifest ref (lookup only)
}

// agentState returns the agent's state, creating it (and its part of the
// status query) on first use.
func (t *task) agentState() *agentState {
	if t.agent == nil {
		t.agent = &agentState{status: AgentStatus{Mode: t.in.Agent.Mode, ReadOnly: t.in.Agent.ReadOnly}, snapshots: map[string]string{}}
		t.st.Agent = &t.agent.status
	}
	return t.agent
}

// registerAgentHandlers installs the answer, instruct and cancel signals
// and the answer update. Registering adds no history events, so runbook
// histories recorded before this existed replay unchanged.
func (t *task) registerAgentHandlers(ctx workflow.Context) error {
	listen := func(name string, handle func(raw any)) {
		ch := workflow.GetSignalChannel(ctx, name)
		workflow.Go(ctx, func(g workflow.Context) {
			for {
				var raw any
				if !ch.Receive(g, &raw) {
					return
				}
				handle(raw)
			}
		})
	}
	listen(SignalAnswer, func(raw any) {
		var a Answer
		if err := parseStrict(raw, &a); err != nil {
			t.record(ctx, "answer_denied", "", map[string]any{"reason": "garbage answer signal: " + err.Error()})
			return
		}
		t.answer(ctx, a, "signal")
	})
	listen(SignalInstruct, func(raw any) {
		var in Instruction
		err := parseStrict(raw, &in)
		if err == nil {
			err = t.instruct(ctx, in)
		}
		if err != nil {
			t.record(ctx, "instruction_denied", in.By, map[string]any{"reason": err.Error()})
		}
	})
	listen(SignalCancel, func(raw any) {
		var c CancelRequest
		err := parseStrict(raw, &c)
		if err == nil {
			err = t.requestCancel(ctx, c)
		}
		if err != nil {
			t.record(ctx, "cancel_denied", c.By, map[string]any{"reason": err.Error()})
		}
	})
	return workflow.SetUpdateHandlerWithOptions(ctx, UpdateAnswer,
		func(ctx workflow.Context, a Answer) (Question, error) {
			if reason := t.answer(ctx, a, "update"); reason != "" {
				return Question{}, temporal.NewApplicationError(reason, "AnswerDenied")
			}
			return *t.agentState().question(a.QuestionID), nil
		},
		workflow.UpdateHandlerOptions{Validator: func(ctx workflow.Context, a Answer) error {
			if q := t.agent.questionOrNil(a.QuestionID); q == nil || q.Status != "pending" {
				return fmt.Errorf("no pending question %q", a.QuestionID)
			}
			return nil
		}})
}

func (ag *agentState) question(id string) *Question {
	for i := range ag.status.Questions {
		if ag.status.Questions[i].ID == id {
			return &ag.status.Questions[i]
		}
	}
	return nil
}

func (ag *agentState) questionOrNil(id string) *Question {
	if ag == nil {
		return nil
	}
	return ag.question(id)
}

// mayDirect says whether by may instruct or cancel the agent: an approver
// or the person who started the task.
func (t *task) mayDirect(by string) error {
	switch {
	case strings.TrimSpace(by) == "":
		return errors.New("the signal must name who sends it (by)")
	case by != t.in.Origin.By && !contains(t.in.Approval.Approvers, by):
		return fmt.Errorf("%s is neither an approver nor the requester of this task", by)
	case (t.agent != nil && t.agent.status.EndReason != "") || t.st.Phase != PhaseWorking:
		return fmt.Errorf("the agent is not working (phase %s)", t.st.Phase)
	}
	return nil
}

func (t *task) instruct(ctx workflow.Context, in Instruction) error {
	if err := t.mayDirect(in.By); err != nil {
		return err
	}
	if t.in.Agent.Mode != "llm" {
		return errors.New("a runbook takes no instructions; cancel the task and start another runbook")
	}
	if strings.TrimSpace(in.Text) == "" || len(in.Text) > tools.MaxTextBytes {
		return fmt.Errorf("the instruction text must be 1 to %d bytes", tools.MaxTextBytes)
	}
	ag := t.agentState()
	ag.instructions = append(ag.instructions, in)
	ag.status.Instructions++
	t.record(ctx, "agent_instruction", in.By, map[string]any{"text": in.Text})
	return nil
}

func (t *task) requestCancel(ctx workflow.Context, c CancelRequest) error {
	if err := t.mayDirect(c.By); err != nil {
		return err
	}
	ag := t.agentState()
	if ag.cancel == nil {
		ag.cancel = &c
	}
	t.record(ctx, "agent_cancel_requested", c.By, map[string]any{"reason": c.Reason})
	return nil
}

// cancelled returns the error that ends the task after a cancel signal.
func (t *task) cancelled() error {
	c := t.agent.cancel
	return temporal.NewCanceledError(fmt.Sprintf("cancelled by %s: %s", c.By, c.Reason))
}

// answer feeds one answer to its question and records it either way. It
// returns the refusal reason, or "".
func (t *task) answer(ctx workflow.Context, a Answer, via string) string {
	ag := t.agentState()
	q := ag.question(a.QuestionID)
	reason := ""
	switch {
	case q == nil:
		reason = fmt.Sprintf("no question %q", a.QuestionID)
	case q.Status != "pending":
		reason = fmt.Sprintf("question %s is %s", q.ID, q.Status)
	case strings.TrimSpace(a.By) == "":
		reason = "the answer must name who gives it (by)"
	case !contains(t.in.Approval.Approvers, a.By):
		reason = fmt.Sprintf("%s is not an approver of this task", a.By)
	case (q.Kind == "egress" || q.Kind == "overcommit") && a.By == t.in.Origin.By && !t.in.Approval.AllowSelfApproval:
		reason = fmt.Sprintf("%s started this task and the policy does not allow self-approval", a.By)
	case !contains(q.Options, a.Choice):
		reason = fmt.Sprintf("choice %q is not one of %s", a.Choice, strings.Join(q.Options, ", "))
	}
	if reason != "" {
		if q != nil {
			q.Denied = append(q.Denied, AnswerDenied{By: a.By, At: workflow.Now(ctx), Choice: a.Choice, Reason: reason})
		}
		t.record(ctx, "answer_denied", a.By, map[string]any{"question_id": a.QuestionID, "choice": a.Choice, "reason": reason, "via": via})
		return reason
	}
	q.Status, q.AnsweredBy, q.Choice, q.Comment, q.AnsweredAt = "answered", a.By, a.Choice, a.Comment, workflow.Now(ctx)
	t.record(ctx, "answer", a.By, map[string]any{"question_id": q.ID, "kind": q.Kind, "choice": a.Choice, "comment": a.Comment, "via": via})
	return ""
}

// ask records a question and waits durably for its answer, its expiry or
// a cancel signal. It returns the question's final state.
func (t *task) ask(ctx workflow.Context, q Question) (Question, error) {
	ag := t.agentState()
	now := workflow.Now(ctx)
	q.ID = fmt.Sprintf("q%d", len(ag.status.Questions)+1)
	q.AskedAt, q.ExpiresAt, q.Status = now, now.Add(t.in.Agent.limits().questionTimeout), "pending"
	q.Approvers, q.AllowSelfApproval = t.in.Approval.Approvers, t.in.Approval.AllowSelfApproval
	ag.status.Questions = append(ag.status.Questions, q)
	i := len(ag.status.Questions) - 1
	t.record(ctx, "agent_question", "agent", map[string]any{"question_id": q.ID, "kind": q.Kind, "text": q.Text, "options": q.Options,
		"destinations": q.Destinations, "minutes": q.Minutes, "sandbox": q.Sandbox, "approvers": t.in.Approval.Approvers, "expires_at": q.ExpiresAt})
	workflow.SetCurrentDetails(ctx, fmt.Sprintf("**%s** — waiting for an answer to %s: %s", t.st.Phase, q.ID, q.Text))
	answered, err := workflow.AwaitWithTimeout(ctx, q.ExpiresAt.Sub(now), func() bool {
		return ag.status.Questions[i].Status != "pending" || ag.cancel != nil
	})
	workflow.SetCurrentDetails(ctx, fmt.Sprintf("**%s** — %s", t.st.Phase, t.in.Goal))
	cur := &ag.status.Questions[i]
	switch {
	case err != nil:
		cur.Status = "cancelled"
		return *cur, err
	case cur.Status == "answered":
	case !answered:
		cur.Status = "expired"
		t.record(ctx, "agent_question_expired", "airlock", map[string]any{"question_id": cur.ID, "kind": cur.Kind})
	default: // a cancel signal
		cur.Status = "cancelled"
	}
	return *cur, nil
}

// requestEgress asks for egress and, once an approver approves, opens it
// for one sandbox for the approved minutes. It returns the text for the
// model and whether egress is now open.
func (t *task) requestEgress(ctx workflow.Context, name string, a tools.RequestEgressArgs) (string, bool, error) {
	ag := t.agentState()
	maxMin := t.in.Agent.limits().maxEgressMinutes
	minutes, note := a.Minutes, ""
	if minutes == 0 {
		minutes = min(10, maxMin)
	}
	if minutes > maxMin {
		minutes, note = maxMin, fmt.Sprintf(" (asked for %d minutes; this task allows at most %d)", a.Minutes, maxMin)
	}
	for _, g := range ag.status.Egress {
		if g.Sandbox == name && g.Open {
			return fmt.Sprintf("egress for %s is already open until %s", name, g.Until.UTC().Format(time.RFC3339)), true, nil
		}
	}
	q, err := t.ask(ctx, Question{Kind: "egress", Text: a.Reason, Options: []string{"approve", "deny"}, Destinations: a.Destinations, Minutes: minutes, Sandbox: name})
	if err != nil {
		return "", false, err
	}
	switch {
	case q.Status == "expired":
		return fmt.Sprintf("no approver answered %s within %s: egress stays closed. Continue without the network, or ask again with a clearer reason.", q.ID, q.ExpiresAt.Sub(q.AskedAt)), false, nil
	case q.Status != "answered":
		return "the request was cancelled: egress stays closed", false, nil
	case q.Choice != "approve":
		return fmt.Sprintf("egress denied by %s%s: the sandbox stays without network. Find another way (packages already in the image, files you write yourself) or explain better and ask again.", q.AnsweredBy, comment(q.Comment)), false, nil
	}
	err = workflow.ExecuteActivity(hostCtx(ctx, t.in.Source.Host, 2*time.Minute, 3), ActSetEgress, sandbox.EgressInput{Sandbox: name, Open: true}).Get(ctx, nil)
	if err != nil {
		t.record(ctx, "egress_error", "airlock", map[string]any{"sandbox": name, "question_id": q.ID, "error": err.Error()})
		return fmt.Sprintf("egress was approved by %s but opening it failed: %v. The sandbox stays closed.", q.AnsweredBy, err), false, nil
	}
	now := workflow.Now(ctx)
	g := EgressGrant{Sandbox: name, QuestionID: q.ID, ApprovedBy: q.AnsweredBy, Destinations: a.Destinations, OpenedAt: now, Until: now.Add(time.Duration(minutes) * time.Minute), Open: true}
	ag.status.Egress = append(ag.status.Egress, g)
	idx := len(ag.status.Egress) - 1
	t.record(ctx, "egress_opened", q.AnsweredBy, map[string]any{"sandbox": name, "question_id": q.ID, "minutes": minutes, "until": g.Until, "destinations": a.Destinations})
	workflow.Go(ctx, func(gctx workflow.Context) {
		if err := workflow.Sleep(gctx, g.Until.Sub(now)); err != nil {
			return // the agent ended first: closeAgentResources closes it
		}
		t.closeEgress(gctx, idx, "time up")
	})
	return fmt.Sprintf("egress approved by %s%s: %s can reach the network for %d minutes, until %s%s; then it is closed again.",
		q.AnsweredBy, comment(q.Comment), name, minutes, g.Until.UTC().Format(time.RFC3339), note), true, nil
}

// closeEgress closes one grant (on a disconnected context, so that a
// cancelled agent still closes it) and tells the model at its next step.
func (t *task) closeEgress(ctx workflow.Context, idx int, why string) {
	ag := t.agentState()
	g := &ag.status.Egress[idx]
	if !g.Open {
		return
	}
	g.Open = false
	dctx, cancel := workflow.NewDisconnectedContext(ctx)
	defer cancel()
	err := workflow.ExecuteActivity(hostCtx(dctx, t.in.Source.Host, 2*time.Minute, 10), ActSetEgress, sandbox.EgressInput{Sandbox: g.Sandbox, Open: false}).Get(dctx, nil)
	g = &ag.status.Egress[idx]
	g.ClosedAt, g.CloseReason = workflow.Now(dctx), why
	data := map[string]any{"sandbox": g.Sandbox, "question_id": g.QuestionID, "why": why}
	if err != nil {
		data["error"] = err.Error() // destroying the sandbox closes it too
	}
	t.record(dctx, "egress_closed", "airlock", data)
	ag.notes = append(ag.notes, fmt.Sprintf("egress for %s is closed again (%s)", g.Sandbox, why))
}

// closeAgentResources runs when the agent ends, on every path: it closes
// open egress, destroys extra sandboxes and makes sure the main sandbox
// runs again for the capture. With nothing opened or created it does
// nothing, so runbook histories replay unchanged.
func (t *task) closeAgentResources(ctx workflow.Context) {
	ag := t.agent
	if ag == nil {
		return
	}
	dctx, cancel := workflow.NewDisconnectedContext(ctx)
	defer cancel()
	for i := range ag.status.Egress {
		t.closeEgress(dctx, i, "agent finished")
	}
	for i := range ag.status.Sandboxes {
		sb := &ag.status.Sandboxes[i]
		switch {
		case !sb.Main && sb.State != "destroyed":
			t.destroySandbox(dctx, sb.Name, "extra sandbox; agent finished")
			sb.State = "destroyed"
		case sb.Main && sb.State == "stopped" && ctx.Err() == nil:
			var info sandbox.Info
			if err := workflow.ExecuteActivity(hostCtx(dctx, t.in.Source.Host, 5*time.Minute, 3), ActStartSandbox, sb.Name).Get(dctx, &info); err == nil {
				sb.State = "running"
			}
		}
	}
}

func comment(c string) string {
	if c == "" {
		return ""
	}
	return fmt.Sprintf(" (%q)", c)
}
