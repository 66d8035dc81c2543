package workflows

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/airlock-dev/airlock/activities/agent/tools"
	"github.com/airlock-dev/airlock/activities/sandbox"
)

// toolResult is one executed (or refused) tool call.
type toolResult struct {
	text       string // what the model sees
	isErr      bool   // refused or failed: counts toward agent.max_errors
	exitCode   int
	totalBytes int64
	outputRef  string
	durationMs int64
	finish     string // the finish summary, when the model called finish
}

func errResult(format string, a ...any) toolResult {
	return toolResult{text: "ERROR: " + fmt.Sprintf(format, a...), isErr: true}
}

// execTool runs one tool call of the model: the read-only gate first
// (enforced here, not only by what is offered), then strict argument
// parsing, then the tool itself as an activity on the right queue.
func (t *task) execTool(ctx workflow.Context, call tools.ToolCall) toolResult {
	spec, known := tools.Lookup(call.Name)
	if !known {
		return errResult("unknown tool %q. The tools you have are: %s", call.Name, strings.Join(tools.Names(tools.Offered(t.in.Agent.ReadOnly)), ", "))
	}
	if t.in.Agent.ReadOnly && !spec.ReadOnly {
		return errResult("refused: this task is read-only and %s can change the system. Investigate with read_file and diff, then call finish with your findings.", call.Name)
	}
	args, err := tools.Parse(call.Name, call.Arguments)
	if err != nil {
		return errResult("%v. Fix the arguments and call the tool again.", err)
	}
	start := workflow.Now(ctx)
	res := t.dispatch(ctx, call.Name, args)
	if res.durationMs == 0 {
		res.durationMs = workflow.Now(ctx).Sub(start).Milliseconds()
	}
	return res
}

func (t *task) dispatch(ctx workflow.Context, name string, args any) toolResult {
	switch a := args.(type) {
	case *tools.RunCommandArgs:
		return t.toolRun(ctx, a)
	case *tools.ReadFileArgs:
		return t.toolRead(ctx, a)
	case *tools.EditFileArgs:
		sbx, err := t.sandboxFor(a.Sandbox, true)
		if err != nil {
			return errResult("%v", err)
		}
		return t.toolEdit(ctx, sbx, *a)
	case *tools.SnapshotArgs:
		return t.toolSnapshot(ctx, name, a)
	case *tools.DiffArgs:
		return t.toolDiff(ctx, a)
	case *tools.SandboxArgs:
		return t.toolSandbox(ctx, name, a.Sandbox)
	case *tools.CreatePlaybookArgs, *tools.AddPlaybookTaskArgs, *tools.NameArgs:
		return t.toolPlaybook(ctx, a)
	case *tools.RequestApprovalArgs:
		q, err := t.ask(ctx, Question{Kind: "approval", Text: a.Question, Options: questionOptions(a.Options)})
		if err != nil {
			return errResult("%v", err)
		}
		if q.Status != "answered" {
			return toolResult{text: fmt.Sprintf("no answer to %s (%s): decide without it, or ask again later", q.ID, q.Status)}
		}
		return toolResult{text: fmt.Sprintf("%s answered %q%s", q.AnsweredBy, q.Choice, comment(q.Comment))}
	case *tools.RequestEgressArgs:
		sbx, err := t.sandboxFor(a.Sandbox, true)
		if err != nil {
			return errResult("%v", err)
		}
		text, _, err := t.requestEgress(ctx, sbx.Name, *a)
		if err != nil {
			return errResult("%v", err)
		}
		return toolResult{text: text}
	case *tools.FinishArgs:
		return toolResult{text: "finished", finish: a.Summary}
	case *tools.NoArgs:
		switch name {
		case tools.ListSandboxes:
			return toolResult{text: t.listSandboxes()}
		case tools.CreateSandbox:
			return t.toolCreateSandbox(ctx)
		case tools.ListPlaybooks:
			return t.toolPlaybook(ctx, &tools.NameArgs{})
		}
	}
	return errResult("tool %s is not available here", name)
}

