-- `CHECK (x IN ('a', 'b', …))` compiles to a temporary b-tree that SQLite builds, fills and
-- frees on every insert: on the two tables every webhook writes to, that was the largest
-- single cost of the intake (a page cache created and a page zeroed per row). The same
-- closed sets, spelled as comparisons, cost a few instructions. SQLite cannot alter a CHECK,
-- so both tables are rebuilt; their rows, ids and the log's sequence high-water mark are kept.

CREATE TABLE webhook_events_new (
    id INTEGER PRIMARY KEY NOT NULL,
    -- Fintoc's event id (evt_…), or "sha256:<hex of body>" when the body has no readable id.
    event_key TEXT NOT NULL UNIQUE,
    -- The event's `type` as sent, or NULL when the body could not be parsed.
    event_type TEXT,
    -- result: became a result in the log; ignored: a type we do not push;
    -- unparseable: signed but not understood; held: waiting for its intent to be known.
    disposition TEXT NOT NULL
        CHECK (disposition = 'result' OR disposition = 'ignored'
               OR disposition = 'unparseable' OR disposition = 'held'),
    received_at_ms BIGINT NOT NULL,
    body BLOB NOT NULL
);
INSERT INTO webhook_events_new (id, event_key, event_type, disposition, received_at_ms, body)
    SELECT id, event_key, event_type, disposition, received_at_ms, body FROM webhook_events;
DROP TABLE webhook_events;
ALTER TABLE webhook_events_new RENAME TO webhook_events;
CREATE INDEX webhook_events_received ON webhook_events (received_at_ms);
CREATE INDEX webhook_events_held ON webhook_events (id) WHERE disposition = 'held';

CREATE TABLE results_new (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    account_id TEXT NOT NULL,
    link_id TEXT NOT NULL,
    refresh_intent_id TEXT NOT NULL,
    status TEXT NOT NULL
        CHECK (status = 'succeeded' OR status = 'failed' OR status = 'rejected'
               OR status = 'timed_out'),
    new_movements BIGINT NOT NULL,
    public_error TEXT NOT NULL,
    event_id TEXT NOT NULL,
    occurred_at_ms BIGINT NOT NULL,
    committed_at_ms BIGINT NOT NULL,
    -- True on the result that gave its intent a final status.
    completes_intent BOOLEAN NOT NULL DEFAULT 0
);
INSERT INTO results_new (sequence, account_id, link_id, refresh_intent_id, status,
                         new_movements, public_error, event_id, occurred_at_ms,
                         committed_at_ms, completes_intent)
    SELECT sequence, account_id, link_id, refresh_intent_id, status, new_movements,
           public_error, event_id, occurred_at_ms, committed_at_ms, completes_intent
    FROM results;
-- A sequence is never reused: carry the high-water mark over even when retention has
-- emptied the log (the copy above only raises it to the newest row still there).
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'results_new', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'results_new');
UPDATE sqlite_sequence
    SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'results'), 0))
    WHERE name = 'results_new';
DROP TABLE results;
ALTER TABLE results_new RENAME TO results;
CREATE INDEX results_account ON results (account_id, sequence);
