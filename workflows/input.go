// Package workflows holds Airlock's deterministic workflow code: the
// AgentTask workflow, the approval state machine, and the types that cross
// the workflow boundary (input, signals, updates, queries).
//
// Nothing here does I/O, reads the clock, starts goroutines other than
// workflow.Go, or ranges over maps.
package workflows

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/airlock-dev/airlock/activities/agent/tools"
)

// TaskQueue is the control queue: all workflows, LLM calls, playbook
// generation and store writes.
const TaskQueue = "airlock"

// ApplyQueuePrefix + environment is the queue of the apply worker.
const ApplyQueuePrefix = "airlock.apply."

// WorkflowType is the registered name of the AgentTask workflow.
const WorkflowType = "AgentTask"

// Origins a task may be started from. They are the values of AirlockSource.
var Origins = []string{"cli", "ui", "pagerduty", "alertmanager", "temporal"}

// TaskInput is the AgentTask contract (DESIGN.md §3). It is plain JSON so
// that `temporal workflow start --input '{…}'` works.
type TaskInput struct {
	Goal     string         `json:"goal" yaml:"goal"`
	Source   SourceSpec     `json:"source" yaml:"source"`
	Agent    AgentSpec      `json:"agent" yaml:"agent"`
	Target   TargetSpec     `json:"target" yaml:"target"`
	Approval ApprovalPolicy `json:"approval" yaml:"approval"`
	Limits   Limits         `json:"limits" yaml:"limits"`
	Origin   Origin         `json:"origin" yaml:"origin"`

	// decodeErr keeps a strict-decoding failure (unknown field, bad
	// duration) so that Validate reports it and the task fails cleanly
	// instead of the workflow task failing over and over.
	decodeErr error
}

// SourceSpec names the golden image (or source domain) and where to run it.
type SourceSpec struct {
	Image string `json:"image" yaml:"image"`
	Host  string `json:"host,omitempty" yaml:"host,omitempty"` // hypervisor host; default "local"
}

// AgentSpec selects the agent. Runbook mode needs no LLM.
type AgentSpec struct {
	Mode     string        `json:"mode" yaml:"mode"` // runbook | llm
	Model    string        `json:"model,omitempty" yaml:"model,omitempty"`
	MaxSteps int           `json:"max_steps,omitempty" yaml:"max_steps,omitempty"`
	ReadOnly bool          `json:"read_only,omitempty" yaml:"read_only,omitempty"`
	Steps    []RunbookStep `json:"steps,omitempty" yaml:"steps,omitempty"`
	// LLM budgets and limits; zero means the default (llmtypes.go).
	MaxTokens        int      `json:"max_tokens,omitempty" yaml:"max_tokens,omitempty"`                 // tokens spent in all LLM calls
	ContextTokens    int      `json:"context_tokens,omitempty" yaml:"context_tokens,omitempty"`         // compact older turns beyond ¾ of this
	MaxErrors        int      `json:"max_errors,omitempty" yaml:"max_errors,omitempty"`                 // consecutive bad tool calls before the task fails
	QuestionTimeout  Duration `json:"question_timeout,omitempty" yaml:"question_timeout,omitempty"`     // request_approval / request_egress wait
	MaxEgressMinutes int      `json:"max_egress_minutes,omitempty" yaml:"max_egress_minutes,omitempty"` // longest egress opening
}

// RunbookStep is one scripted step. Exactly one action field is set.
type RunbookStep struct {
	Name      string       `json:"name,omitempty" yaml:"name,omitempty"`
	Run       string       `json:"run,omitempty" yaml:"run,omitempty"`
	WriteFile *WriteFile   `json:"write_file,omitempty" yaml:"write_file,omitempty"`
	Snapshot  string       `json:"snapshot,omitempty" yaml:"snapshot,omitempty"`
	Restore   string       `json:"restore,omitempty" yaml:"restore,omitempty"`
	Expect    *Expectation `json:"expect,omitempty" yaml:"expect,omitempty"`
	// The same tool layer as the LLM agent (activities/agent/tools).
	EditFile        *tools.EditFileArgs      `json:"edit_file,omitempty" yaml:"edit_file,omitempty"`
	RequestApproval *ApprovalStep            `json:"request_approval,omitempty" yaml:"request_approval,omitempty"`
	RequestEgress   *tools.RequestEgressArgs `json:"request_egress,omitempty" yaml:"request_egress,omitempty"`
}

