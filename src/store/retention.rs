//! Retention: removing results, raw events, finished intents and idempotency keys past their
//! age, in small chunks so each writer job stays short and the intake never waits long.

use diesel::prelude::*;

use super::schema::{idempotency_keys, intent_accounts, refresh_intents, results, webhook_events};
use super::{StoreResult, Tx};
use crate::clock::Millis;

/// Rows removed by one [`prune`] call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub results: usize,
    pub events: usize,
    pub intents: usize,
    pub keys: usize,
}

impl Pruned {
    pub fn total(&self) -> usize {
        self.results + self.events + self.intents + self.keys
    }
}

/// Removes up to `limit` rows of each kind older than `cutoff_ms` (idempotency keys older than
/// `key_cutoff_ms`). The log is pruned from its oldest end only, so the retained sequences
/// stay contiguous and a cursor is either fully served or refused with OUT_OF_RANGE.
pub fn prune(
    tx: &mut Tx<'_>,
    cutoff_ms: Millis,
    key_cutoff_ms: Millis,
    limit: i64,
) -> StoreResult<Pruned> {
    let mut pruned = Pruned::default();
    let oldest_kept: Option<i64> = results::table
        .filter(results::committed_at_ms.ge(cutoff_ms))
        .select(diesel::dsl::min(results::sequence))
        .first(tx.conn)?;
    let below: Vec<i64> = results::table
        .filter(results::sequence.lt(oldest_kept.unwrap_or(i64::MAX)))
        .order(results::sequence.asc())
        .limit(limit)
        .select(results::sequence)
        .load(tx.conn)?;
    if let Some(last) = below.last() {
        pruned.results =
            diesel::delete(results::table.filter(results::sequence.le(last))).execute(tx.conn)?;
    }
    let events: Vec<i64> = webhook_events::table
        .filter(webhook_events::received_at_ms.lt(cutoff_ms))
        .filter(webhook_events::disposition.ne("held"))
        .limit(limit)
        .select(webhook_events::id)
        .load(tx.conn)?;
    pruned.events =
        diesel::delete(webhook_events::table.filter(webhook_events::id.eq_any(&events)))
            .execute(tx.conn)?;
    let intents: Vec<String> = refresh_intents::table
        .filter(refresh_intents::completed_at_ms.lt(cutoff_ms))
        .limit(limit)
        .select(refresh_intents::id)
        .load(tx.conn)?;
    diesel::delete(
        intent_accounts::table.filter(intent_accounts::refresh_intent_id.eq_any(&intents)),
    )
    .execute(tx.conn)?;
    pruned.intents =
        diesel::delete(refresh_intents::table.filter(refresh_intents::id.eq_any(&intents)))
            .execute(tx.conn)?;
    let keys: Vec<String> = idempotency_keys::table
        .filter(idempotency_keys::created_at_ms.lt(key_cutoff_ms))
        .limit(limit)
        .select(idempotency_keys::idempotency_key)
        .load(tx.conn)?;
    pruned.keys = diesel::delete(
        idempotency_keys::table.filter(idempotency_keys::idempotency_key.eq_any(&keys)),
    )
    .execute(tx.conn)?;
    Ok(pruned)
}
