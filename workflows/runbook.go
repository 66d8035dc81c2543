package workflows

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/airlock-dev/airlock/activities/sandbox"
)

// runAgent runs the agent loop (step 5) under the task's work deadline.
// Only the runbook agent exists so far; each step is one activity on the
// hypervisor host's queue.
func (t *task) runAgent(ctx workflow.Context, sbx sandbox.Info) error {
	actx, cancel := workflow.WithCancel(ctx)
	defer cancel()
	defer t.closeAgentResources(ctx)
	deadlineHit := false
	timer := workflow.NewTimer(actx, t.in.Limits.Deadline.D())
	workflow.Go(actx, func(gctx workflow.Context) {
		if timer.Get(gctx, nil) == nil {
			deadlineHit = true
			cancel()
		}
	})
	if t.in.Agent.Mode == "llm" {
		// The LLM agent treats the deadline as a budget: it ends, and the
		// work so far is still diffed and shown.
		return t.runLLMAgent(actx, sbx, func() bool { return deadlineHit })
	}
	for i, step := range t.in.Agent.Steps {
		if t.agent != nil && t.agent.cancel != nil {
			return t.cancelled()
		}
		if err := t.runStep(actx, sbx, i+1, step); err != nil {
			if deadlineHit {
				return temporal.NewNonRetryableApplicationError(fmt.Sprintf("agent deadline of %s exceeded at step %d", t.in.Limits.Deadline.D(), i+1), "DeadlineExceeded", nil)
			}
			return err
		}
	}
	return nil
}

func (t *task) runStep(ctx workflow.Context, sbx sandbox.Info, n int, s RunbookStep) error {
	host := t.in.Source.Host
	rec := StepRecord{N: n}
	var err error
	switch {
	case s.Run != "":
		rec.Tool, rec.Args = "run", s.Run
		timeout := t.in.Limits.CommandTimeout.D()
		in := sandbox.ExecInput{Sandbox: sbx.Name, Script: s.Run, Timeout: timeout, OutputCap: t.in.Limits.OutputCap}
		var r sandbox.ExecResult
		// A command may not be idempotent: run it once.
		err = workflow.ExecuteActivity(hostCtx(ctx, host, timeout+time.Minute, 1), ActExec, in).Get(ctx, &r)
		rec.ExitCode, rec.Output, rec.TotalBytes, rec.OutputRef, rec.DurationMs = r.ExitCode, r.Output, r.TotalBytes, r.OutputRef, r.DurationMs
		if err == nil {
			err = checkExpect(s, r)
		}
	case s.WriteFile != nil:
		rec.Tool, rec.Args = "write_file", s.WriteFile.Path
		mode := uint64(0o644)
		if s.WriteFile.Mode != "" {
			mode, _ = strconv.ParseUint(s.WriteFile.Mode, 8, 32) // validated already
		}
		in := sandbox.WriteFileInput{Sandbox: sbx.Name, Path: s.WriteFile.Path, Content: []byte(s.WriteFile.Content), Mode: uint32(mode), Owner: s.WriteFile.Owner, Group: s.WriteFile.Group}
		var r sandbox.WriteFileResult
		err = workflow.ExecuteActivity(hostCtx(ctx, host, 2*time.Minute, 3), ActWriteFile, in).Get(ctx, &r)
	case s.Snapshot != "":
		rec.Tool, rec.Args = "snapshot", s.Snapshot
		err = workflow.ExecuteActivity(hostCtx(ctx, host, 5*time.Minute, 3), ActCreateSnapshot, sandbox.SnapshotInput{Sandbox: sbx.Name, Name: s.Snapshot}).Get(ctx, nil)
	case s.Restore != "":
		rec.Tool, rec.Args = "restore", s.Restore
		err = workflow.ExecuteActivity(hostCtx(ctx, host, 5*time.Minute, 3), ActRestoreSnapshot, sandbox.SnapshotInput{Sandbox: sbx.Name, Name: s.Restore}).Get(ctx, nil)
	default:
		// Steps that use the agent's tool layer (edit_file, request_*).
		err = t.runToolStep(ctx, sbx, s, &rec)
	}
	if err != nil {
		rec.Error = err.Error()
	}
	t.st.Steps = append(t.st.Steps, rec)
	data := map[string]any{"n": n, "tool": rec.Tool, "args": rec.Args, "exit_code": rec.ExitCode, "duration_ms": rec.DurationMs, "total_bytes": rec.TotalBytes, "output": rec.Output}
	if rec.Error != "" {
		data["error"] = rec.Error
	}
	t.recordArtifact(ctx, "command", "agent", data, rec.OutputRef)
	if err != nil {
		return fmt.Errorf("runbook step %d (%s): %w", n, rec.Tool, err)
	}
	return nil
}

