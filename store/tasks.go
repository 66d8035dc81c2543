package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

const taskColumns = `workflow_id, run_id, goal, source, started_by, target, phase, plan_hash,
	created_at, updated_at, summary`

// UpsertTask inserts or replaces the task row for t.WorkflowID (created_at
// is kept from the first insert). A write whose UpdatedAt is older than the
// stored row's is ignored, so a late retry never rolls the mirror back.
func (s *Store) UpsertTask(ctx context.Context, t Task) error {
	if err := t.Validate(); err != nil {
		return err
	}
	summary := []byte(t.Summary)
	if len(summary) == 0 {
		summary = []byte("{}")
	}
	_, err := s.pool.Exec(ctx, `
		INSERT INTO tasks (`+taskColumns+`)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, COALESCE($9, now()), COALESCE($10, now()), $11::jsonb)
		ON CONFLICT (workflow_id) DO UPDATE SET
			run_id = EXCLUDED.run_id, goal = EXCLUDED.goal, source = EXCLUDED.source,
			started_by = EXCLUDED.started_by, target = EXCLUDED.target, phase = EXCLUDED.phase,
			plan_hash = EXCLUDED.plan_hash, updated_at = EXCLUDED.updated_at, summary = EXCLUDED.summary
		WHERE tasks.updated_at <= EXCLUDED.updated_at`,
		t.WorkflowID, t.RunID, t.Goal, t.Source, t.StartedBy, t.Target, t.Phase, t.PlanHash,
		timePtr(t.CreatedAt), timePtr(t.UpdatedAt), string(summary))
	if err != nil {
		return fmt.Errorf("upsert task %s: %w", t.WorkflowID, classify(err))
	}
	return nil
}

// GetTask returns one task, or ErrNotFound.
func (s *Store) GetTask(ctx context.Context, workflowID string) (Task, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+taskColumns+` FROM tasks WHERE workflow_id = $1`, workflowID)
	if err != nil {
		return Task{}, fmt.Errorf("get task: %w", err)
	}
	t, err := pgx.CollectExactlyOneRow(rows, scanTask)
	if errors.Is(err, pgx.ErrNoRows) {
		return Task{}, fmt.Errorf("get task %s: %w", workflowID, ErrNotFound)
	}
	if err != nil {
		return Task{}, fmt.Errorf("get task: %w", err)
	}
	return t, nil
}

// ListTasks returns the tasks matching f, most recently updated first.
func (s *Store) ListTasks(ctx context.Context, f TaskFilter) ([]Task, error) {
	var where []string
	var args []any
	for _, c := range []struct{ col, val string }{
		{"phase", f.Phase}, {"source", f.Source}, {"target", f.Target}, {"started_by", f.StartedBy},
	} {
		if c.val != "" {
			args = append(args, c.val)
			where = append(where, fmt.Sprintf("%s = $%d", c.col, len(args)))
		}
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	limit = min(limit, 1000)
	q := `SELECT ` + taskColumns + ` FROM tasks`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, " AND ")
	}
	args = append(args, limit, max(f.Offset, 0))
	q += fmt.Sprintf(` ORDER BY updated_at DESC, workflow_id LIMIT $%d OFFSET $%d`, len(args)-1, len(args))
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	ts, err := pgx.CollectRows(rows, scanTask)
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	return ts, nil
}

func scanTask(r pgx.CollectableRow) (Task, error) {
	var t Task
	var summary []byte
	err := r.Scan(&t.WorkflowID, &t.RunID, &t.Goal, &t.Source, &t.StartedBy, &t.Target, &t.Phase,
		&t.PlanHash, &t.CreatedAt, &t.UpdatedAt, &summary)
	t.Summary = summary
	return t, err
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
