-- Leases instead of session locks. A replica that freezes (a paused VM, a stalled host, a
-- partition) keeps its sessions open, so a lock tied to a session would stay held for as
-- long as it is frozen. A lease is a row with an expiry that its holder renews; judged by
-- the database's clock (one clock for every replica), it runs out when the holder goes
-- silent, however its sockets look.

-- The replica that runs the background work (reconciliation, timeouts, retention).
CREATE TABLE leader_lease (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    holder TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- Whose turn it is to work on a link token (by its SHA-256) in RequestRefresh, so
-- concurrent requests on any replica make one create call.
CREATE TABLE link_turns (
    token_sha256 TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

-- Which create call a mark belongs to, so the cleanup of an abandoned call removes only its
-- own mark (another call's may have replaced it). '' for marks written before this column.
ALTER TABLE creates_in_flight ADD COLUMN holder TEXT NOT NULL DEFAULT '';
