package workflows

import (
	"errors"
	"fmt"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/airlock-dev/airlock/activities/apply"
	"github.com/airlock-dev/airlock/activities/playbook"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

// Phases of a task, in order. The last five are final.
const (
	PhaseValidating   = "validating"
	PhasePlacing      = "awaiting_capacity"
	PhaseProvisioning = "provisioning"
	PhaseBaseline     = "baseline"
	PhaseWorking      = "working"
	PhaseCapturing    = "capturing"
	PhasePlanning     = "planning"
	PhaseVerifying    = "verifying"
	PhaseAwaiting     = "awaiting_approval"
	PhaseApplying     = "applying"
	PhaseApplied      = "applied"
	PhaseRejected     = "rejected"
	PhaseExpired      = "expired"
	PhaseFailed       = "failed"
	PhaseCancelled    = "cancelled"
)

// Search attributes (registered on the dev server by `make dev`). Never put
// secrets in them: they are not encrypted.
var (
	SAPhase    = temporal.NewSearchAttributeKeyKeyword("AirlockPhase")
	SASource   = temporal.NewSearchAttributeKeyKeyword("AirlockSource")
	SATarget   = temporal.NewSearchAttributeKeyKeyword("AirlockTarget")
	SAApprover = temporal.NewSearchAttributeKeyKeywordList("AirlockApprover")
)

// Status is what the `status` query returns.
type Status struct {
	WorkflowID   string                `json:"workflow_id"`
	Goal         string                `json:"goal"`
	Origin       Origin                `json:"origin"`
	Target       TargetSpec            `json:"target"`
	Phase        string                `json:"phase"`
	Phases       []PhaseMark           `json:"phases"`
	Sandbox      *sandbox.Info         `json:"sandbox,omitempty"`
	Steps        []StepRecord          `json:"steps"`
	DiffSummary  map[string]int        `json:"diff_summary,omitempty"`
	DiffText     string                `json:"diff_text,omitempty"`
	ChangesRef   string                `json:"changes_ref,omitempty"`
	Plan         *playbook.Plan        `json:"plan,omitempty"`
	Verification *sandbox.VerifyResult `json:"verification,omitempty"`
	Approval     *Gate                 `json:"approval,omitempty"`
	Reminders    int                   `json:"reminders"`
	Applies      []apply.Result        `json:"applies,omitempty"`
	Outcome      string                `json:"outcome,omitempty"`
	Error        string                `json:"error,omitempty"`
	Agent        *AgentStatus          `json:"agent,omitempty"` // LLM agent budgets, questions, egress, end reason
}

// PhaseMark is one entry of the phase timeline.
type PhaseMark struct {
	Phase string    `json:"phase"`
	At    time.Time `json:"at"`
}

// StepRecord is one agent step as the status query and the audit show it.
type StepRecord struct {
	N          int    `json:"n"`
	Tool       string `json:"tool"`
	Args       string `json:"args"`
	ExitCode   int    `json:"exit_code"`
	Output     string `json:"output,omitempty"`
	TotalBytes int64  `json:"total_bytes,omitempty"`
	OutputRef  string `json:"output_ref,omitempty"`
	DurationMs int64  `json:"duration_ms"`
	Error      string `json:"error,omitempty"`
}

// Result is the workflow's return value.
type Result struct {
	Outcome  string `json:"outcome"` // applied | rejected | expired
	PlanHash string `json:"plan_hash,omitempty"`
	Detail   string `json:"detail,omitempty"`
}

// task is the state of one AgentTask run.
type task struct {
	in      TaskInput
	st      Status
	gate    *Gate
	pending []workflow.Future // store writes to wait for before the end
	// destroyed marks sandboxes already destroyed (lookup only).
	destroyed     map[string]bool
	agentFinalRef string
	agent         *agentState            // the agent's conversation, questions and egress
	baseline      sandbox.ManifestResult // for the agent's diff tool
	// auditCtx is disconnected from the task's context: audit writes must
	// survive cancellation of the task and of the agent's step context.
	auditCtx workflow.Context
	eventSeq int32
	logger   interface {
		Info(string, ...interface{})
		Warn(string, ...interface{})
	}
}

// AgentTask is the workflow of DESIGN.md §3.
func AgentTask(ctx workflow.Context, in TaskInput) (res Result, err error) {
	info := workflow.GetInfo(ctx)
	in.Normalize()
	t := &task{in: in, logger: workflow.GetLogger(ctx)}
	t.auditCtx, _ = workflow.NewDisconnectedContext(ctx)
	t.st = Status{WorkflowID: info.WorkflowExecution.ID, Goal: in.Goal, Origin: in.Origin, Target: in.Target, Steps: []StepRecord{}}
	if err := t.registerHandlers(ctx); err != nil {
		return Result{}, err
	}
	// answer, instruct and cancel: questions can come before the agent
	// runs (an overcommit placement) and while it runs.
	if err := t.registerAgentHandlers(ctx); err != nil {
		return Result{}, err
	}
	_ = workflow.UpsertTypedSearchAttributes(ctx,
		SASource.ValueSet(in.Origin.Via), SATarget.ValueSet(targetLabel(in.Target)))

	defer func() {
		final := t.finalPhase(res, err)
		t.cleanup(ctx, final)
		if err != nil {
			t.st.Error = err.Error()
		}
	}()

	t.setPhase(ctx, PhaseValidating)
	t.record(ctx, "task_started", in.Origin.By, map[string]any{"goal": in.Goal, "via": in.Origin.Via, "ref": in.Origin.Ref, "image": in.Source.Image, "target": targetLabel(in.Target)})
	if err := t.validate(ctx); err != nil {
		return Result{}, err
	}
	if err := t.work(ctx); err != nil {
		return Result{}, err
	}
	return t.approveAndApply(ctx)
}

func (t *task) validate(ctx workflow.Context) error {
	if err := t.in.Validate(Catalog{}); err != nil {
		return badInput(err)
	}
	var cat Catalog
	if err := workflow.ExecuteActivity(controlCtx(ctx, 30*time.Second), ActCatalog).Get(ctx, &cat); err != nil {
		return fmt.Errorf("load catalog: %w", err)
	}
	if err := t.in.Validate(cat); err != nil {
		return badInput(err)
	}
	return nil
}

// work runs steps 3–9: sandbox, baseline, agent, capture, plan, verify.
func (t *task) work(ctx workflow.Context) error {
	host := t.in.Source.Host
	t.setPhase(ctx, PhaseProvisioning)
	var sbx sandbox.Info
	create := sandbox.CreateInput{Owner: t.st.WorkflowID, Image: t.in.Source.Image}
	t.st.Sandbox = &sandbox.Info{Name: sandbox.NameFor(t.st.WorkflowID, ""), Image: t.in.Source.Image}
	if err := t.createSandbox(ctx, create, &sbx); err != nil {
		return err
	}
	t.st.Sandbox = &sbx
	t.record(ctx, "sandbox_created", "airlock", map[string]any{"sandbox": sbx.Name, "ip": sbx.IP, "restored": sbx.Restored, "ready_ms": sbx.ReadyMs})

	t.setPhase(ctx, PhaseBaseline)
	var before sandbox.ManifestResult
	if err := workflow.ExecuteActivity(hostCtx(ctx, host, 10*time.Minute, 3), ActTakeManifest, sandbox.ManifestInput{Sandbox: sbx.Name}).Get(ctx, &before); err != nil {
		return fmt.Errorf("baseline manifest: %w", err)
	}
	t.baseline = before

	t.setPhase(ctx, PhaseWorking)
	if err := t.runAgent(ctx, sbx); err != nil {
		return err
	}

	t.setPhase(ctx, PhaseCapturing)
	var after sandbox.ManifestResult
	if err := workflow.ExecuteActivity(hostCtx(ctx, host, 10*time.Minute, 3), ActTakeManifest, sandbox.ManifestInput{Sandbox: sbx.Name, BaselineRef: before.Ref}).Get(ctx, &after); err != nil {
		return fmt.Errorf("final manifest: %w", err)
	}
	var capt sandbox.CaptureResult
	if err := workflow.ExecuteActivity(hostCtx(ctx, host, 10*time.Minute, 3), ActCaptureChanges, sandbox.CaptureInput{Sandbox: sbx.Name, BeforeRef: before.Ref, AfterRef: after.Ref, BeforeFilesRef: before.FilesRef}).Get(ctx, &capt); err != nil {
		return fmt.Errorf("capture changes: %w", err)
	}
	t.st.DiffSummary, t.st.DiffText, t.st.ChangesRef = capt.Summary, capt.Text, capt.ChangesRef
	t.recordArtifact(ctx, "diff", "airlock", map[string]any{"summary": capt.Summary, "text": capt.Text}, capt.ChangesRef)

	t.setPhase(ctx, PhasePlanning)
	var plan playbook.Plan
	gen := playbook.GenerateInput{WorkflowID: t.st.WorkflowID, ChangesRef: capt.ChangesRef, CommandLog: t.commandLog()}
	if err := workflow.ExecuteActivity(controlCtx(ctx, 5*time.Minute), ActGeneratePlaybook, gen).Get(ctx, &plan); err != nil {
		return fmt.Errorf("generate playbook: %w", err)
	}
	t.setPlan(ctx, plan)
	// The agent's sandbox is no longer needed: the changes, the bundle and
	// the final manifest are stored. Destroy it now rather than keep a VM
	// for days while a human decides (step 10).
	t.destroySandbox(ctx, sbx.Name, "after capture")
	return t.verify(ctx, after.Ref, 1)
}

// createSandbox is steps 2–3: a host short of memory refuses with the
// NoCapacity type, and a human may approve starting there anyway
// (overcommit) through the same durable question as the agent's.
func (t *task) createSandbox(ctx workflow.Context, create sandbox.CreateInput, sbx *sandbox.Info) error {
	host := t.in.Source.Host
	err := workflow.ExecuteActivity(hostCtx(ctx, host, 5*time.Minute, 3), ActCreateSandbox, create).Get(ctx, sbx)
	var appErr *temporal.ApplicationError
	if err == nil || !errors.As(err, &appErr) || appErr.Type() != ErrTypeNoCapacity {
		if err != nil {
			return fmt.Errorf("create sandbox: %w", err)
		}
		return nil
	}
	t.setPhase(ctx, PhasePlacing)
	q, err := t.ask(ctx, Question{Kind: "overcommit", Options: []string{"approve", "deny"},
		Text: fmt.Sprintf("Host %s does not have room for this task's sandbox (%s). Start it there anyway?", host, appErr.Message())})
	if err != nil {
		return err
	}
	if q.Status != "answered" || q.Choice != "approve" {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("placement on %s refused: no capacity and the overcommit was %s %s", host, q.Status, q.Choice), ErrTypeNoCapacity, nil)
	}
	t.setPhase(ctx, PhaseProvisioning)
	create.Overcommit = true
	if err := workflow.ExecuteActivity(hostCtx(ctx, host, 5*time.Minute, 3), ActCreateSandbox, create).Get(ctx, sbx); err != nil {
		return fmt.Errorf("create sandbox (overcommit approved by %s): %w", q.AnsweredBy, err)
	}
	return nil
}