// checkExpect applies a run step's expectation. Without one, exit 0 is
// expected, as in a script with `set -e`.
func checkExpect(s RunbookStep, r sandbox.ExecResult) error {
	want := 0
	if s.Expect != nil && s.Expect.ExitCode != nil {
		want = *s.Expect.ExitCode
	}
	if r.TimedOut {
		return temporal.NewNonRetryableApplicationError("command timed out", "CommandTimeout", nil)
	}
	if r.ExitCode != want {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf("exit code %d, expected %d", r.ExitCode, want), "ExpectFailed", nil)
	}
	if s.Expect != nil && s.Expect.Output != "" {
		re := regexp.MustCompile(s.Expect.Output) // validated at start
		if !re.MatchString(r.Output) {
			return temporal.NewNonRetryableApplicationError(fmt.Sprintf("output does not match %q", s.Expect.Output), "ExpectFailed", nil)
		}
	}
	return nil
}

// runToolStep runs the runbook steps that share the LLM agent's tool
// layer. A question that is not answered with the step's continue choice,
// or egress that is not approved, stops the runbook.
func (t *task) runToolStep(ctx workflow.Context, sbx sandbox.Info, s RunbookStep, rec *StepRecord) error {
	main := &AgentSandbox{Name: sbx.Name, IP: sbx.IP, Main: true, State: "running"}
	stop := func(format string, a ...any) error {
		return temporal.NewNonRetryableApplicationError(fmt.Sprintf(format, a...), "RunbookStopped", nil)
	}
	switch {
	case s.EditFile != nil:
		rec.Tool, rec.Args = "edit_file", s.EditFile.Op+" "+s.EditFile.Path
		r := t.toolEdit(ctx, main, *s.EditFile)
		rec.Output, rec.TotalBytes = capText(r.text, t.in.Limits.OutputCap), r.totalBytes
		if r.isErr {
			return stop("%s", strings.TrimPrefix(r.text, "ERROR: "))
		}
	case s.RequestApproval != nil:
		a := s.RequestApproval
		opts := questionOptions(a.Options)
		want := orDefault(a.ContinueOn, opts[0])
		rec.Tool, rec.Args = "request_approval", a.Question
		q, err := t.ask(ctx, Question{Kind: "approval", Text: a.Question, Options: opts})
		if err != nil {
			return err
		}
		if t.agent.cancel != nil {
			return t.cancelled()
		}
		rec.Output = fmt.Sprintf("%s: %s %q%s", q.Status, q.AnsweredBy, q.Choice, comment(q.Comment))
		if q.Status != "answered" || q.Choice != want {
			return stop("question %s: %s (the runbook goes on only on %q)", q.ID, rec.Output, want)
		}
	case s.RequestEgress != nil:
		rec.Tool, rec.Args = "request_egress", strings.Join(s.RequestEgress.Destinations, ", ")
		text, open, err := t.requestEgress(ctx, sbx.Name, *s.RequestEgress)
		if err != nil {
			return err
		}
		if t.agent.cancel != nil {
			return t.cancelled()
		}
		rec.Output = text
		if !open {
			return stop("%s", text)
		}
	}
	return nil
}