// sandboxFor resolves a sandbox argument (empty: the main sandbox).
func (t *task) sandboxFor(name string, mustRun bool) (*AgentSandbox, error) {
	ag := t.agentState()
	for i := range ag.status.Sandboxes {
		sb := &ag.status.Sandboxes[i]
		if (name == "" && sb.Main) || sb.Name == name {
			switch {
			case sb.State == "destroyed":
				return nil, fmt.Errorf("sandbox %s was destroyed", sb.Name)
			case mustRun && sb.State != "running":
				return nil, fmt.Errorf("sandbox %s is %s; call start_sandbox first", sb.Name, sb.State)
			}
			return sb, nil
		}
	}
	names := make([]string, 0, len(ag.status.Sandboxes))
	for _, sb := range ag.status.Sandboxes {
		names = append(names, sb.Name)
	}
	return nil, fmt.Errorf("no sandbox %q in this task (have: %s)", name, strings.Join(names, ", "))
}

func (t *task) toolRun(ctx workflow.Context, a *tools.RunCommandArgs) toolResult {
	sbx, err := t.sandboxFor(a.Sandbox, true)
	if err != nil {
		return errResult("%v", err)
	}
	if err := tools.CheckCommand(a.Command); err != nil {
		return errResult("%v", err)
	}
	timeout := t.in.Limits.CommandTimeout.D()
	if a.TimeoutSeconds > 0 {
		timeout = time.Duration(a.TimeoutSeconds) * time.Second
	}
	in := sandbox.ExecInput{Sandbox: sbx.Name, Script: a.Command, Timeout: timeout, OutputCap: t.in.Limits.OutputCap}
	var r sandbox.ExecResult
	// A command may not be idempotent: run it once.
	if err := workflow.ExecuteActivity(hostCtx(ctx, t.in.Source.Host, timeout+time.Minute, 1), ActExec, in).Get(ctx, &r); err != nil {
		return errResult("the command could not be run: %v", err)
	}
	head := fmt.Sprintf("exit code %d after %d ms", r.ExitCode, r.DurationMs)
	if r.TimedOut {
		head = fmt.Sprintf("TIMED OUT after %s and was killed", timeout)
	}
	text := head + "\n" + capText(r.Output, toolOutputCap)
	if r.Truncated || r.OutputRef != "" {
		text += fmt.Sprintf("\n[output truncated: %d bytes in total; the full output is stored as artifact %s. Narrow the command (grep, head, tail) to see a part.]", r.TotalBytes, orDefault(r.OutputRef, "(none)"))
	}
	return toolResult{text: text, exitCode: r.ExitCode, totalBytes: r.TotalBytes, outputRef: r.OutputRef, durationMs: r.DurationMs}
}

func (t *task) toolRead(ctx workflow.Context, a *tools.ReadFileArgs) toolResult {
	sbx, err := t.sandboxFor(a.Sandbox, true)
	if err != nil {
		return errResult("%v", err)
	}
	max := a.MaxBytes
	if max == 0 {
		max = 16 << 10
	}
	var b []byte
	in := sandbox.ReadFileInput{Sandbox: sbx.Name, Path: a.Path, MaxBytes: max}
	if err := workflow.ExecuteActivity(hostCtx(ctx, t.in.Source.Host, 2*time.Minute, 3), ActReadFile, in).Get(ctx, &b); err != nil {
		return errResult("read %s: %v", a.Path, err)
	}
	s := string(b)
	if strings.ContainsRune(s, 0) {
		return toolResult{text: fmt.Sprintf("%s is a binary file (%d bytes read); not shown", a.Path, len(b)), totalBytes: int64(len(b))}
	}
	head := fmt.Sprintf("%s (%d bytes)", a.Path, len(b))
	if len(b) >= max {
		head = fmt.Sprintf("%s (first %d bytes; the file is longer: use run_command with sed -n or grep for other parts)", a.Path, len(b))
	}
	return toolResult{text: head + "\n" + capText(strings.ToValidUTF8(s, "\uFFFD"), toolOutputCap), totalBytes: int64(len(b))}
}

