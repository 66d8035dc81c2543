package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/airlock-dev/airlock/store"
	"github.com/airlock-dev/airlock/store/storetest"
)

type env struct {
	ctx context.Context
	dsn string
	st  *store.Store
}

// setup gives the test a fresh, migrated database.
func setup(t *testing.T) env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	dsn := storetest.Start(t)
	st, err := store.Open(ctx, dsn)
	require.NoError(t, err)
	t.Cleanup(st.Close)
	return env{ctx: ctx, dsn: dsn, st: st}
}

// query runs a raw SQL query for assertions.
func (e env) query(t *testing.T, sql string, args ...any) pgx.Row {
	t.Helper()
	conn, err := pgx.Connect(e.ctx, e.dsn)
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn.QueryRow(e.ctx, sql, args...)
}

func (e env) count(t *testing.T, sql string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, e.query(t, sql, args...).Scan(&n))
	return n
}

const migrationCount = 1

func TestPing(t *testing.T) {
	e := setup(t)
	require.NoError(t, e.st.Ping(e.ctx))
}

func TestMigrationsIdempotent(t *testing.T) {
	e := setup(t)
	for range 2 {
		st, err := store.Open(e.ctx, e.dsn)
		require.NoError(t, err)
		st.Close()
	}
	require.Equal(t, migrationCount, e.count(t, `SELECT count(*) FROM schema_migrations`))
	require.Equal(t, 3, e.count(t, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public'
		AND tablename IN ('tasks', 'events', 'artifacts')`))
}

func TestMigrationsConcurrent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dsn := storetest.Start(t) // empty: every Open races to migrate
	const n = 6
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			st, err := store.Open(ctx, dsn)
			if err == nil {
				err = st.Ping(ctx)
				st.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	e := env{ctx: ctx, dsn: dsn}
	require.Equal(t, migrationCount, e.count(t, `SELECT count(*) FROM schema_migrations`))
}

func TestMigrationChangedAfterApplyFails(t *testing.T) {
	e := setup(t)
	require.NoError(t, e.query(t, `UPDATE schema_migrations SET checksum = 'edited' RETURNING 1`).Scan(new(int)))
	_, err := store.Open(e.ctx, e.dsn)
	require.ErrorContains(t, err, "changed after it was applied")
}

func TestAppendEventIdempotentPerKey(t *testing.T) {
	e := setup(t)
	ev := store.Event{
		WorkflowID: "task-01", ActivityID: "7", Attempt: 1, Seq: 0,
		Kind: store.KindCommand, Actor: "agent",
		Data: json.RawMessage(`{"cmd": "true", "exit": 0}`),
	}
	id1, inserted, err := e.st.AppendEvent(e.ctx, ev)
	require.NoError(t, err)
	require.True(t, inserted)

	// The same event again (a retried write): no new row, same id. Key order
	// and spacing in the JSON do not matter (jsonb equality).
	again := ev
	again.Data = json.RawMessage(`{"exit":0,"cmd":"true"}`)
	again.At = time.Now().Add(time.Minute)
	id2, inserted, err := e.st.AppendEvent(e.ctx, again)
	require.NoError(t, err)
	require.False(t, inserted)
	require.Equal(t, id1, id2)

	// Another seq and another attempt of the producing activity are new events.
	next := ev
	next.Seq = 1
	_, inserted, err = e.st.AppendEvent(e.ctx, next)
	require.NoError(t, err)
	require.True(t, inserted)
	retry := ev
	retry.Attempt = 2
	_, inserted, err = e.st.AppendEvent(e.ctx, retry)
	require.NoError(t, err)
	require.True(t, inserted)

	// A different event under a used key is a conflict, not silently dropped.
	other := ev
	other.Data = json.RawMessage(`{"cmd": "rm -rf /tmp/x", "exit": 0}`)
	_, _, err = e.st.AppendEvent(e.ctx, other)
	require.ErrorIs(t, err, store.ErrKeyConflict)

	evs, err := e.st.ListEvents(e.ctx, "task-01")
	require.NoError(t, err)
	require.Len(t, evs, 3)
	require.Equal(t, id1, evs[0].ID)
	require.JSONEq(t, string(ev.Data), string(evs[0].Data))
	require.Equal(t, []int32{0, 1, 0}, []int32{evs[0].Seq, evs[1].Seq, evs[2].Seq})
	require.Equal(t, []int32{1, 1, 2}, []int32{evs[0].Attempt, evs[1].Attempt, evs[2].Attempt})
	require.WithinDuration(t, time.Now(), evs[0].At, time.Minute)
}

func TestAppendEventConcurrentSameKey(t *testing.T) {
	e := setup(t)
	ev := store.Event{WorkflowID: "task-02", ActivityID: "3", Attempt: 1, Kind: store.KindPhase,
		Data: json.RawMessage(`{"phase":"agent"}`)}
	const n = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	ids := map[int64]int{}
	var inserts int
	for range n {
		wg.Go(func() {
			id, inserted, err := e.st.AppendEvent(e.ctx, ev)
			mu.Lock()
			defer mu.Unlock()
			require.NoError(t, err)
			ids[id]++
			if inserted {
				inserts++
			}
		})
	}
	wg.Wait()
	require.Len(t, ids, 1)
	require.Equal(t, 1, inserts)
	require.Equal(t, 1, e.count(t, `SELECT count(*) FROM events WHERE workflow_id = 'task-02'`))
}

func TestAppendEventRejectsBadInput(t *testing.T) {
	e := setup(t)
	good := store.Event{WorkflowID: "task-03", ActivityID: "1", Kind: store.KindApproval, At: time.Now()}
	for name, mutate := range map[string]func(*store.Event){
		"no workflow":      func(ev *store.Event) { ev.WorkflowID = "" },
		"no activity":      func(ev *store.Event) { ev.ActivityID = "" },
		"no kind":          func(ev *store.Event) { ev.Kind = "" },
		"negative seq":     func(ev *store.Event) { ev.Seq = -1 },
		"bad json":         func(ev *store.Event) { ev.Data = json.RawMessage(`{`) },
		"bad artifact id":  func(ev *store.Event) { ev.ArtifactID = "md5:abc" },
		"unknown artifact": func(ev *store.Event) { ev.ArtifactID = "sha256:" + fmt.Sprintf("%064x", 1) },
		"NUL in jsonb":     func(ev *store.Event) { ev.Data = json.RawMessage(`{"out":"a\u0000b"}`) },
	} {
		t.Run(name, func(t *testing.T) {
			ev := good
			mutate(&ev)
			_, _, err := e.st.AppendEvent(e.ctx, ev)
			require.ErrorIs(t, err, store.ErrInvalid)
		})
	}
	require.Zero(t, e.count(t, `SELECT count(*) FROM events`))
}

func TestEventsAreAppendOnly(t *testing.T) {
	e := setup(t)
	_, _, err := e.st.AppendEvent(e.ctx, store.Event{WorkflowID: "task-04", ActivityID: "1", Kind: store.KindPhase})
	require.NoError(t, err)
	err = e.query(t, `UPDATE events SET kind = 'x' RETURNING id`).Scan(new(int64))
	require.ErrorContains(t, err, "append-only")
	err = e.query(t, `DELETE FROM events RETURNING id`).Scan(new(int64))
	require.ErrorContains(t, err, "append-only")
}

func TestTasks(t *testing.T) {
	e := setup(t)
	t0 := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	task := store.Task{
		WorkflowID: "task-a", RunID: "run-1", Goal: "install nginx", Source: store.SourceCLI,
		StartedBy: "alice", Target: "web", Phase: "agent", CreatedAt: t0, UpdatedAt: t0,
		Summary: json.RawMessage(`{"steps": 3}`),
	}
	require.NoError(t, e.st.UpsertTask(e.ctx, task))

	got, err := e.st.GetTask(e.ctx, "task-a")
	require.NoError(t, err)
	require.True(t, got.CreatedAt.Equal(t0))
	require.JSONEq(t, `{"steps": 3}`, string(got.Summary))
	got.CreatedAt, got.UpdatedAt, got.Summary = task.CreatedAt, task.UpdatedAt, task.Summary
	require.Equal(t, task, got)

	// A newer write replaces the row but keeps created_at.
	newer := task
	newer.Phase, newer.PlanHash = "awaiting_approval", "sha256:abc"
	newer.CreatedAt, newer.UpdatedAt = t0.Add(time.Hour), t0.Add(time.Minute)
	require.NoError(t, e.st.UpsertTask(e.ctx, newer))
	// A late retry of an older write is ignored.
	require.NoError(t, e.st.UpsertTask(e.ctx, task))
	got, err = e.st.GetTask(e.ctx, "task-a")
	require.NoError(t, err)
	require.Equal(t, "awaiting_approval", got.Phase)
	require.Equal(t, "sha256:abc", got.PlanHash)
	require.True(t, got.CreatedAt.Equal(t0))
	require.True(t, got.UpdatedAt.Equal(t0.Add(time.Minute)))

	// Zero times mean now(); empty summary means {}.
	require.NoError(t, e.st.UpsertTask(e.ctx, store.Task{WorkflowID: "pd-P123", Source: store.SourcePagerDuty, Phase: "agent"}))
	require.NoError(t, e.st.UpsertTask(e.ctx, store.Task{WorkflowID: "am-f00", Source: store.SourceAlertmanager, Phase: "done", UpdatedAt: t0}))
	pd, err := e.st.GetTask(e.ctx, "pd-P123")
	require.NoError(t, err)
	require.WithinDuration(t, time.Now(), pd.CreatedAt, time.Minute)
	require.JSONEq(t, `{}`, string(pd.Summary))

	all, err := e.st.ListTasks(e.ctx, store.TaskFilter{})
	require.NoError(t, err)
	require.Equal(t, []string{"pd-P123", "task-a", "am-f00"}, workflowIDs(all))
	agent, err := e.st.ListTasks(e.ctx, store.TaskFilter{Phase: "agent"})
	require.NoError(t, err)
	require.Equal(t, []string{"pd-P123"}, workflowIDs(agent))
	page, err := e.st.ListTasks(e.ctx, store.TaskFilter{Limit: 1, Offset: 1})
	require.NoError(t, err)
	require.Equal(t, []string{"task-a"}, workflowIDs(page))
	bySource, err := e.st.ListTasks(e.ctx, store.TaskFilter{Source: store.SourceCLI, StartedBy: "alice", Target: "web"})
	require.NoError(t, err)
	require.Equal(t, []string{"task-a"}, workflowIDs(bySource))

	_, err = e.st.GetTask(e.ctx, "task-missing")
	require.ErrorIs(t, err, store.ErrNotFound)
	require.ErrorIs(t, e.st.UpsertTask(e.ctx, store.Task{WorkflowID: "x", Source: "email"}), store.ErrInvalid)
	require.ErrorIs(t, e.st.UpsertTask(e.ctx, store.Task{Source: store.SourceUI}), store.ErrInvalid)
}

func workflowIDs(ts []store.Task) []string {
	ids := make([]string, len(ts))
	for i, t := range ts {
		ids[i] = t.WorkflowID
	}
	return ids
}

func TestErrorsAreWrapped(t *testing.T) {
	e := setup(t)
	_, err := e.st.GetTask(e.ctx, "nope")
	require.True(t, errors.Is(err, store.ErrNotFound))
	require.ErrorContains(t, err, "get task nope")
}
