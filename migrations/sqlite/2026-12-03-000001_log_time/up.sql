-- Seek by time (WatchRefresh start_time). Each result's committed_at_ms is its stored time,
-- never earlier than the result before it (the writer stamps them so), so the first result
-- stored at or after a time is one probe of this index. It also serves retention's search
-- for the oldest result to keep.
CREATE INDEX results_committed ON results (committed_at_ms, sequence);

-- What retention removed from the log, for a seek to tell a complete feed from one with a
-- hole: the stored time of the newest result pruned (0: none yet). One row. A log pruned
-- before this table existed gets its oldest retained result's time, an upper bound of what
-- was pruned (a seek at or before it is refused only if something was pruned).
CREATE TABLE log_horizon (
    singleton INTEGER PRIMARY KEY NOT NULL CHECK (singleton = 1),
    pruned_through_ms BIGINT NOT NULL
);
INSERT INTO log_horizon (singleton, pruned_through_ms)
    VALUES (1, COALESCE((SELECT min(committed_at_ms) FROM results), 0));
