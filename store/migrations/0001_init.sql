-- Airlock audit store, DESIGN §5.

-- tasks: a mirror of workflow state, for lists. Source of truth is Temporal.
CREATE TABLE tasks (
    workflow_id text PRIMARY KEY,
    run_id      text NOT NULL DEFAULT '',
    goal        text NOT NULL DEFAULT '',
    source      text NOT NULL CHECK (source IN ('cli', 'ui', 'pagerduty', 'alertmanager')),
    started_by  text NOT NULL DEFAULT '',
    target      text NOT NULL DEFAULT '',
    phase       text NOT NULL DEFAULT '',
    plan_hash   text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    summary     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX tasks_updated_at_idx ON tasks (updated_at DESC, workflow_id);
CREATE INDEX tasks_phase_idx ON tasks (phase, updated_at DESC);

-- artifacts: content-addressed blobs; the same bytes are stored once.
CREATE TABLE artifacts (
    id         text PRIMARY KEY CHECK (id = 'sha256:' || sha256),
    sha256     text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    size       bigint NOT NULL CHECK (size >= 0),
    kind       text NOT NULL,
    content    bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (octet_length(content) = size)
);

-- events: append-only. The idempotency key (workflow_id, activity_id,
-- attempt, seq) makes a retried write of the same event a no-op.
CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    workflow_id text NOT NULL,
    activity_id text NOT NULL,
    attempt     integer NOT NULL CHECK (attempt >= 0),
    seq         integer NOT NULL CHECK (seq >= 0),
    kind        text NOT NULL CHECK (kind <> ''),
    actor       text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now(),
    data        jsonb NOT NULL DEFAULT '{}',
    artifact_id text REFERENCES artifacts (id),
    CONSTRAINT events_idempotency_key UNIQUE (workflow_id, activity_id, attempt, seq)
);
CREATE INDEX events_workflow_idx ON events (workflow_id, id);
CREATE INDEX events_artifact_idx ON events (artifact_id) WHERE artifact_id IS NOT NULL;

-- Append-only: refuse UPDATE and DELETE on events (TRUNCATE stays possible
-- for operators).
CREATE FUNCTION events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events is append-only' USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_append_only();
