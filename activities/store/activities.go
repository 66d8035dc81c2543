// Package store holds the control worker's Temporal activities that write
// the audit store: thin adapters over store.Store. It depends only on the
// pure types in store/audit, never on pgx, so workflow code can import it
// for input types and method values.
//
// Errors: input that can never succeed is a non-retryable
// ApplicationError with type ErrTypeInvalidInput or ErrTypeKeyConflict;
// anything else (database down, connection reset, timeout) is a plain,
// retryable error, so Temporal's retry policy rides out a Postgres restart.
package store

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/airlock-dev/airlock/store/audit"
)

// ApplicationError types of non-retryable failures.
const (
	ErrTypeInvalidInput = "AirlockStoreInvalidInput"
	ErrTypeKeyConflict  = "AirlockStoreKeyConflict"
)

// Backend is what the activities need; *store.Store implements it.
type Backend interface {
	AppendEvent(ctx context.Context, e audit.Event) (id int64, inserted bool, err error)
	UpsertTask(ctx context.Context, t audit.Task) error
	PutArtifact(ctx context.Context, kind string, r io.Reader) (audit.ArtifactRef, error)
}

// Activities are registered on the control worker:
// w.RegisterActivity(&store.Activities{Store: st}).
type Activities struct {
	Store Backend
}

// TaskRecord is the task mirror row; see audit.Task.
type TaskRecord = audit.Task

// ArtifactRef names stored content; see audit.ArtifactRef.
type ArtifactRef = audit.ArtifactRef

// RecordEventInput is one audit event to append.
//
// Its idempotency key is (workflow, activity, attempt, seq), per DESIGN §5,
// and it names the execution that produced the event:
//   - With SourceActivityID set (the workflow records what another activity
//     did, e.g. a command an Exec activity ran, and that activity returned
//     its own activity.GetInfo ActivityID and Attempt): the key is
//     (WorkflowID, SourceActivityID, SourceAttempt, Seq). A second attempt
//     of that source activity ran the command again and is a new event.
//   - Otherwise (the event is the workflow's own: a phase change, an
//     approval signal): the key is (WorkflowID, this RecordEvent activity's
//     ActivityID, 0, Seq), taken from activity.GetInfo. The attempt is 0,
//     not RecordEvent's own attempt, because a retry of RecordEvent
//     re-writes the SAME event: if attempt 1 committed but its completion
//     was lost (timeout, worker crash), attempt 2 must hit the same key and
//     be a no-op, not a duplicate row.
//
// WorkflowID defaults to the calling workflow. Called outside an activity
// (a direct call), WorkflowID and SourceActivityID are required.
type RecordEventInput struct {
	WorkflowID       string          `json:"workflow_id,omitempty"`
	SourceActivityID string          `json:"source_activity_id,omitempty"`
	SourceAttempt    int32           `json:"source_attempt,omitempty"`
	Seq              int32           `json:"seq,omitempty"`
	Kind             string          `json:"kind"`
	Actor            string          `json:"actor,omitempty"`
	At               time.Time       `json:"at,omitzero"` // zero: the database's now(); pass workflow.Now()
	Data             json.RawMessage `json:"data,omitempty"`
	ArtifactID       string          `json:"artifact_id,omitempty"`
}

// StoreArtifactInput is content to store. It travels through workflow
// history, so keep it small (Temporal's payload limit is 2 MB); producers of
// large outputs should use an audit.ArtifactSink directly.
type StoreArtifactInput struct {
	Kind    string `json:"kind"`
	Content []byte `json:"content"`
}

// Event returns the audit event that in carries, with its idempotency key
// filled in as described on RecordEventInput.
func (in RecordEventInput) Event(ctx context.Context) (audit.Event, error) {
	e := audit.Event{
		WorkflowID: in.WorkflowID,
		ActivityID: in.SourceActivityID,
		Attempt:    in.SourceAttempt,
		Seq:        in.Seq,
		Kind:       in.Kind,
		Actor:      in.Actor,
		At:         in.At,
		Data:       in.Data,
		ArtifactID: in.ArtifactID,
	}
	if in.SourceActivityID == "" && in.SourceAttempt != 0 {
		return e, fmt.Errorf("%w: source_attempt without source_activity_id", audit.ErrInvalid)
	}
	if activity.IsActivity(ctx) {
		info := activity.GetInfo(ctx)
		if e.WorkflowID == "" {
			e.WorkflowID = info.WorkflowExecution.ID
		}
		if e.ActivityID == "" {
			e.ActivityID = info.ActivityID
		}
	}
	return e, e.Validate()
}

// RecordEvent appends one event to the audit log; a repeat of the same
// event is a no-op (see RecordEventInput for the key).
func (a *Activities) RecordEvent(ctx context.Context, in RecordEventInput) error {
	e, err := in.Event(ctx)
	if err != nil {
		return toTemporal("record event", err)
	}
	if _, _, err := a.Store.AppendEvent(ctx, e); err != nil {
		return toTemporal("record event", err)
	}
	return nil
}

// UpsertTask writes the task mirror row (whole record; older UpdatedAt
// than the stored row is ignored).
func (a *Activities) UpsertTask(ctx context.Context, t TaskRecord) error {
	if err := a.Store.UpsertTask(ctx, t); err != nil {
		return toTemporal("upsert task", err)
	}
	return nil
}

// StoreArtifact stores content and returns its content address.
func (a *Activities) StoreArtifact(ctx context.Context, in StoreArtifactInput) (ArtifactRef, error) {
	ref, err := a.Store.PutArtifact(ctx, in.Kind, bytes.NewReader(in.Content))
	if err != nil {
		return ArtifactRef{}, toTemporal("store artifact", err)
	}
	return ref, nil
}

// toTemporal makes failures that retrying cannot fix non-retryable and
// leaves the rest (connectivity, timeouts) retryable.
func toTemporal(op string, err error) error {
	switch {
	case errors.Is(err, audit.ErrInvalid):
		return temporal.NewNonRetryableApplicationError(op+": "+err.Error(), ErrTypeInvalidInput, err)
	case errors.Is(err, audit.ErrKeyConflict):
		return temporal.NewNonRetryableApplicationError(op+": "+err.Error(), ErrTypeKeyConflict, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