// verify runs step 9 on a fresh clone and records the outcome.
func (t *task) verify(ctx workflow.Context, agentFinalRef string, attempt int) error {
	t.setPhase(ctx, PhaseVerifying)
	in := sandbox.VerifyInput{Owner: t.st.WorkflowID, Image: t.in.Source.Image, Attempt: attempt, BundleRef: t.st.Plan.BundleRef, AgentFinalRef: agentFinalRef}
	var vr sandbox.VerifyResult
	if err := workflow.ExecuteActivity(hostCtx(ctx, t.in.Source.Host, 20*time.Minute, 2), ActVerifyPlaybook, in).Get(ctx, &vr); err != nil {
		var canceled *temporal.CanceledError
		if errors.As(err, &canceled) {
			return err
		}
		vr = sandbox.VerifyResult{Status: "error", Detail: err.Error()}
	}
	t.st.Verification = &vr
	t.recordArtifact(ctx, "verification", "airlock", map[string]any{"status": vr.Status, "detail": vr.Detail, "plan_hash": t.st.Plan.PlanHash}, vr.ResidualRef)
	t.agentFinalRef = agentFinalRef
	return nil
}

// approveAndApply runs steps 11–12, looping on modify.
func (t *task) approveAndApply(ctx workflow.Context) (Result, error) {
	for attempt := 2; ; attempt++ {
		t.gate = &Gate{
			Policy:      t.in.Approval,
			RequestedBy: t.in.Origin.By,
			PlanHash:    t.st.Plan.PlanHash,
			Verified:    t.st.Verification != nil && t.st.Verification.Verified(),
		}
		t.st.Approval = t.gate
		if err := t.awaitApproval(ctx); err != nil {
			return Result{}, err
		}
		switch t.gate.Outcome {
		case "approved":
			return t.apply(ctx)
		case "rejected":
			return Result{Outcome: PhaseRejected, PlanHash: t.gate.PlanHash, Detail: t.gate.RejectedBy + ": " + t.gate.RejectReason}, nil
		case "expired":
			return Result{Outcome: PhaseExpired, PlanHash: t.gate.PlanHash, Detail: "no decision within " + t.in.Approval.ExpiresAfter.D().String()}, nil
		case "modify":
			d := t.gate.Modified
			var plan playbook.Plan
			edit := playbook.EditInput{WorkflowID: t.st.WorkflowID, BaseRef: t.st.Plan.BundleRef, Playbook: d.Playbook, By: d.By}
			if err := workflow.ExecuteActivity(controlCtx(ctx, 5*time.Minute), ActPlanFromEdit, edit).Get(ctx, &plan); err != nil {
				var canceled *temporal.CanceledError
				if errors.As(err, &canceled) {
					return Result{}, err
				}
				// A broken edit is refused; the current plan stays up for
				// approval with its votes reset.
				t.record(ctx, "modify_refused", d.By, map[string]any{"plan_hash": t.st.Plan.PlanHash, "reason": err.Error()})
				continue
			}
			t.setPlan(ctx, plan)
			if err := t.verify(ctx, t.agentFinalRef, attempt); err != nil {
				return Result{}, err
			}
		default:
			return Result{}, fmt.Errorf("approval ended without an outcome")
		}
	}
}

