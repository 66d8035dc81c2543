package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// AppendEvent inserts e unless an event with its idempotency key
// (WorkflowID, ActivityID, Attempt, Seq) exists. It returns the row id and
// whether this call inserted it. Writing the same event again is a no-op
// that returns the existing id; an existing event with the same key but a
// different kind, actor, data or artifact is ErrKeyConflict (At is not
// compared: a retry may carry a later clock).
func (s *Store) AppendEvent(ctx context.Context, e Event) (id int64, inserted bool, err error) {
	if err := e.Validate(); err != nil {
		return 0, false, err
	}
	data := []byte(e.Data)
	if len(data) == 0 {
		data = []byte("{}")
	}
	var artifact *string
	if e.ArtifactID != "" {
		artifact = &e.ArtifactID
	}
	err = s.pool.QueryRow(ctx, `
		INSERT INTO events (workflow_id, activity_id, attempt, seq, kind, actor, at, data, artifact_id)
		VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, now()), $8::jsonb, $9)
		ON CONFLICT ON CONSTRAINT events_idempotency_key DO NOTHING
		RETURNING id`,
		e.WorkflowID, e.ActivityID, e.Attempt, e.Seq, e.Kind, e.Actor, timePtr(e.At), string(data), artifact,
	).Scan(&id)
	if err == nil {
		return id, true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return 0, false, fmt.Errorf("append event: %w", classify(err))
	}
	// The key exists. A new statement sees rows committed by concurrent
	// writers that the INSERT waited for.
	var same bool
	err = s.pool.QueryRow(ctx, `
		SELECT id, kind = $5 AND actor = $6 AND data = $7::jsonb AND artifact_id IS NOT DISTINCT FROM $8
		FROM events WHERE workflow_id = $1 AND activity_id = $2 AND attempt = $3 AND seq = $4`,
		e.WorkflowID, e.ActivityID, e.Attempt, e.Seq, e.Kind, e.Actor, string(data), artifact,
	).Scan(&id, &same)
	if err != nil {
		return 0, false, fmt.Errorf("append event: read existing: %w", classify(err))
	}
	if !same {
		return id, false, fmt.Errorf("append event %s/%s/%d/%d: %w (existing id %d)",
			e.WorkflowID, e.ActivityID, e.Attempt, e.Seq, ErrKeyConflict, id)
	}
	return id, false, nil
}

// ListEvents returns a workflow's events in the order they were recorded.
func (s *Store) ListEvents(ctx context.Context, workflowID string) ([]Event, error) {
	rows, err := s.pool.Query(ctx, `
		SELECT id, workflow_id, activity_id, attempt, seq, kind, actor, at, data, COALESCE(artifact_id, '')
		FROM events WHERE workflow_id = $1 ORDER BY id`, workflowID)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	evs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Event, error) {
		var e Event
		var data []byte
		err := r.Scan(&e.ID, &e.WorkflowID, &e.ActivityID, &e.Attempt, &e.Seq, &e.Kind,
			&e.Actor, &e.At, &data, &e.ArtifactID)
		e.Data = data
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return evs, nil
}