// toolEdit is edit_file, for the model and for runbook steps.
func (t *task) toolEdit(ctx workflow.Context, sbx *AgentSandbox, a tools.EditFileArgs) toolResult {
	a.Sandbox = ""
	var r tools.EditFileResult
	in := tools.EditFileInput{Sandbox: sbx.Name, Edit: a}
	// A replace is not idempotent: run it once.
	if err := workflow.ExecuteActivity(hostCtx(ctx, t.in.Source.Host, 2*time.Minute, 1), ActEditFile, in).Get(ctx, &r); err != nil {
		return errResult("edit_file %s: %v", a.Path, appMessage(err))
	}
	verb := map[string]string{"replace": "replaced text in", "append": "appended to", "write": "wrote"}[a.Op]
	if r.Created {
		verb = "created"
	}
	text := fmt.Sprintf("%s %s: %d bytes, mode %s, owner %s:%s", verb, r.Path, r.Bytes, r.Mode, r.Owner, r.Group)
	if r.Diff != "" {
		text += "\n" + capText(r.Diff, toolOutputCap)
	}
	return toolResult{text: text, totalBytes: int64(r.Bytes)}
}

func (t *task) toolSnapshot(ctx workflow.Context, name string, a *tools.SnapshotArgs) toolResult {
	sbx, err := t.sandboxFor(a.Sandbox, true)
	if err != nil {
		return errResult("%v", err)
	}
	host := t.in.Source.Host
	in := sandbox.SnapshotInput{Sandbox: sbx.Name, Name: a.Name}
	if name == tools.RestoreSnapshot {
		if !contains(sbx.Snapshots, a.Name) {
			return errResult("%s has no snapshot %q (have: %s)", sbx.Name, a.Name, strings.Join(sbx.Snapshots, ", "))
		}
		if err := workflow.ExecuteActivity(hostCtx(ctx, host, 5*time.Minute, 3), ActRestoreSnapshot, in).Get(ctx, nil); err != nil {
			return errResult("restore %s: %v", a.Name, err)
		}
		return toolResult{text: fmt.Sprintf("%s is back at snapshot %s: everything done since is undone (files, packages, processes)", sbx.Name, a.Name)}
	}
	if contains(sbx.Snapshots, a.Name) {
		return errResult("%s already has a snapshot %q; pick another name", sbx.Name, a.Name)
	}
	if err := workflow.ExecuteActivity(hostCtx(ctx, host, 5*time.Minute, 3), ActCreateSnapshot, in).Get(ctx, nil); err != nil {
		return errResult("snapshot %s: %v", a.Name, err)
	}
	sbx.Snapshots = append(sbx.Snapshots, a.Name)
	text := fmt.Sprintf("snapshot %s of %s taken", a.Name, sbx.Name)
	if sbx.Main {
		// A manifest of this state lets diff show what changed since.
		var m sandbox.ManifestResult
		min := sandbox.ManifestInput{Sandbox: sbx.Name, BaselineRef: t.baseline.Ref}
		if err := workflow.ExecuteActivity(hostCtx(ctx, host, 10*time.Minute, 3), ActTakeManifest, min).Get(ctx, &m); err == nil {
			t.agentState().snapshots[a.Name] = m.Ref
		} else {
			text += fmt.Sprintf(" (diff since it is not available: %v)", err)
		}
	}
	return toolResult{text: text}
}

func (t *task) toolDiff(ctx workflow.Context, a *tools.DiffArgs) toolResult {
	sbx, err := t.sandboxFor("", true)
	if err != nil {
		return errResult("%v", err)
	}
	host := t.in.Source.Host
	base, filesRef, what := t.baseline.Ref, t.baseline.FilesRef, "the start of the task"
	if a.SinceSnapshot != "" {
		ref := t.agentState().snapshots[a.SinceSnapshot]
		if ref == "" {
			return errResult("no manifest for snapshot %q of the main sandbox (snapshots: %s)", a.SinceSnapshot, strings.Join(sbx.Snapshots, ", "))
		}
		base, filesRef, what = ref, "", "snapshot "+a.SinceSnapshot
	}
	if base == "" {
		return errResult("no baseline manifest yet")
	}
	var now sandbox.ManifestResult
	if err := workflow.ExecuteActivity(hostCtx(ctx, host, 10*time.Minute, 3), ActTakeManifest, sandbox.ManifestInput{Sandbox: sbx.Name, BaselineRef: base}).Get(ctx, &now); err != nil {
		return errResult("manifest: %v", err)
	}
	var capt sandbox.CaptureResult
	in := sandbox.CaptureInput{Sandbox: sbx.Name, BeforeRef: base, AfterRef: now.Ref, BeforeFilesRef: filesRef}
	if err := workflow.ExecuteActivity(hostCtx(ctx, host, 10*time.Minute, 3), ActCaptureChanges, in).Get(ctx, &capt); err != nil {
		return errResult("diff: %v", err)
	}
	text := fmt.Sprintf("changes since %s (stored as %s):\n%s", what, capt.ChangesRef, capText(capt.Text, toolOutputCap))
	return toolResult{text: text, outputRef: capt.ChangesRef}
}

