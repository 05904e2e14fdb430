-- Every result written costs one b-tree insert per index, inside the intake's group commit.
-- Replays by intent go through intent_accounts (which already points at each answer), and
-- replays by Link through the Link's few accounts, so two of the three secondary indexes on
-- the log are not worth their write cost.
DROP INDEX results_link;
DROP INDEX results_intent;