// ApprovalStep asks the approvers a question; the runbook goes on only on
// the ContinueOn answer (default: the first option, or "yes").
type ApprovalStep struct {
	Question   string   `json:"question" yaml:"question"`
	Options    []string `json:"options,omitempty" yaml:"options,omitempty"`
	ContinueOn string   `json:"continue_on,omitempty" yaml:"continue_on,omitempty"`
}

// WriteFile writes a whole file as root.
type WriteFile struct {
	Path    string `json:"path" yaml:"path"`
	Content string `json:"content" yaml:"content"`
	Mode    string `json:"mode,omitempty" yaml:"mode,omitempty"` // octal, e.g. "0644"
	Owner   string `json:"owner,omitempty" yaml:"owner,omitempty"`
	Group   string `json:"group,omitempty" yaml:"group,omitempty"`
}

// Expectation checks a run step's result.
type Expectation struct {
	ExitCode *int   `json:"exit_code,omitempty" yaml:"exit_code,omitempty"`
	Output   string `json:"output,omitempty" yaml:"output,omitempty"` // regexp on the captured output
}

// TargetSpec is where the approved playbook goes.
type TargetSpec struct {
	Env   string   `json:"env" yaml:"env"`                         // apply environment, e.g. prod
	Hosts []string `json:"hosts,omitempty" yaml:"hosts,omitempty"` // inventory hosts or groups
}

// ApprovalPolicy says who may approve and how long the task waits.
type ApprovalPolicy struct {
	Approvers         []string `json:"approvers" yaml:"approvers"`
	Quorum            int      `json:"quorum,omitempty" yaml:"quorum,omitempty"`
	ExpiresAfter      Duration `json:"expires_after,omitempty" yaml:"expires_after,omitempty"`
	RemindEvery       Duration `json:"remind_every,omitempty" yaml:"remind_every,omitempty"`
	AllowSelfApproval bool     `json:"allow_self_approval,omitempty" yaml:"allow_self_approval,omitempty"`
}

// Limits bound every tool call and the task as a whole.
type Limits struct {
	CommandTimeout Duration `json:"command_timeout,omitempty" yaml:"command_timeout,omitempty"`
	OutputCap      int      `json:"output_cap,omitempty" yaml:"output_cap,omitempty"` // bytes kept in history per command
	Deadline       Duration `json:"deadline,omitempty" yaml:"deadline,omitempty"`     // agent work, not the approval wait
}

// Origin is who started the task and how.
type Origin struct {
	Via string `json:"via,omitempty" yaml:"via,omitempty"` // cli | ui | pagerduty | alertmanager | temporal
	By  string `json:"by,omitempty" yaml:"by,omitempty"`
	Ref string `json:"ref,omitempty" yaml:"ref,omitempty"` // incident id, alert fingerprint, ...
}

// Defaults applied by Normalize.
const (
	DefaultHost           = "local"
	DefaultEnv            = "prod"
	DefaultExpiresAfter   = 72 * time.Hour
	DefaultRemindEvery    = 24 * time.Hour
	DefaultCommandTimeout = 5 * time.Minute
	DefaultOutputCap      = 4096
	DefaultDeadline       = 2 * time.Hour
	MaxRunbookSteps       = 200
)

// Duration is a time.Duration that reads and writes "72h" style strings.
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON accepts "90m" style strings.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"72h\", got %s", b)
	}
	return d.parse(s)
}

// UnmarshalText lets yaml.v3 and flags read durations too.
func (d *Duration) UnmarshalText(b []byte) error { return d.parse(string(b)) }

