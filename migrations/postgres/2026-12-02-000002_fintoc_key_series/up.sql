-- The Idempotency-Keys sent to Fintoc for one caller idempotency key form a series (the
-- caller's key hashed, then -1, -2 …). Fintoc keeps the first answer to each key, errors
-- included, for 24 hours: a key it has answered is spent and must never be sent again. This
-- counts, per caller key, how many keys of its series Fintoc has answered, for every replica;
-- the next create starts after them. Pruned with the idempotency keys.
CREATE TABLE fintoc_key_series (
    idempotency_key TEXT PRIMARY KEY,
    spent BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
CREATE INDEX fintoc_key_series_updated ON fintoc_key_series (updated_at_ms);
