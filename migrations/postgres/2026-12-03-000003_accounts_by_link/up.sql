-- A Link's accounts by Link: GetLink and ListLinks read each Link's accounts, and a Link
-- watcher's catch-up reads the results of its Link's accounts. Without this each of those
-- scanned every account (measured: GetLink 8× GetRefresh, ListLinks of 10,000 Links 25 s).
-- Accounts are written only when a Link is resolved, so the index costs the hot path nothing.
CREATE INDEX accounts_link ON accounts (link_id, account_id);
