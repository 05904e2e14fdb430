DROP TABLE fetch_jobs;
DROP TABLE movements;
DROP TABLE link_tokens;
DELETE FROM results WHERE status = 'movements' OR status = 'movements_unavailable';
CREATE TABLE results_old (
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
    completes_intent BOOLEAN NOT NULL DEFAULT 0
);
INSERT INTO results_old SELECT sequence, account_id, link_id, refresh_intent_id, status,
    new_movements, public_error, event_id, occurred_at_ms, committed_at_ms, completes_intent
    FROM results;
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'results_old', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'results_old');
UPDATE sqlite_sequence
    SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'results'), 0))
    WHERE name = 'results_old';
DROP TABLE results;
ALTER TABLE results_old RENAME TO results;
CREATE INDEX results_account ON results (account_id, sequence);
CREATE INDEX results_committed ON results (committed_at_ms, sequence);