func (t *task) listSandboxes() string {
	var b strings.Builder
	for _, sb := range t.agentState().status.Sandboxes {
		role := "extra (not diffed)"
		if sb.Main {
			role = "main (its changes are the task's result)"
		}
		fmt.Fprintf(&b, "%s  %s  %s  ip %s  snapshots: [%s]\n", sb.Name, sb.State, role, orDefault(sb.IP, "-"), strings.Join(sb.Snapshots, ", "))
	}
	return b.String()
}

func (t *task) toolCreateSandbox(ctx workflow.Context) toolResult {
	ag := t.agentState()
	if ag.extras >= maxExtraSandboxes {
		return errResult("at most %d extra sandboxes per task; destroy one first", maxExtraSandboxes)
	}
	ag.extras++
	in := sandbox.CreateInput{Owner: t.st.WorkflowID, Suffix: fmt.Sprintf("a%d", ag.extras), Image: t.in.Source.Image}
	var info sandbox.Info
	if err := workflow.ExecuteActivity(hostCtx(ctx, t.in.Source.Host, 5*time.Minute, 3), ActCreateSandbox, in).Get(ctx, &info); err != nil {
		return errResult("create sandbox: %v", err)
	}
	ag.status.Sandboxes = append(ag.status.Sandboxes, AgentSandbox{Name: info.Name, IP: info.IP, State: "running"})
	t.record(ctx, "sandbox_created", "agent", map[string]any{"sandbox": info.Name, "ip": info.IP, "extra": true})
	return toolResult{text: fmt.Sprintf("created %s (ip %s). Pass sandbox=%q to other tools to use it. Its changes are not part of the task's result, and it is destroyed when you finish.", info.Name, info.IP, info.Name)}
}

func (t *task) toolSandbox(ctx workflow.Context, name, which string) toolResult {
	sbx, err := t.sandboxFor(which, false)
	if err != nil {
		return errResult("%v", err)
	}
	host := t.in.Source.Host
	switch name {
	case tools.DestroySandbox:
		if sbx.Main {
			return errResult("%s is the task's main sandbox: its changes are what gets diffed, so it cannot be destroyed. Use restore_snapshot to undo work.", sbx.Name)
		}
		t.destroySandbox(ctx, sbx.Name, "destroy_sandbox by the agent")
		sbx.State = "destroyed"
		return toolResult{text: sbx.Name + " destroyed"}
	case tools.StopSandbox:
		if sbx.State == "stopped" {
			return toolResult{text: sbx.Name + " is already stopped"}
		}
		if err := workflow.ExecuteActivity(hostCtx(ctx, host, 5*time.Minute, 3), ActStopSandbox, sbx.Name).Get(ctx, nil); err != nil {
			return errResult("stop %s: %v", sbx.Name, err)
		}
		sbx.State = "stopped"
		return toolResult{text: sbx.Name + " stopped; start_sandbox starts it again"}
	default: // start
		if sbx.State == "running" {
			return toolResult{text: sbx.Name + " is already running"}
		}
		var info sandbox.Info
		if err := workflow.ExecuteActivity(hostCtx(ctx, host, 5*time.Minute, 3), ActStartSandbox, sbx.Name).Get(ctx, &info); err != nil {
			return errResult("start %s: %v", sbx.Name, err)
		}
		sbx.State, sbx.IP = "running", info.IP
		return toolResult{text: fmt.Sprintf("%s is running (ip %s) and accepts commands", sbx.Name, info.IP)}
	}
}

