DROP TABLE idempotency_keys;
DROP TABLE results;
DROP TABLE intent_accounts;
DROP TABLE refresh_intents;
DROP TABLE accounts;
DROP TABLE links;
DROP TABLE webhook_events;
