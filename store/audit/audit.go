// Package audit holds the pure types of Airlock's audit store: events, task
// records, artifact references, and the errors the store returns. It has no
// database dependency, so workflow code and activity adapters can use these
// types without linking pgx; package store (the only package that speaks
// SQL) aliases them.
package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"time"
)

// Errors returned (wrapped) by the store. Test with errors.Is.
var (
	// ErrInvalid: the input can never succeed (bad field, unknown artifact,
	// constraint violation). Retrying does not help.
	ErrInvalid = errors.New("invalid")
	// ErrNotFound: no such task or artifact.
	ErrNotFound = errors.New("not found")
	// ErrKeyConflict: an event with the same idempotency key but different
	// content already exists. A retry of the same logical event is not a
	// conflict; this means two different events were given one key.
	ErrKeyConflict = errors.New("idempotency key reused for a different event")
)

// Event kinds. Kind is free text in the database; these are the ones the
// design names.
const (
	KindCommand        = "command"
	KindFileEdit       = "file_edit"
	KindSnapshot       = "snapshot"
	KindDiff           = "diff"
	KindPlaybook       = "playbook"
	KindApproval       = "approval"
	KindApprovalDenied = "approval_denied"
	KindReminder       = "reminder"
	KindApply          = "apply"
	KindCleanup        = "cleanup"
	KindWebhook        = "webhook"
	KindPhase          = "phase"
)

// Task sources, as in the AirlockSource search attribute.
const (
	SourceCLI          = "cli"
	SourceUI           = "ui"
	SourcePagerDuty    = "pagerduty"
	SourceAlertmanager = "alertmanager"
	// SourceTemporal: started directly with `temporal workflow start` or
	// the Temporal UI, without an origin set by Airlock.
	SourceTemporal = "temporal"
)

// Event is one append-only audit row.
//
// Idempotency key: (WorkflowID, ActivityID, Attempt, Seq), per DESIGN §5.
// The key names the execution that produced the event, not the write:
// writing the same logical event again (a retried store write) must reuse
// the same key and is then a no-op, while a new attempt of the producing
// activity (a command run again) is a new event with its own Attempt.
// Seq numbers the events one execution writes (0, 1, 2, ...).
type Event struct {
	ID         int64           `json:"id,omitempty"` // assigned by the store
	WorkflowID string          `json:"workflow_id"`
	ActivityID string          `json:"activity_id"`
	Attempt    int32           `json:"attempt"` // 0: not tied to an activity attempt
	Seq        int32           `json:"seq"`
	Kind       string          `json:"kind"`
	Actor      string          `json:"actor,omitempty"`
	At         time.Time       `json:"at,omitzero"` // zero: the database's now()
	Data       json.RawMessage `json:"data,omitempty"`
	ArtifactID string          `json:"artifact_id,omitempty"`
}

// Validate checks what the database would reject, and says which field.
func (e Event) Validate() error {
	switch {
	case e.WorkflowID == "":
		return invalid("event: workflow_id is empty")
	case e.ActivityID == "":
		return invalid("event: activity_id is empty")
	case e.Attempt < 0:
		return invalid("event: attempt %d is negative", e.Attempt)
	case e.Seq < 0:
		return invalid("event: seq %d is negative", e.Seq)
	case e.Kind == "":
		return invalid("event: kind is empty")
	case len(e.Data) > 0 && !json.Valid(e.Data):
		return invalid("event: data is not valid JSON")
	}
	if e.ArtifactID != "" {
		if err := ValidArtifactID(e.ArtifactID); err != nil {
			return fmt.Errorf("event: %w", err)
		}
	}
	return nil
}

// Task mirrors a workflow's state for lists. UpsertTask writes the whole
// record: send every field each time.
type Task struct {
	WorkflowID string `json:"workflow_id"`
	RunID      string `json:"run_id,omitempty"`
	Goal       string `json:"goal,omitempty"`
	Source     string `json:"source"` // SourceCLI, SourceUI, SourcePagerDuty, SourceAlertmanager
	StartedBy  string `json:"started_by,omitempty"`
	Target     string `json:"target,omitempty"`
	Phase      string `json:"phase,omitempty"`
	PlanHash   string `json:"plan_hash,omitempty"`
	// CreatedAt is used on first insert only (zero: now()). UpdatedAt (zero:
	// now()) orders writes: an upsert older than the stored row is ignored,
	// so a delayed retry cannot roll the mirror back. Pass workflow.Now().
	CreatedAt time.Time       `json:"created_at,omitzero"`
	UpdatedAt time.Time       `json:"updated_at,omitzero"`
	Summary   json.RawMessage `json:"summary,omitempty"`
}

// Validate checks what the database would reject, and says which field.
func (t Task) Validate() error {
	switch t.Source {
	case SourceCLI, SourceUI, SourcePagerDuty, SourceAlertmanager, SourceTemporal:
	default:
		return invalid("task: source %q is not one of cli, ui, pagerduty, alertmanager, temporal", t.Source)
	}
	switch {
	case t.WorkflowID == "":
		return invalid("task: workflow_id is empty")
	case len(t.Summary) > 0 && !json.Valid(t.Summary):
		return invalid("task: summary is not valid JSON")
	}
	return nil
}

// TaskFilter selects tasks for ListTasks; empty fields match everything.
// Results are newest-updated first.
type TaskFilter struct {
	Phase     string
	Source    string
	Target    string
	StartedBy string
	Limit     int // 0: 100; at most 1000
	Offset    int
}

// ArtifactRef names stored content. ID is "sha256:" + SHA256 (lowercase hex).
type ArtifactRef struct {
	ID     string `json:"id"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
}

// ArtifactSink stores content-addressed blobs. Storing the same bytes twice
// returns the same ref and keeps one copy. *store.Store implements it.
type ArtifactSink interface {
	PutArtifact(ctx context.Context, kind string, r io.Reader) (ArtifactRef, error)
}

// Artifacts reads and stores blobs: what the workers that move bundles,
// manifests and outputs need. *store.Store implements it.
type Artifacts interface {
	ArtifactSink
	ReadArtifact(ctx context.Context, id string) ([]byte, error)
}

var artifactIDRe = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// ValidArtifactID reports whether id has the form "sha256:<64 lowercase hex>".
func ValidArtifactID(id string) error {
	if !artifactIDRe.MatchString(id) {
		return invalid("artifact id %q is not sha256:<64 hex>", id)
	}
	return nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
