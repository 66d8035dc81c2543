package workflows

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/airlock-dev/airlock/activities/agent/tools"
)

// Signals and the update that reach the agent while it works. They are
// part of the public contract, like `approval`:
//
//	temporal workflow signal --name answer   --input '{"question_id":"q1","by":"alice","choice":"approve"}'
//	temporal workflow signal --name instruct --input '{"by":"alice","text":"use port 8081"}'
//	temporal workflow signal --name cancel   --input '{"by":"alice","reason":"wrong host"}'
const (
	SignalAnswer   = "answer"
	SignalInstruct = "instruct"
	SignalCancel   = "cancel"
	UpdateAnswer   = "answer" // the same as the signal, with a synchronous verdict
)

// Activity names of the agent (the others are in activities.go).
const (
	ActLLMStep      = "LLMStep"      // control queue
	ActReadFile     = "ReadFile"     // host queue
	ActEditFile     = "EditFile"     // host queue
	ActSetEgress    = "SetEgress"    // host queue
	ActStartSandbox = "StartSandbox" // host queue
	ActStopSandbox  = "StopSandbox"  // host queue
)

// How an agent run ended (AgentStatus.EndReason).
const (
	EndFinished      = "finished"        // the model called finish
	EndMaxSteps      = "max_steps"       // budget: agent.max_steps
	EndMaxTokens     = "max_tokens"      // budget: agent.max_tokens
	EndDeadline      = "deadline"        // budget: limits.deadline
	EndTooManyErrors = "too_many_errors" // agent.max_errors errors in a row: the task fails
	EndCancelled     = "cancelled"       // the cancel signal: the task is cancelled
	EndLLMFailed     = "llm_failed"      // the endpoint failed after retries: the task fails
	EndRunbookDone   = "runbook_done"
)

// Defaults of the LLM agent's budgets (AgentSpec fields left at zero).
const (
	DefaultMaxSteps         = 40
	DefaultMaxTokens        = 400_000
	DefaultContextTokens    = 32_000
	DefaultMaxErrors        = 5
	DefaultQuestionTimeout  = 30 * time.Minute
	DefaultMaxEgressMinutes = 30
	maxExtraSandboxes       = 2
	maxCallsPerTurn         = 8
	toolOutputCap           = 4096 // bytes of one tool result the model sees
)

// AgentStatus is the agent's part of the status query.
type AgentStatus struct {
	Mode              string          `json:"mode"`
	Model             string          `json:"model,omitempty"`
	ReadOnly          bool            `json:"read_only,omitempty"`
	Steps             int             `json:"steps"` // LLM calls
	MaxSteps          int             `json:"max_steps,omitempty"`
	ToolCalls         int             `json:"tool_calls"`
	TokensUsed        int             `json:"tokens_used"`
	MaxTokens         int             `json:"max_tokens,omitempty"`
	Errors            int             `json:"errors"`
	ConsecutiveErrors int             `json:"consecutive_errors"`
	MaxErrors         int             `json:"max_errors,omitempty"`
	Compactions       int             `json:"compactions,omitempty"`
	Instructions      int             `json:"instructions,omitempty"`
	EndReason         string          `json:"end_reason,omitempty"`
	EndDetail         string          `json:"end_detail,omitempty"`
	Summary           string          `json:"summary,omitempty"`
	Questions         []Question      `json:"questions,omitempty"`
	Egress            []EgressGrant   `json:"egress,omitempty"`
	Playbooks         []AgentPlaybook `json:"playbooks,omitempty"` // agent-written notes, never applied
	Sandboxes         []AgentSandbox  `json:"sandboxes,omitempty"`
}

// Question is a durable question to the approvers: request_approval or
// request_egress, from the model or a runbook step.
type Question struct {
	ID           string         `json:"id"`
	Kind         string         `json:"kind"` // approval | egress
	Text         string         `json:"text"`
	Options      []string       `json:"options"`
	Destinations []string       `json:"destinations,omitempty"`
	Minutes      int            `json:"minutes,omitempty"`
	Sandbox      string         `json:"sandbox,omitempty"`
	AskedAt      time.Time      `json:"asked_at"`
	ExpiresAt    time.Time      `json:"expires_at"`
	Status       string         `json:"status"` // pending | answered | expired | cancelled
	AnsweredBy   string         `json:"answered_by,omitempty"`
	Choice       string         `json:"choice,omitempty"`
	Comment      string         `json:"comment,omitempty"`
	AnsweredAt   time.Time      `json:"answered_at,omitempty"`
	Denied       []AnswerDenied `json:"denied,omitempty"`
	// Who may answer, from the task's approval policy: the web page tells
	// a non-approver before they try (the workflow refuses them anyway).
	Approvers         []string `json:"approvers,omitempty"`
	AllowSelfApproval bool     `json:"allow_self_approval,omitempty"`
}