func (t *task) apply(ctx workflow.Context) (Result, error) {
	t.setPhase(ctx, PhaseApplying)
	_ = workflow.UpsertTypedSearchAttributes(ctx, SAApprover.ValueSet(t.gate.Approvers()))
	plan := t.st.Plan
	for _, check := range []bool{true, false} {
		in := apply.Input{WorkflowID: t.st.WorkflowID, BundleRef: plan.BundleRef, PlanHash: plan.PlanHash, Hosts: t.in.Target.Hosts, Check: check}
		attempts := int32(1)
		if check {
			attempts = 3
		}
		var r apply.Result
		err := workflow.ExecuteActivity(applyCtx(ctx, t.in.Target.Env, attempts), ActApplyPlaybook, in).Get(ctx, &r)
		if err != nil {
			t.record(ctx, "apply_error", "airlock", map[string]any{"check": check, "error": err.Error()})
			return Result{}, fmt.Errorf("apply (check=%v): %w", check, err)
		}
		t.st.Applies = append(t.st.Applies, r)
		t.recordArtifact(ctx, "apply", "airlock", map[string]any{"check": check, "ok": r.OK, "changed": r.Changed, "failed": r.Failed, "recap": r.Recap, "duration_ms": r.DurationMs}, r.OutputRef)
		if !r.OK {
			msg := fmt.Sprintf("apply failed (check=%v): %s", check, r.Recap)
			if r.Reason != "" {
				msg += ": " + r.Reason
			}
			return Result{}, temporal.NewNonRetryableApplicationError(msg, "ApplyFailed", nil)
		}
	}
	return Result{Outcome: PhaseApplied, PlanHash: plan.PlanHash, Detail: "applied to " + targetLabel(t.in.Target)}, nil
}