// toolPlaybook keeps the agent's own playbook notes. They are shown to the
// reviewer marked as agent-written; the generated, verified playbook is
// the one that is applied.
func (t *task) toolPlaybook(ctx workflow.Context, args any) toolResult {
	ag := t.agentState()
	find := func(name string) *AgentPlaybook {
		for i := range ag.status.Playbooks {
			if ag.status.Playbooks[i].Name == name {
				return &ag.status.Playbooks[i]
			}
		}
		return nil
	}
	switch a := args.(type) {
	case *tools.CreatePlaybookArgs:
		if find(a.Name) != nil {
			return errResult("you already have a playbook %q", a.Name)
		}
		ag.status.Playbooks = append(ag.status.Playbooks, AgentPlaybook{Name: a.Name, Description: a.Description, Tasks: []AgentPlaybookTask{}, AgentWritten: true})
		t.record(ctx, "agent_playbook", "agent", map[string]any{"playbook": a.Name, "description": a.Description})
		return toolResult{text: fmt.Sprintf("playbook %q created (notes for the reviewer; Airlock generates the applied playbook from the diff)", a.Name)}
	case *tools.AddPlaybookTaskArgs:
		pb := find(a.Playbook)
		if pb == nil {
			return errResult("no playbook %q; create_playbook first", a.Playbook)
		}
		pb.Tasks = append(pb.Tasks, AgentPlaybookTask{Name: a.Name, Module: a.Module, Args: a.Args, Notes: a.Notes})
		t.record(ctx, "agent_playbook", "agent", map[string]any{"playbook": a.Playbook, "task": a.Name, "module": a.Module, "args": string(a.Args), "notes": a.Notes})
		return toolResult{text: fmt.Sprintf("task %d added to %q", len(pb.Tasks), a.Playbook)}
	case *tools.NameArgs:
		if a.Name == "" { // list
			if len(ag.status.Playbooks) == 0 {
				return toolResult{text: "no playbooks yet"}
			}
			var b strings.Builder
			for _, pb := range ag.status.Playbooks {
				fmt.Fprintf(&b, "%s: %d tasks — %s\n", pb.Name, len(pb.Tasks), pb.Description)
			}
			return toolResult{text: b.String()}
		}
		pb := find(a.Name)
		if pb == nil {
			return errResult("no playbook %q", a.Name)
		}
		return toolResult{text: AgentPlaybookYAML(*pb)}
	}
	return errResult("bad playbook call")
}

// AgentPlaybookYAML renders an agent-written playbook for the model and
// the reviewer. Arguments are JSON, which is valid YAML flow style.
func AgentPlaybookYAML(pb AgentPlaybook) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# agent-written notes, not applied: %s\n", pb.Name)
	if pb.Description != "" {
		fmt.Fprintf(&b, "# %s\n", strings.ReplaceAll(pb.Description, "\n", "\n# "))
	}
	b.WriteString("- hosts: all\n  tasks:\n")
	for _, task := range pb.Tasks {
		name, _ := json.Marshal(task.Name)
		fmt.Fprintf(&b, "    - name: %s\n", name)
		args := strings.TrimSpace(string(task.Args))
		if args == "" {
			args = "{}"
		}
		fmt.Fprintf(&b, "      %s: %s\n", task.Module, args)
		if task.Notes != "" {
			fmt.Fprintf(&b, "      # %s\n", strings.ReplaceAll(task.Notes, "\n", "\n      # "))
		}
	}
	return b.String()
}

// capText keeps the head and tail of s within n bytes.
func capText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	half := n / 2
	return strings.ToValidUTF8(s[:half], "") + fmt.Sprintf("\n… %d bytes omitted …\n", len(s)-2*half) + strings.ToValidUTF8(s[len(s)-half:], "")
}

// appMessage is an activity error's own message, without Temporal's
// wrapping, for the model.
func appMessage(err error) string {
	var ae *temporal.ApplicationError
	for e := err; e != nil; {
		if a, ok := e.(*temporal.ApplicationError); ok {
			ae = a
		}
		u, ok := e.(interface{ Unwrap() error })
		if !ok {
			break
		}
		e = u.Unwrap()
	}
	if ae != nil {
		return ae.Message()
	}
	return err.Error()
}
