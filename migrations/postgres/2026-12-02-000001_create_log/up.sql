-- fintoc-refresh on PostgreSQL: the same durable core as the SQLite store (what Fintoc sent,
-- the ordered result log, intents, Links, accounts, idempotency keys), shared by every
-- replica, plus what several replicas need to act as one: the log's counter and the marks of
-- create calls in flight. Times are Unix milliseconds (UTC); enums are lowercase text guarded
-- by CHECK constraints (the Rust side rejects unknown values).

-- Every webhook body acknowledged, verbatim; the event id is the dedupe key cluster-wide.
CREATE TABLE webhook_events (
    id BIGSERIAL PRIMARY KEY,
    -- Fintoc's event id (evt_…), or "sha256:<hex of body>" when the body has no readable id.
    event_key TEXT NOT NULL UNIQUE,
    event_type TEXT,
    -- result | ignored | unparseable | held (waiting for its intent to be known)
    disposition TEXT NOT NULL
        CHECK (disposition IN ('result', 'ignored', 'unparseable', 'held')),
    received_at_ms BIGINT NOT NULL,
    body BYTEA NOT NULL
);
CREATE INDEX webhook_events_held ON webhook_events (id) WHERE disposition = 'held';

-- Links resolved through Fintoc. The link token is a bank credential: only its SHA-256 is kept.
CREATE TABLE links (
    link_id TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL,
    rejected_at_ms BIGINT,
    resolved_at_ms BIGINT NOT NULL
);
CREATE INDEX links_token ON links (token_sha256);

CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,
    link_id TEXT NOT NULL
);

CREATE TABLE refresh_intents (
    id TEXT PRIMARY KEY,
    link_id TEXT NOT NULL,
    refresh_type TEXT NOT NULL CHECK (refresh_type IN ('only_last', 'historical')),
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'succeeded', 'failed', 'rejected', 'timed_out')),
    mfa_widget_token TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL,
    completed_at_ms BIGINT,
    completed_sequence BIGINT,
    reconciled_at_ms BIGINT
);
CREATE INDEX refresh_intents_link ON refresh_intents (link_id, created_at_ms);
CREATE INDEX refresh_intents_pending ON refresh_intents (created_at_ms) WHERE status = 'pending';
CREATE INDEX refresh_intents_completed ON refresh_intents (completed_at_ms)
    WHERE completed_at_ms IS NOT NULL;

CREATE TABLE intent_accounts (
    refresh_intent_id TEXT NOT NULL REFERENCES refresh_intents (id),
    account_id TEXT NOT NULL,
    result_sequence BIGINT,
    PRIMARY KEY (refresh_intent_id, account_id)
);
CREATE INDEX intent_accounts_waiting ON intent_accounts (account_id) WHERE result_sequence IS NULL;

-- The one ordered log every watcher on every replica follows. The sequence is not a
-- SERIAL: those are handed out at insert time while transactions commit in any order, so a
-- reader could see n+1 before n and skip n for ever. Sequences come from `log_counter`
-- instead, inside the committing transaction (see below).
CREATE TABLE results (
    sequence BIGINT PRIMARY KEY,
    account_id TEXT NOT NULL,
    link_id TEXT NOT NULL,
    refresh_intent_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('succeeded', 'failed', 'rejected', 'timed_out')),
    new_movements BIGINT NOT NULL,
    public_error TEXT NOT NULL,
    event_id TEXT NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    committed_at_ms BIGINT NOT NULL,
    completes_intent BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX results_account ON results (account_id, sequence);

CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL,
    refresh_type TEXT NOT NULL CHECK (refresh_type IN ('only_last', 'historical')),
    refresh_intent_id TEXT NOT NULL,
    joined_existing BOOLEAN NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at_ms);

-- The newest sequence handed out. Every transaction that writes the log (or the state it
-- depends on) locks this one row first (`SELECT … FOR UPDATE`) and keeps the lock until it
-- commits, so the log's commit order is its sequence order: no reader can see n+1 while n is
-- still to come. Each replica batches its writes into group commits, so the lock is taken
-- once per batch, not once per event.
CREATE TABLE log_counter (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    newest BIGINT NOT NULL
);
INSERT INTO log_counter (singleton, newest) VALUES (TRUE, 0);

-- Links with a refresh-intent create call in flight on some replica: account events for them
-- are held until the intent is known. A replica that dies mid-call leaves its mark behind;
-- the lease makes it expire, and the held events are then settled.
CREATE TABLE creates_in_flight (
    link_id TEXT PRIMARY KEY,
    expires_at_ms BIGINT NOT NULL
);
