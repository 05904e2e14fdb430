ALTER TABLE creates_in_flight DROP COLUMN holder;
DROP TABLE link_turns;
DROP TABLE leader_lease;