func (t *task) setPlan(ctx workflow.Context, plan playbook.Plan) {
	t.st.Plan = &plan
	t.st.Verification = nil
	t.recordArtifact(ctx, "playbook", orDefault(plan.EditedBy, "airlock"), map[string]any{"plan_hash": plan.PlanHash, "tasks": plan.Tasks, "flags": plan.Flags, "findings": plan.Findings, "edited": plan.Edited}, plan.BundleRef)
}

func (t *task) setPhase(ctx workflow.Context, phase string) {
	t.st.Phase = phase
	t.st.Phases = append(t.st.Phases, PhaseMark{Phase: phase, At: workflow.Now(ctx)})
	_ = workflow.UpsertTypedSearchAttributes(ctx, SAPhase.ValueSet(phase))
	details := fmt.Sprintf("**%s** — %s", phase, t.in.Goal)
	if t.st.Plan != nil {
		details += fmt.Sprintf("\n\nplan `%s`", short(t.st.Plan.PlanHash))
	}
	workflow.SetCurrentDetails(ctx, details)
	t.record(ctx, "phase", "airlock", map[string]any{"phase": phase})
	t.upsertTask(ctx)
}

func (t *task) upsertTask(ctx workflow.Context) {
	rec := TaskRecord{WorkflowID: t.st.WorkflowID, RunID: workflow.GetInfo(ctx).WorkflowExecution.RunID, Goal: t.in.Goal, Source: t.in.Origin.Via, StartedBy: t.in.Origin.By, Target: targetLabel(t.in.Target), Phase: t.st.Phase, UpdatedAt: workflow.Now(ctx)}
	if t.st.Plan != nil {
		rec.PlanHash = t.st.Plan.PlanHash
	}
	t.pending = append(t.pending, workflow.ExecuteActivity(storeCtx(t.auditCtx), ActUpsertTask, rec))
}

