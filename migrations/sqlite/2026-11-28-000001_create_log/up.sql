-- The durable core of fintoc-refresh: what Fintoc sent us, the ordered result log that
-- watchers follow, and the intents, links and accounts needed to make sense of it.
-- Times are Unix milliseconds (UTC). Enums are lowercase text guarded by CHECK constraints;
-- the Rust side rejects unknown values instead of defaulting.

-- Every webhook body we acknowledged, verbatim, so nothing answered 2xx is ever lost.
CREATE TABLE webhook_events (
    id INTEGER PRIMARY KEY NOT NULL,
    -- Fintoc's event id (evt_…), or "sha256:<hex of body>" when the body has no readable id.
    event_key TEXT NOT NULL UNIQUE,
    -- The event's `type` as sent, or NULL when the body could not be parsed.
    event_type TEXT,
    -- result: became a result in the log; ignored: a type we do not push;
    -- unparseable: signed but not understood; held: waiting for its intent to be known.
    disposition TEXT NOT NULL
        CHECK (disposition IN ('result', 'ignored', 'unparseable', 'held')),
    received_at_ms BIGINT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX webhook_events_received ON webhook_events (received_at_ms);
CREATE INDEX webhook_events_held ON webhook_events (id) WHERE disposition = 'held';

-- Links resolved through Fintoc. The link token is a bank credential: only its SHA-256 is kept.
CREATE TABLE links (
    link_id TEXT PRIMARY KEY NOT NULL,
    token_sha256 TEXT NOT NULL,
    -- Arrival time of the latest rejected result: the Link is held back after it.
    rejected_at_ms BIGINT,
    resolved_at_ms BIGINT NOT NULL
);
CREATE INDEX links_token ON links (token_sha256);

-- Which Link each known account belongs to.
CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY NOT NULL,
    link_id TEXT NOT NULL
);

-- Fintoc refresh intents this service created, adopted or was handed.
CREATE TABLE refresh_intents (
    id TEXT PRIMARY KEY NOT NULL,
    link_id TEXT NOT NULL,
    refresh_type TEXT NOT NULL CHECK (refresh_type IN ('only_last', 'historical')),
    status TEXT NOT NULL
        CHECK (status IN ('pending', 'succeeded', 'failed', 'rejected', 'timed_out')),
    mfa_widget_token TEXT NOT NULL DEFAULT '',
    created_at_ms BIGINT NOT NULL,
    completed_at_ms BIGINT,
    -- The sequence of the result that completed the intent.
    completed_sequence BIGINT,
    -- When the lost-webhook reconciliation last ran for this intent.
    reconciled_at_ms BIGINT
);
CREATE INDEX refresh_intents_link ON refresh_intents (link_id, created_at_ms);
CREATE INDEX refresh_intents_pending ON refresh_intents (created_at_ms) WHERE status = 'pending';

-- The accounts an intent expects a result for, and the result that answered each.
CREATE TABLE intent_accounts (
    refresh_intent_id TEXT NOT NULL REFERENCES refresh_intents (id),
    account_id TEXT NOT NULL,
    result_sequence BIGINT,
    PRIMARY KEY (refresh_intent_id, account_id)
);
CREATE INDEX intent_accounts_waiting ON intent_accounts (account_id) WHERE result_sequence IS NULL;

-- The one ordered log of results every watcher follows. AUTOINCREMENT so a sequence is never
-- reused, even after retention has pruned the newest rows' predecessors (or all rows).
CREATE TABLE results (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    account_id TEXT NOT NULL,
    link_id TEXT NOT NULL,
    refresh_intent_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('succeeded', 'failed', 'rejected', 'timed_out')),
    new_movements BIGINT NOT NULL,
    public_error TEXT NOT NULL,
    event_id TEXT NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    committed_at_ms BIGINT NOT NULL,
    -- True on the result that gave its intent a final status.
    completes_intent BOOLEAN NOT NULL DEFAULT 0
);
CREATE INDEX results_link ON results (link_id, sequence);
CREATE INDEX results_account ON results (account_id, sequence);
CREATE INDEX results_intent ON results (refresh_intent_id, sequence);

-- RequestRefresh idempotency keys, global to the service, kept at least 24 hours.
CREATE TABLE idempotency_keys (
    idempotency_key TEXT PRIMARY KEY NOT NULL,
    token_sha256 TEXT NOT NULL,
    refresh_type TEXT NOT NULL CHECK (refresh_type IN ('only_last', 'historical')),
    refresh_intent_id TEXT NOT NULL,
    joined_existing BOOLEAN NOT NULL,
    created_at_ms BIGINT NOT NULL
);