func (d *Duration) parse(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("bad duration %q: %w", s, err)
	}
	if v < 0 {
		return fmt.Errorf("bad duration %q: negative", s)
	}
	*d = Duration(v)
	return nil
}

// UnmarshalJSON decodes strictly: unknown fields and bad values are kept as
// a validation error rather than failing the workflow task.
func (in *TaskInput) UnmarshalJSON(b []byte) error {
	type plain TaskInput
	var p plain
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		// Fall back to a lenient decode so the known fields (origin, goal)
		// still reach the audit, and remember why it was refused.
		var lenient plain
		_ = json.Unmarshal(b, &lenient)
		*in = TaskInput(lenient)
		in.decodeErr = describeDecodeError(err)
		return nil
	}
	*in = TaskInput(p)
	return nil
}

var unknownFieldRe = regexp.MustCompile(`unknown field "([^"]+)"`)

func describeDecodeError(err error) error {
	if m := unknownFieldRe.FindStringSubmatch(err.Error()); m != nil {
		return &InputError{Field: m[1], Msg: "unknown field"}
	}
	var ute *json.UnmarshalTypeError
	if errors.As(err, &ute) {
		return &InputError{Field: ute.Field, Msg: fmt.Sprintf("wrong type: want %s, got %s", ute.Type, ute.Value)}
	}
	return &InputError{Field: "(input)", Msg: err.Error()}
}

// InputError names the offending field.
type InputError struct {
	Field string
	Msg   string
}

func (e *InputError) Error() string { return fmt.Sprintf("invalid task input: %s: %s", e.Field, e.Msg) }

// Normalize fills defaults. It is pure and safe to call twice.
func (in *TaskInput) Normalize() {
	if in.Source.Host == "" {
		in.Source.Host = DefaultHost
	}
	if in.Target.Env == "" {
		in.Target.Env = DefaultEnv
	}
	if in.Agent.Mode == "" {
		in.Agent.Mode = "runbook"
	}
	if in.Approval.Quorum == 0 {
		in.Approval.Quorum = 1
	}
	if in.Approval.ExpiresAfter == 0 {
		in.Approval.ExpiresAfter = Duration(DefaultExpiresAfter)
	}
	if in.Approval.RemindEvery == 0 {
		in.Approval.RemindEvery = Duration(DefaultRemindEvery)
	}
	if in.Limits.CommandTimeout == 0 {
		in.Limits.CommandTimeout = Duration(DefaultCommandTimeout)
	}
	if in.Limits.OutputCap == 0 {
		in.Limits.OutputCap = DefaultOutputCap
	}
	if in.Limits.Deadline == 0 {
		in.Limits.Deadline = Duration(DefaultDeadline)
	}
	if in.Origin.Via == "" {
		in.Origin.Via = "temporal"
	}
}