func (t *task) record(ctx workflow.Context, kind, actor string, data map[string]any) {
	t.recordArtifact(ctx, kind, actor, data, "")
}

func (t *task) recordArtifact(ctx workflow.Context, kind, actor string, data map[string]any, artifact string) {
	t.eventSeq++
	ev := Event{WorkflowID: t.st.WorkflowID, Seq: t.eventSeq, Kind: kind, Actor: actor, At: workflow.Now(ctx), Data: data, ArtifactID: artifact}
	t.pending = append(t.pending, workflow.ExecuteActivity(storeCtx(t.auditCtx), ActRecordEvent, ev))
}

func (t *task) destroySandbox(ctx workflow.Context, name, why string) {
	if t.destroyed[name] {
		return
	}
	err := workflow.ExecuteActivity(hostCtx(ctx, t.in.Source.Host, 5*time.Minute, 5), ActDestroySandbox, name).Get(ctx, nil)
	data := map[string]any{"sandbox": name, "why": why}
	if err != nil {
		data["error"] = err.Error()
	} else {
		if t.destroyed == nil {
			t.destroyed = map[string]bool{}
		}
		t.destroyed[name] = true
	}
	t.record(ctx, "cleanup", "airlock", data)
}

// cleanup is step 13: it runs on every path, on a disconnected context so
// that cancellation of the task does not cancel the cleanup.
func (t *task) cleanup(ctx workflow.Context, final string) {
	dctx, cancel := workflow.NewDisconnectedContext(ctx)
	defer cancel()
	if t.gate != nil {
		t.gate.Open = false
	}
	name := sandbox.NameFor(t.st.WorkflowID, "")
	t.destroySandbox(dctx, name, final)
	t.setPhase(dctx, final)
	for _, f := range t.pending {
		if err := f.Get(dctx, nil); err != nil {
			t.logger.Warn("audit write failed", "error", err)
		}
	}
}

func (t *task) finalPhase(res Result, err error) string {
	switch {
	case err == nil:
		return res.Outcome
	case temporal.IsCanceledError(err):
		return PhaseCancelled
	default:
		return PhaseFailed
	}
}

func (t *task) commandLog() []playbook.CommandRecord {
	out := make([]playbook.CommandRecord, 0, len(t.st.Steps))
	for _, s := range t.st.Steps {
		if s.Tool == "run" || s.Tool == "run_command" {
			out = append(out, playbook.CommandRecord{Command: s.Args, ExitCode: s.ExitCode})
		}
	}
	return out
}

func badInput(err error) error {
	return temporal.NewNonRetryableApplicationError(err.Error(), ErrTypeBadInput, err)
}

func targetLabel(t TargetSpec) string {
	if len(t.Hosts) == 0 {
		return t.Env
	}
	label := t.Env + ":"
	for i, h := range t.Hosts {
		if i > 0 {
			label += ","
		}
		label += h
	}
	return label
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// RegisterOptions registers AgentTask under its public type name.
func RegisterOptions() workflow.RegisterOptions {
	return workflow.RegisterOptions{Name: WorkflowType}
}

func workflowOptions() workflow.RegisterOptions { return RegisterOptions() }
