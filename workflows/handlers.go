package workflows

import (
	"errors"
	"fmt"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"
)

// registerHandlers installs the status query, the approval signal and the
// decide update.
func (t *task) registerHandlers(ctx workflow.Context) error {
	if err := workflow.SetQueryHandler(ctx, QueryStatus, func() (Status, error) {
		return t.st, nil
	}); err != nil {
		return fmt.Errorf("register status query: %w", err)
	}

	ch := workflow.GetSignalChannel(ctx, SignalApproval)
	workflow.Go(ctx, func(gctx workflow.Context) {
		for {
			// Receive into `any` so that a payload of the wrong shape is
			// recorded and ignored instead of failing the workflow task.
			var raw any
			if !ch.Receive(gctx, &raw) {
				return
			}
			d, err := ParseDecision(raw)
			if err != nil {
				t.record(ctx, "approval_denied", "", map[string]any{"reason": "garbage approval signal: " + err.Error()})
				continue
			}
			t.decide(ctx, d, "signal")
		}
	})

	return workflow.SetUpdateHandlerWithOptions(ctx, UpdateDecide,
		func(ctx workflow.Context, d Decision) (DecisionResult, error) {
			res, reason := t.decide(ctx, d, "update")
			if reason != "" {
				return res, temporal.NewApplicationError(reason, "DecisionDenied")
			}
			return res, nil
		},
		workflow.UpdateHandlerOptions{Validator: func(ctx workflow.Context, d Decision) error {
			// Only refuse here what never deserves an audit row: the task
			// is not waiting. Everything else is decided (and recorded) by
			// the handler.
			if t.gate == nil || !t.gate.Open {
				return errors.New("the task is not waiting for approval (phase " + t.st.Phase + ")")
			}
			return nil
		}})
}

// decide feeds one decision to the gate and records it either way.
func (t *task) decide(ctx workflow.Context, d Decision, via string) (DecisionResult, string) {
	if t.gate == nil {
		reason := "the task is not waiting for approval (phase " + t.st.Phase + ")"
		t.record(ctx, "approval_denied", d.By, map[string]any{"decision": d.Decision, "plan_hash": d.PlanHash, "reason": reason, "via": via})
		return DecisionResult{}, reason
	}
	res, reason := t.gate.Decide(d, workflow.Now(ctx))
	if reason != "" {
		t.logger.Warn("approval denied", "by", d.By, "reason", reason)
		t.record(ctx, "approval_denied", d.By, map[string]any{"decision": d.Decision, "plan_hash": d.PlanHash, "reason": reason, "via": via})
		return res, reason
	}
	t.logger.Info("approval accepted", "by", d.By, "decision", d.Decision, "outcome", res.Outcome)
	t.record(ctx, "approval", d.By, map[string]any{"decision": d.Decision, "plan_hash": d.PlanHash, "comment": d.Comment, "override_verification": d.Override, "outcome": res.Outcome, "via": via})
	return res, ""
}

// awaitApproval waits for the gate to close: quorum, reject, modify or
// expiry. Reminders fire every remind_every as a recorded event.
func (t *task) awaitApproval(ctx workflow.Context) error {
	g := t.gate
	now := workflow.Now(ctx)
	g.Open = true
	g.ExpiresAt = now.Add(t.in.Approval.ExpiresAfter.D())
	nextRemind := now.Add(t.in.Approval.RemindEvery.D())
	t.setPhase(ctx, PhaseAwaiting)
	t.record(ctx, "approval_requested", "airlock", map[string]any{"plan_hash": g.PlanHash, "approvers": t.in.Approval.Approvers, "quorum": t.in.Approval.Quorum, "expires_at": g.ExpiresAt, "verified": g.Verified})
	for g.Open {
		wake := g.ExpiresAt
		if nextRemind.Before(wake) {
			wake = nextRemind
		}
		done, err := workflow.AwaitWithTimeout(ctx, wake.Sub(workflow.Now(ctx)), func() bool { return !g.Open })
		if err != nil {
			return err
		}
		if done {
			break
		}
		now = workflow.Now(ctx)
		if !now.Before(g.ExpiresAt) {
			g.Expire()
			t.logger.Warn("approval expired", "plan_hash", g.PlanHash)
			t.record(ctx, "approval_expired", "airlock", map[string]any{"plan_hash": g.PlanHash, "votes": len(g.Votes)})
			break
		}
		if !now.Before(nextRemind) {
			t.st.Reminders++
			t.logger.Info("approval reminder", "plan_hash", g.PlanHash, "approvers", t.in.Approval.Approvers, "expires_at", g.ExpiresAt)
			t.record(ctx, "reminder", "airlock", map[string]any{"n": t.st.Reminders, "approvers": t.in.Approval.Approvers, "expires_at": g.ExpiresAt})
			nextRemind = nextRemind.Add(t.in.Approval.RemindEvery.D())
		}
	}
	// Let a handler that closed the gate finish before moving on.
	return workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) })
}
