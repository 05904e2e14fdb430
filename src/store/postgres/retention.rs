//! Retention on PostgreSQL: removing results, raw events, finished intents and idempotency
//! keys past their age, a chunk at a time, the log from its oldest end only (so a retained
//! range stays contiguous and a cursor is either fully served or refused).

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::{
    fintoc_key_series, idempotency_keys, intent_accounts, refresh_intents, results, webhook_events,
};
use crate::clock::Millis;
use crate::store::{Pruned, StoreResult};

/// Removes up to `limit` rows of each kind older than `cutoff_ms` (idempotency keys older
/// than `key_cutoff_ms`). Held events wait for their intent however old they are.
pub(super) async fn prune(
    conn: &mut AsyncPgConnection,
    cutoff_ms: Millis,
    key_cutoff_ms: Millis,
    limit: i64,
) -> StoreResult<Pruned> {
    let mut pruned = Pruned::default();
    let oldest_kept: Option<i64> = results::table
        .filter(results::committed_at_ms.ge(cutoff_ms))
        .order(results::sequence.asc())
        .select(results::sequence)
        .first(conn)
        .await
        .optional()?;
    let below: Vec<i64> = results::table
        .filter(results::sequence.lt(oldest_kept.unwrap_or(i64::MAX)))
        .order(results::sequence.asc())
        .limit(limit)
        .select(results::sequence)
        .load(conn)
        .await?;
    if let Some(last) = below.last() {
        pruned.results = diesel::delete(results::table.filter(results::sequence.le(last)))
            .execute(conn)
            .await?;
    }
    let first_kept: Option<i64> = webhook_events::table
        .filter(webhook_events::received_at_ms.ge(cutoff_ms))
        .order(webhook_events::id.asc())
        .select(webhook_events::id)
        .first(conn)
        .await
        .optional()?;
    let events: Vec<i64> = webhook_events::table
        .filter(webhook_events::id.lt(first_kept.unwrap_or(i64::MAX)))
        .filter(webhook_events::disposition.ne("held"))
        .order(webhook_events::id.asc())
        .limit(limit)
        .select(webhook_events::id)
        .load(conn)
        .await?;
    pruned.events =
        diesel::delete(webhook_events::table.filter(webhook_events::id.eq_any(&events)))
            .execute(conn)
            .await?;
    let intents: Vec<String> = refresh_intents::table
        .filter(refresh_intents::completed_at_ms.lt(cutoff_ms))
        .limit(limit)
        .select(refresh_intents::id)
        .load(conn)
        .await?;
    diesel::delete(
        intent_accounts::table.filter(intent_accounts::refresh_intent_id.eq_any(&intents)),
    )
    .execute(conn)
    .await?;
    pruned.intents =
        diesel::delete(refresh_intents::table.filter(refresh_intents::id.eq_any(&intents)))
            .execute(conn)
            .await?;
    let keys: Vec<String> = idempotency_keys::table
        .filter(idempotency_keys::created_at_ms.lt(key_cutoff_ms))
        .limit(limit)
        .select(idempotency_keys::idempotency_key)
        .load(conn)
        .await?;
    pruned.keys = diesel::delete(
        idempotency_keys::table.filter(idempotency_keys::idempotency_key.eq_any(&keys)),
    )
    .execute(conn)
    .await?;
    // A caller key's count of spent Fintoc keys goes with it.
    let series: Vec<String> = fintoc_key_series::table
        .filter(fintoc_key_series::updated_at_ms.lt(key_cutoff_ms))
        .limit(limit)
        .select(fintoc_key_series::idempotency_key)
        .load(conn)
        .await?;
    pruned.keys += diesel::delete(
        fintoc_key_series::table.filter(fintoc_key_series::idempotency_key.eq_any(&series)),
    )
    .execute(conn)
    .await?;
    Ok(pruned)
}
