package workflows

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Signal, update and query names. They are part of the public contract:
// `temporal workflow signal --name approval`, `temporal workflow query
// --type status`.
const (
	SignalApproval = "approval"
	UpdateDecide   = "decide"
	QueryStatus    = "status"
)

// Decisions an approver can take.
const (
	DecisionApprove = "approve"
	DecisionReject  = "reject"
	DecisionModify  = "modify"
)

// Decision is the payload of the `approval` signal and the `decide` update.
type Decision struct {
	Decision string `json:"decision"`
	By       string `json:"by"`
	Comment  string `json:"comment,omitempty"`
	PlanHash string `json:"plan_hash"`
	Playbook string `json:"playbook,omitempty"` // modify only
	// Override accepts a plan whose verification failed. It is recorded.
	Override bool `json:"override_verification,omitempty"`
}

// Vote is an accepted approval.
type Vote struct {
	By       string    `json:"by"`
	At       time.Time `json:"at"`
	PlanHash string    `json:"plan_hash"`
	Comment  string    `json:"comment,omitempty"`
	Override bool      `json:"override_verification,omitempty"`
}

// DeniedAttempt is a decision that was not taken, with the reason.
type DeniedAttempt struct {
	By       string    `json:"by"`
	At       time.Time `json:"at"`
	Decision string    `json:"decision"`
	PlanHash string    `json:"plan_hash"`
	Reason   string    `json:"reason"`
}

// DecisionResult is what the `decide` update returns.
type DecisionResult struct {
	Accepted bool   `json:"accepted"`
	Outcome  string `json:"outcome"` // vote-recorded | approved | rejected | modify-accepted
	Votes    int    `json:"votes"`
	Quorum   int    `json:"quorum"`
}

// Gate is the approval state machine for one plan. It is pure: the
// workflow feeds it decisions and reads the outcome.
type Gate struct {
	Policy       ApprovalPolicy  `json:"policy"`
	RequestedBy  string          `json:"requested_by"`
	PlanHash     string          `json:"plan_hash"`
	Verified     bool            `json:"verified"`
	Open         bool            `json:"open"` // accepting decisions
	ExpiresAt    time.Time       `json:"expires_at"`
	Votes        []Vote          `json:"votes"`
	Denied       []DeniedAttempt `json:"denied"`
	Outcome      string          `json:"outcome,omitempty"` // approved | rejected | expired | modify
	RejectedBy   string          `json:"rejected_by,omitempty"`
	RejectReason string          `json:"reject_reason,omitempty"`
	Modified     *Decision       `json:"-"` // the pending modify decision, if any
}

// Check says whether d would be accepted right now, without changing
// anything. It returns the refusal reason, or "" when acceptable.
func (g *Gate) Check(d Decision) string {
	if !g.Open {
		return "the task is not waiting for approval"
	}
	switch d.Decision {
	case DecisionApprove, DecisionReject, DecisionModify:
	default:
		return fmt.Sprintf("unknown decision %q (want approve, reject or modify)", d.Decision)
	}
	if strings.TrimSpace(d.By) == "" {
		return "the decision must name who takes it (by)"
	}
	if !contains(g.Policy.Approvers, d.By) {
		return fmt.Sprintf("%s is not an approver of this task", d.By)
	}
	if d.By == g.RequestedBy && !g.Policy.AllowSelfApproval && d.Decision != DecisionReject {
		return fmt.Sprintf("%s started this task and the policy does not allow self-approval", d.By)
	}
	if d.PlanHash != g.PlanHash {
		return fmt.Sprintf("plan_hash %q is not the current plan %q: review the current plan and decide again", short(d.PlanHash), short(g.PlanHash))
	}
	for _, v := range g.Votes {
		if v.By == d.By {
			return fmt.Sprintf("%s has already voted on this plan", d.By)
		}
	}
	switch d.Decision {
	case DecisionReject:
		if strings.TrimSpace(d.Comment) == "" {
			return "a rejection needs a comment"
		}
	case DecisionModify:
		if strings.TrimSpace(d.Playbook) == "" {
			return "modify needs the edited playbook"
		}
	case DecisionApprove:
		if !g.Verified && !d.Override {
			return "the plan failed verification; approve with override_verification to apply it anyway"
		}
	}
	return ""
}

// Decide applies d at time now. A refused decision is recorded in Denied.
func (g *Gate) Decide(d Decision, now time.Time) (DecisionResult, string) {
	res := DecisionResult{Votes: len(g.Votes), Quorum: g.Policy.Quorum}
	if reason := g.Check(d); reason != "" {
		g.Denied = append(g.Denied, DeniedAttempt{By: d.By, At: now, Decision: d.Decision, PlanHash: d.PlanHash, Reason: reason})
		return res, reason
	}
	res.Accepted = true
	switch d.Decision {
	case DecisionReject:
		g.Open = false
		g.Outcome = "rejected"
		g.RejectedBy = d.By
		g.RejectReason = d.Comment
		res.Outcome = "rejected"
	case DecisionModify:
		g.Open = false
		g.Outcome = "modify"
		dd := d
		g.Modified = &dd
		res.Outcome = "modify-accepted"
	case DecisionApprove:
		g.Votes = append(g.Votes, Vote{By: d.By, At: now, PlanHash: d.PlanHash, Comment: d.Comment, Override: d.Override})
		res.Votes = len(g.Votes)
		res.Outcome = "vote-recorded"
		if len(g.Votes) >= g.Policy.Quorum {
			g.Open = false
			g.Outcome = "approved"
			res.Outcome = "approved"
		}
	}
	return res, ""
}

// Expire closes the gate as expired if it is still open.
func (g *Gate) Expire() {
	if g.Open {
		g.Open = false
		g.Outcome = "expired"
		g.RejectReason = "approval expired"
	}
}

// Approvers returns who voted, in order.
func (g *Gate) Approvers() []string {
	out := make([]string, 0, len(g.Votes))
	for _, v := range g.Votes {
		out = append(out, v.By)
	}
	return out
}

// ParseDecision turns an arbitrary signal payload into a Decision. Anything
// that is not a JSON object with only the known fields is refused, so a
// garbage signal is recorded and ignored instead of failing the workflow.
func ParseDecision(raw any) (Decision, error) {
	b, err := json.Marshal(raw)
	if err != nil {
		return Decision{}, fmt.Errorf("payload is not JSON: %w", err)
	}
	var d Decision
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&d); err != nil {
		return Decision{}, fmt.Errorf("payload is not a decision object: %v", err)
	}
	return d, nil
}

func short(h string) string {
	if len(h) > 19 {
		return h[:19] + "…"
	}
	return h
}
