DROP TABLE log_horizon;
ALTER TABLE log_counter DROP COLUMN newest_ms;
DROP INDEX results_committed;
