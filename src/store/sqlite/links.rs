//! What RequestRefresh needs to answer locally: Links known by their token's hash, the
//! pending intent of a Link, the last success (cooldown), the rejected hold, idempotency
//! keys, and how many Fintoc keys each caller key has spent.

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;

use super::Tx;
use super::intents::get_intent;
use super::schema::{
    accounts, fintoc_key_series, idempotency_keys, intent_accounts, link_tokens, links,
    refresh_intents, results,
};
use crate::clock::Millis;
use crate::domain::{IntentStatus, IntentView, RefreshType, ResultRow};
use crate::store::queries;
use crate::store::{
    IdempotencyRecord, KeyRecord, KnownLink, LinkSnapshot, LinkState, LinksFrom, StoreResult,
};

pub(super) fn link_by_token(
    conn: &mut SqliteConnection,
    token_sha256: &str,
) -> StoreResult<Option<KnownLink>> {
    queries::link_by_token!(conn, token_sha256, [])
}

pub(super) fn link_by_id(
    conn: &mut SqliteConnection,
    link_id: &str,
) -> StoreResult<Option<KnownLink>> {
    queries::link_by_id!(conn, link_id, [])
}

/// Records a Link resolved through Fintoc, with its current accounts.
pub(super) fn upsert_link(
    tx: &mut Tx<'_>,
    link_id: &str,
    token_sha256: &str,
    account_ids: &[String],
) -> StoreResult<()> {
    let now = tx.now_ms();
    queries::upsert_link!(tx.conn, link_id, token_sha256, now, [])?;
    for account in account_ids {
        diesel::replace_into(accounts::table)
            .values((
                accounts::account_id.eq(account),
                accounts::link_id.eq(link_id),
            ))
            .execute(tx.conn)?;
    }
    Ok(())
}

/// The Link's pending intent, if any (the newest, should there be several).
pub(super) fn pending_intent(
    conn: &mut SqliteConnection,
    link_id: &str,
) -> StoreResult<Option<IntentView>> {
    match queries::pending_intent_id!(conn, link_id, [])? {
        Some(id) => get_intent(conn, &id),
        None => Ok(None),
    }
}

/// The most recently completed succeeded intent of this type: (id, completed at).
pub(super) fn last_success(
    conn: &mut SqliteConnection,
    link_id: &str,
    refresh_type: RefreshType,
) -> StoreResult<Option<(String, Millis)>> {
    queries::last_success!(conn, link_id, refresh_type, [])
}

pub(super) fn idempotency(
    conn: &mut SqliteConnection,
    key: &str,
) -> StoreResult<Option<IdempotencyRecord>> {
    queries::idempotency_record!(conn, key, [])
}

/// Remembers the first answer given for `key` (a later call with the same key keeps it).
pub(super) fn remember_key(tx: &mut Tx<'_>, key: &KeyRecord) -> StoreResult<()> {
    let now = tx.now_ms();
    queries::remember_key!(tx.conn, key, now, [])
}

/// How many Fintoc keys of this caller key's series Fintoc has answered (0 if none).
pub(super) fn fintoc_keys_spent(conn: &mut SqliteConnection, key: &str) -> StoreResult<u64> {
    queries::fintoc_keys_spent!(conn, key, [])
}

/// Raises the count of answered Fintoc keys for `key` to `spent` (never lowers it).
pub(super) fn remember_fintoc_keys_spent(
    tx: &mut Tx<'_>,
    key: &str,
    spent: u64,
) -> StoreResult<()> {
    let now = tx.now_ms();
    queries::remember_fintoc_keys_spent!(tx.conn, key, spent, now, "max(spent, excluded.spent)", [])
}

/// The Links `from` covers (at most `limit`), each as it stands: read on one connection,
/// inside the caller's read transaction.
pub(super) fn snapshots(
    conn: &mut SqliteConnection,
    from: &LinksFrom,
    limit: i64,
) -> StoreResult<Vec<LinkSnapshot>> {
    queries::link_snapshots!(conn, from, limit, [])
}
