package store

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"github.com/jackc/pgx/v5"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// migrationLockKey is the pg_advisory_xact_lock key that serialises
// migrations (advisory locks are per database). "airlock\0" as an int64.
const migrationLockKey int64 = 0x6169726c6f636b00

type migration struct {
	version string // file name without .sql, e.g. "0001_init"
	sql     string
	sum     string // sha256 hex of the file
}

func loadMigrations() ([]migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	sort.Strings(names)
	ms := make([]migration, 0, len(names))
	for _, name := range names {
		b, err := migrationFS.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("read migration: %w", err)
		}
		sum := sha256.Sum256(b)
		ms = append(ms, migration{
			version: strings.TrimSuffix(strings.TrimPrefix(name, "migrations/"), ".sql"),
			sql:     string(b),
			sum:     hex.EncodeToString(sum[:]),
		})
	}
	return ms, nil
}

// migrate applies pending migrations, each in its own transaction that
// first takes a transaction-scoped advisory lock. Processes that start at
// once queue on the lock; each then sees what the others applied. No session
// state outlives a transaction, so nothing leaks into the pool. A migration
// file that changed after it was applied is an error. Versions in the
// database that this binary does not know (a newer binary ran) are ignored.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := loadMigrations()
	if err != nil {
		return err
	}
	for _, m := range ms {
		if err := s.applyMigration(ctx, m); err != nil {
			return fmt.Errorf("migration %s: %w", m.version, err)
		}
	}
	return nil
}

func (s *Store) applyMigration(ctx context.Context, m migration) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLockKey); err != nil {
			return fmt.Errorf("lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version    text PRIMARY KEY,
			checksum   text NOT NULL,
			applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		var sum string
		err := tx.QueryRow(ctx, `SELECT checksum FROM schema_migrations WHERE version = $1`, m.version).Scan(&sum)
		switch {
		case err == nil && sum == m.sum:
			return nil
		case err == nil:
			return fmt.Errorf("file changed after it was applied (checksum %s, applied %s)", m.sum, sum)
		case !errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("read schema_migrations: %w", err)
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)`,
			m.version, m.sum); err != nil {
			return fmt.Errorf("record: %w", err)
		}
		return nil
	})
}
