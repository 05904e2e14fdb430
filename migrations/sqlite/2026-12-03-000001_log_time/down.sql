DROP TABLE log_horizon;
DROP INDEX results_committed;
