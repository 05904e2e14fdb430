-- Retention finds its cut-off by walking the log and the raw events in insertion order from
-- their oldest end (ids and sequences grow with arrival), so the arrival-time index on
-- webhook_events is only a write cost on every webhook. Intents and idempotency keys are
-- pruned by times that do not follow insertion order; they are written once per request, so
-- an index there is cheap and spares retention a full scan inside a writer job.
DROP INDEX webhook_events_received;
CREATE INDEX refresh_intents_completed ON refresh_intents (completed_at_ms)
    WHERE completed_at_ms IS NOT NULL;
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at_ms);
