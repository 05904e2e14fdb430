DROP TABLE fetch_jobs;
DROP TABLE movements;
DROP TABLE link_tokens;
DELETE FROM results WHERE status IN ('movements', 'movements_unavailable');
ALTER TABLE results DROP COLUMN fetches_movements;
ALTER TABLE results DROP COLUMN detail;
ALTER TABLE results DROP CONSTRAINT results_status_check;
ALTER TABLE results ADD CONSTRAINT results_status_check CHECK (status IN
    ('succeeded', 'failed', 'rejected', 'timed_out'));
