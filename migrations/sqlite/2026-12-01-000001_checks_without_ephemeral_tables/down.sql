CREATE TABLE webhook_events_old (
    id INTEGER PRIMARY KEY NOT NULL,
    event_key TEXT NOT NULL UNIQUE,
    event_type TEXT,
    disposition TEXT NOT NULL
        CHECK (disposition IN ('result', 'ignored', 'unparseable', 'held')),
    received_at_ms BIGINT NOT NULL,
    body BLOB NOT NULL
);
INSERT INTO webhook_events_old (id, event_key, event_type, disposition, received_at_ms, body)
    SELECT id, event_key, event_type, disposition, received_at_ms, body FROM webhook_events;
DROP TABLE webhook_events;
ALTER TABLE webhook_events_old RENAME TO webhook_events;
CREATE INDEX webhook_events_received ON webhook_events (received_at_ms);
CREATE INDEX webhook_events_held ON webhook_events (id) WHERE disposition = 'held';

CREATE TABLE results_old (
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
    completes_intent BOOLEAN NOT NULL DEFAULT 0
);
INSERT INTO results_old SELECT * FROM results;
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'results_old', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'results_old');
UPDATE sqlite_sequence
    SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'results'), 0))
    WHERE name = 'results_old';
DROP TABLE results;
ALTER TABLE results_old RENAME TO results;
CREATE INDEX results_account ON results (account_id, sequence);
