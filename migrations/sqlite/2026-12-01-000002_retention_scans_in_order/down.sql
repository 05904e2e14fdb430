DROP INDEX idempotency_keys_created;
DROP INDEX refresh_intents_completed;
CREATE INDEX webhook_events_received ON webhook_events (received_at_ms);
