package approvalsui

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	commonpb "go.temporal.io/api/common/v1"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"

	"github.com/airlock-dev/airlock/workflows"
)

// errNotFound means no AgentTask with that ID exists.
var errNotFound = errors.New("no such task")

var (
	idRe     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$`)
	filterRe = regexp.MustCompile(`^[A-Za-z0-9._:,-]{1,200}$`)
)

// Phases lists every phase, in order, for filters and metrics.
var Phases = []string{
	workflows.PhaseValidating, workflows.PhaseProvisioning, workflows.PhaseBaseline, workflows.PhaseWorking,
	workflows.PhaseCapturing, workflows.PhasePlanning, workflows.PhaseVerifying, workflows.PhaseAwaiting,
	workflows.PhaseApplying, workflows.PhaseApplied, workflows.PhaseRejected, workflows.PhaseExpired,
	workflows.PhaseFailed, workflows.PhaseCancelled,
}

// Sources a task may come from (AirlockSource).
var Sources = workflows.Origins

// filter narrows the task list. Values are checked before they go into a
// visibility query, so nothing a user types can change the query's shape.
type filter struct {
	Phase  string `json:"phase,omitempty"`
	Source string `json:"source,omitempty"`
	Target string `json:"target,omitempty"`
}

func (f filter) validate() error {
	if f.Phase != "" && !slices.Contains(Phases, f.Phase) {
		return fmt.Errorf("unknown phase %q", f.Phase)
	}
	if f.Source != "" && !slices.Contains(Sources, f.Source) {
		return fmt.Errorf("unknown source %q", f.Source)
	}
	if f.Target != "" && !filterRe.MatchString(f.Target) {
		return fmt.Errorf("bad target %q", f.Target)
	}
	return nil
}

func (f filter) query() string {
	q := fmt.Sprintf("WorkflowType = '%s'", workflows.WorkflowType)
	if f.Phase != "" {
		q += fmt.Sprintf(" AND %s = '%s'", workflows.SAPhase.GetName(), f.Phase)
	}
	if f.Source != "" {
		q += fmt.Sprintf(" AND %s = '%s'", workflows.SASource.GetName(), f.Source)
	}
	if f.Target != "" {
		q += fmt.Sprintf(" AND %s = '%s'", workflows.SATarget.GetName(), f.Target)
	}
	return q
}

// TaskRow is one line of the task list.
type TaskRow struct {
	WorkflowID string    `json:"workflow_id"`
	RunID      string    `json:"run_id"`
	Status     string    `json:"status"` // Temporal execution status: Running, Completed, ...
	Phase      string    `json:"phase"`
	Source     string    `json:"source"`
	Target     string    `json:"target"`
	Approvers  []string  `json:"approvers,omitempty"` // AirlockApprover: who approved
	StartedAt  time.Time `json:"started_at"`
	ClosedAt   time.Time `json:"closed_at,omitzero"`
	Goal       string    `json:"goal,omitempty"`
	StartedBy  string    `json:"started_by,omitempty"`
	PlanHash   string    `json:"plan_hash,omitempty"`
	ExpiresAt  time.Time `json:"expires_at,omitzero"`
	// WaitingForYou: the task awaits approval and the caller may still
	// vote, or it has a pending question the caller may answer.
	WaitingForYou bool `json:"waiting_for_you"`
	// PendingQuestions: request_approval / request_egress questions waiting
	// for an answer.
	PendingQuestions int `json:"pending_questions,omitempty"`
}

var saConverter = converter.GetDefaultDataConverter()

func saString(sa *commonpb.SearchAttributes, key string) string {
	p := sa.GetIndexedFields()[key]
	if p == nil {
		return ""
	}
	var s string
	if err := saConverter.FromPayload(p, &s); err != nil {
		var list []string
		if saConverter.FromPayload(p, &list) == nil && len(list) > 0 {
			return list[0]
		}
		return ""
	}
	return s
}

func saList(sa *commonpb.SearchAttributes, key string) []string {
	p := sa.GetIndexedFields()[key]
	if p == nil {
		return nil
	}
	var list []string
	if err := saConverter.FromPayload(p, &list); err != nil {
		var s string
		if saConverter.FromPayload(p, &s) == nil && s != "" {
			return []string{s}
		}
		return nil
	}
	return list
}

func statusName(s enumspb.WorkflowExecutionStatus) string {
	switch s {
	case enumspb.WORKFLOW_EXECUTION_STATUS_RUNNING:
		return "Running"
	case enumspb.WORKFLOW_EXECUTION_STATUS_COMPLETED:
		return "Completed"
	case enumspb.WORKFLOW_EXECUTION_STATUS_FAILED:
		return "Failed"
	case enumspb.WORKFLOW_EXECUTION_STATUS_CANCELED:
		return "Canceled"
	case enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED:
		return "Terminated"
	case enumspb.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW:
		return "ContinuedAsNew"
	case enumspb.WORKFLOW_EXECUTION_STATUS_TIMED_OUT:
		return "TimedOut"
	}
	return "Unknown"
}

func rowFrom(e interface {
	GetExecution() *commonpb.WorkflowExecution
	GetStatus() enumspb.WorkflowExecutionStatus
	GetSearchAttributes() *commonpb.SearchAttributes
}) TaskRow {
	sa := e.GetSearchAttributes()
	return TaskRow{
		WorkflowID: e.GetExecution().GetWorkflowId(),
		RunID:      e.GetExecution().GetRunId(),
		Status:     statusName(e.GetStatus()),
		Phase:      saString(sa, workflows.SAPhase.GetName()),
		Source:     saString(sa, workflows.SASource.GetName()),
		Target:     saString(sa, workflows.SATarget.GetName()),
		Approvers:  saList(sa, workflows.SAApprover.GetName()),
	}
}

const listPageSize = 50

// listTasks reads one page of tasks from visibility. Open tasks are
// queried for their status (goal, plan, approvers), closed ones are joined
// with the store when it can summarise tasks. Tasks the caller can vote on
// come first.
func (s *server) listTasks(ctx context.Context, f filter, token string, who *identity) ([]TaskRow, string, error) {
	var next []byte
	if token != "" {
		b, err := base64.RawURLEncoding.DecodeString(token)
		if err != nil {
			return nil, "", fmt.Errorf("bad page token: %w", err)
		}
		next = b
	}
	resp, err := s.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{
		PageSize: listPageSize, NextPageToken: next, Query: f.query(),
	})
	if err != nil {
		return nil, "", fmt.Errorf("list tasks: %w", err)
	}
	rows := make([]TaskRow, 0, len(resp.GetExecutions()))
	for _, e := range resp.GetExecutions() {
		r := rowFrom(e)
		r.StartedAt = e.GetStartTime().AsTime()
		if e.GetCloseTime() != nil {
			r.ClosedAt = e.GetCloseTime().AsTime()
		}
		rows = append(rows, r)
	}
	s.enrich(ctx, rows, who)
	sort.SliceStable(rows, func(i, j int) bool {
		if rows[i].WaitingForYou != rows[j].WaitingForYou {
			return rows[i].WaitingForYou
		}
		return rows[i].StartedAt.After(rows[j].StartedAt)
	})
	return rows, base64.RawURLEncoding.EncodeToString(resp.GetNextPageToken()), nil
}

// enrich fills goal, plan and "waiting for you" from the status query of
// open tasks (bounded concurrency and time), and from the store for the
// rest. A task whose query fails keeps its visibility data.
func (s *server) enrich(ctx context.Context, rows []TaskRow, who *identity) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range rows {
		if rows[i].Status != "Running" {
			continue
		}
		wg.Add(1)
		go func(r *TaskRow) {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			qctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			defer cancel()
			st, err := s.queryStatus(qctx, r.WorkflowID)
			if err != nil {
				s.log.Warn("status query for list failed", "workflow_id", r.WorkflowID, "error", err)
				return
			}
			r.Goal, r.StartedBy = st.Goal, st.Origin.By
			if st.Plan != nil {
				r.PlanHash = st.Plan.PlanHash
			}
			if st.Approval != nil && st.Approval.Open {
				r.ExpiresAt = st.Approval.ExpiresAt
			}
			r.WaitingForYou = decisionRights(who, st).mayVote()
			if r.PendingQuestions = pendingQuestions(st); r.PendingQuestions > 0 && !r.WaitingForYou && who.canDecide() {
				r.WaitingForYou = s.mayAnswerTask(qctx, who, st, r.WorkflowID)
			}
		}(&rows[i])
	}
	wg.Wait()
	ts, ok := s.events.(TaskSummaries)
	if !ok {
		return
	}
	var ids []string
	for _, r := range rows {
		if r.Goal == "" {
			ids = append(ids, r.WorkflowID)
		}
	}
	if len(ids) == 0 {
		return
	}
	sums, err := ts.TaskSummaries(ctx, ids)
	if err != nil {
		s.log.Warn("task summaries from store failed", "error", err)
		return
	}
	for i := range rows {
		if sum, ok := sums[rows[i].WorkflowID]; ok && rows[i].Goal == "" {
			rows[i].Goal, rows[i].StartedBy = sum.Goal, sum.StartedBy
			if rows[i].PlanHash == "" {
				rows[i].PlanHash = sum.PlanHash
			}
		}
	}
}

func (s *server) queryStatus(ctx context.Context, id string) (*workflows.Status, error) {
	v, err := s.temporal.QueryWorkflow(ctx, id, "", workflows.QueryStatus)
	if err != nil {
		if isNotFound(err) {
			return nil, errNotFound
		}
		return nil, fmt.Errorf("query status of %s: %w", id, err)
	}
	var st workflows.Status
	if err := v.Get(&st); err != nil {
		return nil, fmt.Errorf("decode status of %s: %w", id, err)
	}
	return &st, nil
}

func isNotFound(err error) bool {
	var nf *serviceerror.NotFound
	return errors.As(err, &nf)
}

// taskData is everything the task page and GET /api/v1/tasks/{id} show.
type taskData struct {
	Row         TaskRow
	Status      *workflows.Status // nil when the query failed
	StatusErr   string
	Events      []Event
	EventsErr   string
	Result      *workflows.Result
	CloseReason string
}

// loadTask describes the execution (404 if unknown or not an AgentTask),
// queries its status and reads its audit events.
func (s *server) loadTask(ctx context.Context, id string, withEvents bool) (*taskData, error) {
	if !idRe.MatchString(id) {
		return nil, errNotFound
	}
	desc, err := s.temporal.DescribeWorkflowExecution(ctx, id, "")
	if err != nil {
		if isNotFound(err) {
			return nil, errNotFound
		}
		return nil, fmt.Errorf("describe %s: %w", id, err)
	}
	info := desc.GetWorkflowExecutionInfo()
	if info.GetType().GetName() != workflows.WorkflowType {
		return nil, errNotFound
	}
	td := &taskData{Row: rowFrom(info)}
	td.Row.StartedAt = info.GetStartTime().AsTime()
	if info.GetCloseTime() != nil {
		td.Row.ClosedAt = info.GetCloseTime().AsTime()
	}
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := s.queryStatus(qctx, id)
	if err != nil {
		td.StatusErr = "The task's live status is unavailable (is the control worker running?): " + err.Error()
	} else {
		td.Status = st
		td.Row.Goal, td.Row.StartedBy = st.Goal, st.Origin.By
		if st.Plan != nil {
			td.Row.PlanHash = st.Plan.PlanHash
		}
		if st.Phase != "" {
			td.Row.Phase = st.Phase
		}
	}
	if withEvents && s.events != nil {
		evs, err := s.events.ListEvents(ctx, id)
		if err != nil {
			td.EventsErr = "The audit log is unavailable: " + err.Error()
		}
		td.Events = evs
	}
	return td, nil
}

// rights says what the caller may do with a task right now. The workflow
// decides for real; this only shapes the page and explains why.
type rights struct {
	Approve, Reject, Modify bool
	NeedOverride            bool   // the plan failed verification
	Reason                  string // why some or all actions are not offered
}

func (r rights) mayVote() bool { return r.Approve || r.Reject || r.Modify }

func decisionRights(who *identity, st *workflows.Status) rights {
	if st == nil {
		return rights{Reason: "The task's status is unavailable."}
	}
	g := st.Approval
	switch {
	case g == nil || !g.Open:
		return rights{Reason: "The task is not waiting for approval (phase " + st.Phase + ")."}
	case who == nil:
		return rights{Reason: "Log in to decide."}
	case who.Role != RoleApprover:
		return rights{Reason: "Your role is viewer: you can follow this task but not decide."}
	case !slices.Contains(g.Policy.Approvers, who.By):
		return rights{Reason: fmt.Sprintf("You (%s) are not an approver of this task. Approvers: %s.", who.By, strings.Join(g.Policy.Approvers, ", "))}
	}
	for _, v := range g.Votes {
		if v.By == who.By {
			return rights{Reason: fmt.Sprintf("You already approved this plan; %d of %d approvals so far.", len(g.Votes), g.Policy.Quorum)}
		}
	}
	r := rights{Approve: true, Reject: true, Modify: true, NeedOverride: !g.Verified}
	if who.By == g.RequestedBy && !g.Policy.AllowSelfApproval {
		r.Approve, r.Modify = false, false
		r.Reason = "You started this task. Separation of duties: you may reject it, but another approver must approve or modify it."
	}
	return r
}

// decideOutcome classifies what happened to a decision.
type decideOutcome struct {
	Result   workflows.DecisionResult
	Code     string // ok | stale_plan | not_waiting | already_voted | denied | timeout | error
	Message  string
	HTTPCode int
}

// decide sends the `decide` update and waits for its result. updateID
// makes a double submit of the same form one decision: Temporal returns
// the first result for a repeated update ID.
func (s *server) decide(ctx context.Context, id string, d workflows.Decision, updateID string) decideOutcome {
	start := time.Now()
	uctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	h, err := s.temporal.UpdateWorkflow(uctx, client.UpdateWorkflowOptions{
		UpdateID: updateID, WorkflowID: id, UpdateName: workflows.UpdateDecide,
		Args: []any{d}, WaitForStage: client.WorkflowUpdateStageCompleted,
	})
	var res workflows.DecisionResult
	if err == nil {
		err = h.Get(uctx, &res)
	}
	s.metrics.decideDuration.Observe(time.Since(start).Seconds())
	if err == nil {
		return decideOutcome{Result: res, Code: "ok", HTTPCode: 200, Message: outcomeMessage(res)}
	}
	return classifyDecideError(err)
}

func outcomeMessage(r workflows.DecisionResult) string {
	switch r.Outcome {
	case "approved":
		return "Approved: the plan goes to apply."
	case "vote-recorded":
		return fmt.Sprintf("Your approval is recorded: %d of %d approvals.", r.Votes, r.Quorum)
	case "rejected":
		return "Rejected: the plan will not be applied."
	case "modify-accepted":
		return "Your edited playbook was accepted: it is verified again, then approval is asked again."
	}
	return "Decision recorded: " + r.Outcome
}

func classifyDecideError(err error) decideOutcome {
	msg := err.Error()
	var app *temporal.ApplicationError
	if errors.As(err, &app) {
		msg = app.Message()
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return decideOutcome{Code: "timeout", HTTPCode: 504, Message: "Temporal did not answer in time; the control worker may be down. Nothing is known to be recorded: reload and check the task."}
	case isNotFound(err), strings.Contains(msg, "not waiting for approval"), strings.Contains(msg, "already completed"):
		return decideOutcome{Code: "not_waiting", HTTPCode: 409, Message: "The task is not waiting for approval any more, so no decision was recorded. " + msg}
	case strings.Contains(msg, "is not the current plan"):
		return decideOutcome{Code: "stale_plan", HTTPCode: 409, Message: "The plan changed since this page was loaded, so your decision was refused. Review the current plan and decide again."}
	case strings.Contains(msg, "already voted"):
		return decideOutcome{Code: "already_voted", HTTPCode: 409, Message: "You have already voted on this plan; your earlier vote stands and nothing new was recorded."}
	case app != nil && app.Type() == "DecisionDenied":
		return decideOutcome{Code: "denied", HTTPCode: 403, Message: "Refused by the workflow: " + msg}
	}
	return decideOutcome{Code: "error", HTTPCode: 502, Message: "The decision could not be delivered: " + msg}
}

// updateIDFor derives a stable update ID from the form nonce, so the same
// form submitted twice is one update.
func updateIDFor(id, by, decision, nonce string) string {
	if nonce == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(id + "\x00" + by + "\x00" + decision + "\x00" + nonce))
	return "ui-" + hex.EncodeToString(sum[:12])
}

// awaitingSince returns when the current approval was requested.
func awaitingSince(st *workflows.Status) time.Time {
	for i := len(st.Phases) - 1; i >= 0; i-- {
		if st.Phases[i].Phase == workflows.PhaseAwaiting {
			return st.Phases[i].At
		}
	}
	return time.Time{}
}
