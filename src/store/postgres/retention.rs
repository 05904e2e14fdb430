//! Retention on PostgreSQL: removing results, raw events, finished intents and idempotency
//! keys past their age, a chunk at a time, the log from its oldest end only (so a retained
//! range stays contiguous and a cursor is either fully served or refused).

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::{
    fintoc_key_series, idempotency_keys, intent_accounts, log_horizon, refresh_intents, results,
    webhook_events,
};
use crate::clock::Millis;
use crate::store::queries;
use crate::store::{Pruned, StoreResult};

/// Removes up to `limit` rows of each kind older than `cutoff_ms` (idempotency keys older
/// than `key_cutoff_ms`). Held events wait for their intent however old they are.
pub(super) async fn prune(
    conn: &mut AsyncPgConnection,
    cutoff_ms: Millis,
    key_cutoff_ms: Millis,
    limit: i64,
) -> StoreResult<Pruned> {
    queries::prune!(conn, cutoff_ms, key_cutoff_ms, limit, [.await])
}
