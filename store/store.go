// Package store is Airlock's audit store in PostgreSQL (DESIGN §5) and the
// only package that speaks SQL: a pgx pool, embedded migrations that run on
// Open, and the queries for tasks, events and artifacts.
//
// The value types live in store/audit (no database dependency) and are
// aliased here, so store.Event and audit.Event are the same type.
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/airlock-dev/airlock/store/audit"
)

// Aliases of the pure types in store/audit.
type (
	Event        = audit.Event
	Task         = audit.Task
	TaskFilter   = audit.TaskFilter
	ArtifactRef  = audit.ArtifactRef
	ArtifactSink = audit.ArtifactSink
)

// Event kinds and task sources; see store/audit.
const (
	KindCommand        = audit.KindCommand
	KindFileEdit       = audit.KindFileEdit
	KindSnapshot       = audit.KindSnapshot
	KindDiff           = audit.KindDiff
	KindPlaybook       = audit.KindPlaybook
	KindApproval       = audit.KindApproval
	KindApprovalDenied = audit.KindApprovalDenied
	KindReminder       = audit.KindReminder
	KindApply          = audit.KindApply
	KindCleanup        = audit.KindCleanup
	KindWebhook        = audit.KindWebhook
	KindPhase          = audit.KindPhase

	SourceCLI          = audit.SourceCLI
	SourceUI           = audit.SourceUI
	SourcePagerDuty    = audit.SourcePagerDuty
	SourceAlertmanager = audit.SourceAlertmanager
)

// Errors; see store/audit.
var (
	ErrInvalid     = audit.ErrInvalid
	ErrNotFound    = audit.ErrNotFound
	ErrKeyConflict = audit.ErrKeyConflict
)

// Store is a connection pool to the audit database. Safe for concurrent use.
type Store struct {
	pool *pgxpool.Pool
}

var _ ArtifactSink = (*Store)(nil)

// Open connects to dsn (a libpq URL or key=value string; pool settings such
// as pool_max_conns are accepted) and applies any pending migrations.
// Several processes may Open the same database at once.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("parse dsn: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("create pool: %w", err)
	}
	s := &Store{pool: pool}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes every connection.
func (s *Store) Close() { s.pool.Close() }

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	return nil
}

// classify turns errors that retrying cannot fix (SQLSTATE class 22 data
// exception, 23 integrity violation) into ErrInvalid. Everything else —
// connection refused, reset, timeouts, shutdown — stays as is: retryable.
func classify(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && len(pgErr.Code) == 5 {
		switch pgErr.Code[:2] {
		case "22", "23":
			return fmt.Errorf("%w: %s (SQLSTATE %s)", ErrInvalid, pgErr.Message, pgErr.Code)
		}
	}
	return err
}
