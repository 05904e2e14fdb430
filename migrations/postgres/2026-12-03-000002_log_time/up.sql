-- Seek by time (WatchRefresh start_time). Each result's committed_at_ms is its stored time,
-- never earlier than the result before it: writers stamp under the counter's lock, no
-- earlier than `newest_ms`, the stamp of the newest result, which survives pruning. So
-- across replicas whose clocks differ a little the stamps still never go back, and the first
-- result stored at or after a time is one probe of this index. It also serves retention's
-- search for the oldest result to keep.
CREATE INDEX results_committed ON results (committed_at_ms, sequence);
ALTER TABLE log_counter ADD COLUMN newest_ms BIGINT NOT NULL DEFAULT 0;
UPDATE log_counter SET newest_ms = COALESCE((SELECT max(committed_at_ms) FROM results), 0);

-- What retention removed from the log, for a seek to tell a complete feed from one with a
-- hole: the stored time of the newest result pruned (0: none yet). One row. A log pruned
-- before this table existed gets its oldest retained result's time, an upper bound of what
-- was pruned (a seek at or before it is refused only if something was pruned).
CREATE TABLE log_horizon (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    pruned_through_ms BIGINT NOT NULL
);
INSERT INTO log_horizon (singleton, pruned_through_ms)
    VALUES (TRUE, COALESCE((SELECT min(committed_at_ms) FROM results), 0));