// AnswerDenied is an answer that was not taken.
type AnswerDenied struct {
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	Choice string    `json:"choice"`
	Reason string    `json:"reason"`
}

// EgressGrant is one approved opening of a sandbox's network.
type EgressGrant struct {
	Sandbox      string    `json:"sandbox"`
	QuestionID   string    `json:"question_id"`
	ApprovedBy   string    `json:"approved_by"`
	Destinations []string  `json:"destinations"`
	OpenedAt     time.Time `json:"opened_at"`
	Until        time.Time `json:"until"`
	Open         bool      `json:"open"`
	ClosedAt     time.Time `json:"closed_at,omitempty"`
	CloseReason  string    `json:"close_reason,omitempty"`
}

// AgentPlaybook is the agent's own notes for the reviewer.
type AgentPlaybook struct {
	Name         string              `json:"name"`
	Description  string              `json:"description,omitempty"`
	Tasks        []AgentPlaybookTask `json:"tasks"`
	AgentWritten bool                `json:"agent_written"`
}

// AgentPlaybookTask is one task of an agent-written playbook.
type AgentPlaybookTask struct {
	Name   string          `json:"name"`
	Module string          `json:"module"`
	Args   json.RawMessage `json:"args,omitempty"`
	Notes  string          `json:"notes,omitempty"`
}

// AgentSandbox is one of the task's sandboxes as the agent sees it.
type AgentSandbox struct {
	Name      string   `json:"name"`
	IP        string   `json:"ip,omitempty"`
	Main      bool     `json:"main"`
	State     string   `json:"state"` // running | stopped | destroyed
	Snapshots []string `json:"snapshots,omitempty"`
}

// Answer is the payload of the `answer` signal and update.
type Answer struct {
	QuestionID string `json:"question_id"`
	By         string `json:"by"`
	Choice     string `json:"choice"`
	Comment    string `json:"comment,omitempty"`
}

// Instruction is the payload of the `instruct` signal.
type Instruction struct {
	By   string `json:"by"`
	Text string `json:"text"`
}

// CancelRequest is the payload of the `cancel` signal.
type CancelRequest struct {
	By     string `json:"by"`
	Reason string `json:"reason,omitempty"`
}

// parseStrict decodes an arbitrary signal payload into v, refusing
// anything that is not an object with only v's fields.
func parseStrict(raw any, v any) error {
	b, err := json.Marshal(raw)
	if err != nil {
		return fmt.Errorf("payload is not JSON: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("payload is not the expected object: %v", err)
	}
	return nil
}

// llmCtx runs the LLM step on the control queue. The activity retries the
// endpoint itself (honouring Retry-After); Temporal retries only a lost
// worker.
func llmCtx(ctx workflow.Context) workflow.Context {
	return workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		TaskQueue:           TaskQueue,
		StartToCloseTimeout: 20 * time.Minute,
		HeartbeatTimeout:    time.Minute,
		RetryPolicy: &temporal.RetryPolicy{
			InitialInterval:    2 * time.Second,
			BackoffCoefficient: 2,
			MaximumInterval:    time.Minute,
			MaximumAttempts:    3,
			NonRetryableErrorTypes: []string{ErrTypeBadInput, tools.ErrTypeLLMUnavailable,
				tools.ErrTypeLLMRefused, tools.ErrTypeLLMConfig},
		},
	})
}

// agentLimits are the LLM agent's effective budgets.
type agentLimits struct {
	maxSteps, maxTokens, contextTokens, maxErrors, maxEgressMinutes int
	questionTimeout                                                 time.Duration
}

func (a AgentSpec) limits() agentLimits {
	l := agentLimits{a.MaxSteps, a.MaxTokens, a.ContextTokens, a.MaxErrors, a.MaxEgressMinutes, a.QuestionTimeout.D()}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&l.maxSteps, DefaultMaxSteps)
	def(&l.maxTokens, DefaultMaxTokens)
	def(&l.contextTokens, DefaultContextTokens)
	def(&l.maxErrors, DefaultMaxErrors)
	def(&l.maxEgressMinutes, DefaultMaxEgressMinutes)
	if l.questionTimeout == 0 {
		l.questionTimeout = DefaultQuestionTimeout
	}
	return l
}

// questionOptions are the choices of a request_approval question: the
// given options, or yes/no.
func questionOptions(opts []string) []string {
	if len(opts) == 0 {
		return []string{"yes", "no"}
	}
	return opts
}