var (
	nameRe    = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)
	snapRe    = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_-]{0,62}$`)
	fileModRe = regexp.MustCompile(`^0?[0-7]{3,4}$`)
)

// Validate checks the input before any VM exists. Known images and targets
// are passed in by the caller (from worker configuration, via an activity
// or a side effect), so the check stays deterministic.
func (in *TaskInput) Validate(known Catalog) error {
	if in.decodeErr != nil {
		return in.decodeErr
	}
	bad := func(field, format string, a ...any) error {
		return &InputError{Field: field, Msg: fmt.Sprintf(format, a...)}
	}
	if strings.TrimSpace(in.Goal) == "" {
		return bad("goal", "required")
	}
	if len(in.Goal) > 4000 {
		return bad("goal", "longer than 4000 characters")
	}
	if in.Source.Image == "" {
		return bad("source.image", "required")
	}
	if !nameRe.MatchString(in.Source.Image) || (len(known.Images) > 0 && !contains(known.Images, in.Source.Image)) {
		return bad("source.image", "unknown image %q (known: %s)", in.Source.Image, strings.Join(known.Images, ", "))
	}
	if !nameRe.MatchString(in.Source.Host) {
		return bad("source.host", "bad host name %q", in.Source.Host)
	}
	if !nameRe.MatchString(in.Target.Env) || (len(known.Envs) > 0 && !contains(known.Envs, in.Target.Env)) {
		return bad("target.env", "unknown target environment %q (known: %s)", in.Target.Env, strings.Join(known.Envs, ", "))
	}
	for i, h := range in.Target.Hosts {
		if !nameRe.MatchString(h) {
			return bad(fmt.Sprintf("target.hosts[%d]", i), "bad host or group %q", h)
		}
		if len(known.Hosts) > 0 && !contains(known.Hosts, h) {
			return bad(fmt.Sprintf("target.hosts[%d]", i), "unknown target %q (known: %s)", h, strings.Join(known.Hosts, ", "))
		}
	}
	if err := in.Agent.Validate(); err != nil {
		return err
	}
	if len(in.Approval.Approvers) == 0 {
		return bad("approval.approvers", "at least one approver is required")
	}
	seen := map[string]bool{}
	for i, a := range in.Approval.Approvers {
		if !nameRe.MatchString(a) {
			return bad(fmt.Sprintf("approval.approvers[%d]", i), "bad approver name %q", a)
		}
		if seen[a] {
			return bad(fmt.Sprintf("approval.approvers[%d]", i), "duplicate approver %q", a)
		}
		seen[a] = true
	}
	if in.Approval.Quorum < 1 || in.Approval.Quorum > len(in.Approval.Approvers) {
		return bad("approval.quorum", "must be between 1 and the number of approvers (%d)", len(in.Approval.Approvers))
	}
	if in.Approval.RemindEvery.D() < time.Minute {
		return bad("approval.remind_every", "must be at least 1m")
	}
	if in.Approval.ExpiresAfter.D() < time.Minute {
		return bad("approval.expires_after", "must be at least 1m")
	}
	if t := in.Limits.CommandTimeout.D(); t < time.Second || t > time.Hour {
		return bad("limits.command_timeout", "must be between 1s and 1h")
	}
	if in.Limits.OutputCap < 256 || in.Limits.OutputCap > 64*1024 {
		return bad("limits.output_cap", "must be between 256 and 65536 bytes")
	}
	if !contains(Origins, in.Origin.Via) {
		return bad("origin.via", "unknown origin %q", in.Origin.Via)
	}
	return nil
}

// Validate checks the agent section on its own (runbook files use it).
func (a *AgentSpec) Validate() error {
	bad := func(field, format string, args ...any) error {
		return &InputError{Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	switch a.Mode {
	case "runbook":
		if len(a.Steps) == 0 {
			return bad("agent.steps", "a runbook needs at least one step")
		}
		if len(a.Steps) > MaxRunbookSteps {
			return bad("agent.steps", "more than %d steps", MaxRunbookSteps)
		}
		for i, s := range a.Steps {
			if err := s.validate(); err != nil {
				var fe *stepFieldError
				if errors.As(err, &fe) {
					return bad(fmt.Sprintf("agent.steps[%d].%s", i, fe.field), "%s", fe.msg)
				}
				return bad(fmt.Sprintf("agent.steps[%d]", i), "%v", err)
			}
		}
	case "llm":
		if a.MaxSteps < 0 || a.MaxSteps > 1000 {
			return bad("agent.max_steps", "must be between 0 (default %d) and 1000", DefaultMaxSteps)
		}
		if a.MaxTokens < 0 || a.MaxTokens > 100_000_000 {
			return bad("agent.max_tokens", "must be between 0 (default %d) and 100000000", DefaultMaxTokens)
		}
		if a.ContextTokens != 0 && (a.ContextTokens < 2000 || a.ContextTokens > 2_000_000) {
			return bad("agent.context_tokens", "must be between 2000 and 2000000 (0: default %d)", DefaultContextTokens)
		}
		if a.MaxErrors < 0 || a.MaxErrors > 100 {
			return bad("agent.max_errors", "must be between 0 (default %d) and 100", DefaultMaxErrors)
		}
		if len(a.Steps) > 0 {
			return bad("agent.steps", "steps are for mode runbook; an llm agent works from the goal")
		}
	default:
		return bad("agent.mode", "must be runbook or llm, got %q", a.Mode)
	}
	if q := a.QuestionTimeout.D(); q != 0 && (q < time.Minute || q > 7*24*time.Hour) {
		return bad("agent.question_timeout", "must be between 1m and 168h")
	}
	if a.MaxEgressMinutes < 0 || a.MaxEgressMinutes > 24*60 {
		return bad("agent.max_egress_minutes", "must be between 0 (default %d) and 1440", DefaultMaxEgressMinutes)
	}
	return nil
}

// stepFieldError names a field inside a runbook step, so that runbook
// files report the exact line and column.
type stepFieldError struct{ field, msg string }

func (e *stepFieldError) Error() string { return e.field + ": " + e.msg }

func (s RunbookStep) validate() error {
	n := 0
	if s.Run != "" {
		n++
	}
	if s.WriteFile != nil {
		n++
		if !strings.HasPrefix(s.WriteFile.Path, "/") {
			return fmt.Errorf("write_file.path must be absolute, got %q", s.WriteFile.Path)
		}
		if s.WriteFile.Mode != "" && !fileModRe.MatchString(s.WriteFile.Mode) {
			return fmt.Errorf("write_file.mode must be octal like 0644, got %q", s.WriteFile.Mode)
		}
	}
	if s.Snapshot != "" {
		n++
		if !snapRe.MatchString(s.Snapshot) {
			return fmt.Errorf("snapshot: bad name %q", s.Snapshot)
		}
	}
	if s.Restore != "" {
		n++
		if !snapRe.MatchString(s.Restore) {
			return fmt.Errorf("restore: bad name %q", s.Restore)
		}
	}
	if s.EditFile != nil {
		n++
		if s.EditFile.Sandbox != "" {
			return &stepFieldError{"edit_file.sandbox", "runbooks work in the task's sandbox; remove sandbox"}
		}
		if err := tools.Check(tools.EditFile, s.EditFile); err != nil {
			return &stepFieldError{"edit_file", strings.TrimPrefix(err.Error(), tools.EditFile+": ")}
		}
	}
	if a := s.RequestApproval; a != nil {
		n++
		if err := tools.Check(tools.RequestApproval, &tools.RequestApprovalArgs{Question: a.Question, Options: a.Options}); err != nil {
			return &stepFieldError{"request_approval", strings.TrimPrefix(err.Error(), tools.RequestApproval+": ")}
		}
		if a.ContinueOn != "" && !contains(questionOptions(a.Options), a.ContinueOn) {
			return &stepFieldError{"request_approval.continue_on", fmt.Sprintf("%q is not one of the options %v", a.ContinueOn, questionOptions(a.Options))}
		}
	}
	if e := s.RequestEgress; e != nil {
		n++
		if e.Sandbox != "" {
			return &stepFieldError{"request_egress.sandbox", "runbooks work in the task's sandbox; remove sandbox"}
		}
		if err := tools.Check(tools.RequestEgress, e); err != nil {
			return &stepFieldError{"request_egress", strings.TrimPrefix(err.Error(), tools.RequestEgress+": ")}
		}
	}
	if n != 1 {
		return errors.New("exactly one of run, write_file, edit_file, snapshot, restore, request_approval, request_egress is required")
	}
	if s.Expect != nil {
		if s.Run == "" {
			return errors.New("expect is only allowed on run steps")
		}
		if s.Expect.Output != "" {
			if _, err := regexp.Compile(s.Expect.Output); err != nil {
				return fmt.Errorf("expect.output: %v", err)
			}
		}
	}
	return nil
}

// Catalog is what the installation knows: images, environments, hosts.
// Empty lists mean "not restricted".
type Catalog struct {
	Images []string `json:"images"`
	Envs   []string `json:"envs"`
	Hosts  []string `json:"hosts"`
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
