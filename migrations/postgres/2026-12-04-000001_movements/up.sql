-- Movements (CONTRACT.md §7): sealed Link tokens, the movements fetched for each account,
-- the fetch jobs results leave behind, and two kinds of log entries besides account results.

-- The log also carries `movements` and `movements_unavailable` entries (their `status`),
-- each with its payload as JSON in `detail` (empty for account results). A result whose
-- movements will be fetched says so, so an intent stream knows what to wait for.
ALTER TABLE results DROP CONSTRAINT results_status_check;
ALTER TABLE results ADD CONSTRAINT results_status_check CHECK (status IN
    ('succeeded', 'failed', 'rejected', 'timed_out', 'movements', 'movements_unavailable'));
ALTER TABLE results ADD COLUMN detail TEXT NOT NULL DEFAULT '';
ALTER TABLE results ADD COLUMN fetches_movements BOOLEAN NOT NULL DEFAULT FALSE;

-- A Link's token, kept only when the caller asked, sealed with AES-256-GCM under the key
-- `key_id` of LINK_TOKEN_KEYS, the Link id and key id bound in (src/custody.rs). Dropped
-- after --link-token-retention from `given_at_ms` (when a caller last gave it).
CREATE TABLE link_tokens (
    link_id TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    given_at_ms BIGINT NOT NULL
);
CREATE INDEX link_tokens_given ON link_tokens (given_at_ms);

-- Every movement fetched or pushed, as last pushed (JSON of the normalized movement): what
-- a fetch is compared against (new id → added, changed content → modified) and what
-- ListMovements pages, newest post_date first.
CREATE TABLE movements (
    account_id TEXT NOT NULL,
    movement_id TEXT NOT NULL,
    link_id TEXT NOT NULL,
    post_date TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (account_id, movement_id)
);
CREATE INDEX movements_newest ON movements (account_id, post_date, movement_id);
CREATE INDEX movements_link ON movements (link_id);

-- A fetch owed for a result: written in the result's transaction, claimed by one replica
-- at a time (the lease), deleted in the transaction that logs what it found. Its intent is
-- the result's (read through `result_sequence`: a result may be claimed by an intent later).
CREATE TABLE fetch_jobs (
    result_sequence BIGINT PRIMARY KEY,
    account_id TEXT NOT NULL,
    link_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    new_movements BIGINT NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at_ms BIGINT NOT NULL,
    lease_owner TEXT NOT NULL DEFAULT '',
    lease_until_ms BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX fetch_jobs_due ON fetch_jobs (due_at_ms);
