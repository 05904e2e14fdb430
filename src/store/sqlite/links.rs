//! What RequestRefresh needs to answer locally: Links known by their token's hash, the
//! pending intent of a Link, the last success (cooldown), the rejected hold, idempotency
//! keys, and how many Fintoc keys each caller key has spent.

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;

use super::Tx;
use super::intents::get_intent;
use super::schema::{accounts, fintoc_key_series, idempotency_keys, links, refresh_intents};
use crate::clock::Millis;
use crate::domain::{IntentStatus, IntentView, RefreshType};
use crate::store::{IdempotencyRecord, KeyRecord, KnownLink, StoreResult};

pub(super) fn link_by_token(
    conn: &mut SqliteConnection,
    token_sha256: &str,
) -> StoreResult<Option<KnownLink>> {
    Ok(links::table
        .filter(links::token_sha256.eq(token_sha256))
        .order(links::resolved_at_ms.desc())
        .select((links::link_id, links::rejected_at_ms))
        .first::<(String, Option<Millis>)>(conn)
        .optional()?
        .map(|(link_id, rejected_at_ms)| KnownLink {
            link_id,
            rejected_at_ms,
        }))
}

pub(super) fn link_by_id(
    conn: &mut SqliteConnection,
    link_id: &str,
) -> StoreResult<Option<KnownLink>> {
    Ok(links::table
        .find(link_id)
        .select(links::rejected_at_ms)
        .first::<Option<Millis>>(conn)
        .optional()?
        .map(|rejected_at_ms| KnownLink {
            link_id: link_id.to_owned(),
            rejected_at_ms,
        }))
}

/// Records a Link resolved through Fintoc, with its current accounts.
pub(super) fn upsert_link(
    tx: &mut Tx<'_>,
    link_id: &str,
    token_sha256: &str,
    account_ids: &[String],
) -> StoreResult<()> {
    let now = tx.now_ms();
    diesel::insert_into(links::table)
        .values((
            links::link_id.eq(link_id),
            links::token_sha256.eq(token_sha256),
            links::resolved_at_ms.eq(now),
        ))
        .on_conflict(links::link_id)
        .do_update()
        .set((
            links::token_sha256.eq(token_sha256),
            links::resolved_at_ms.eq(now),
        ))
        .execute(tx.conn)?;
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
    let id: Option<String> = refresh_intents::table
        .filter(refresh_intents::link_id.eq(link_id))
        .filter(refresh_intents::status.eq(IntentStatus::Pending.as_str()))
        .order(refresh_intents::created_at_ms.desc())
        .select(refresh_intents::id)
        .first(conn)
        .optional()?;
    match id {
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
    Ok(refresh_intents::table
        .filter(refresh_intents::link_id.eq(link_id))
        .filter(refresh_intents::refresh_type.eq(refresh_type.as_str()))
        .filter(refresh_intents::status.eq(IntentStatus::Succeeded.as_str()))
        .filter(refresh_intents::completed_at_ms.is_not_null())
        .order(refresh_intents::completed_at_ms.desc())
        .select((
            refresh_intents::id,
            refresh_intents::completed_at_ms.assume_not_null(),
        ))
        .first(conn)
        .optional()?)
}

pub(super) fn idempotency(
    conn: &mut SqliteConnection,
    key: &str,
) -> StoreResult<Option<IdempotencyRecord>> {
    let found: Option<(String, String, String, bool, Millis)> = idempotency_keys::table
        .find(key)
        .select((
            idempotency_keys::token_sha256,
            idempotency_keys::refresh_type,
            idempotency_keys::refresh_intent_id,
            idempotency_keys::joined_existing,
            idempotency_keys::created_at_ms,
        ))
        .first(conn)
        .optional()?;
    Ok(found.map(
        |(token_sha256, refresh_type, refresh_intent_id, joined_existing, created_at_ms)| {
            IdempotencyRecord {
                token_sha256,
                refresh_type,
                refresh_intent_id,
                joined_existing,
                created_at_ms,
            }
        },
    ))
}

/// Remembers the first answer given for `key` (a later call with the same key keeps it).
pub(super) fn remember_key(tx: &mut Tx<'_>, key: &KeyRecord) -> StoreResult<()> {
    let now = tx.now_ms();
    diesel::insert_or_ignore_into(idempotency_keys::table)
        .values((
            idempotency_keys::idempotency_key.eq(&key.key),
            idempotency_keys::token_sha256.eq(&key.token_sha256),
            idempotency_keys::refresh_type.eq(key.refresh_type.as_str()),
            idempotency_keys::refresh_intent_id.eq(&key.refresh_intent_id),
            idempotency_keys::joined_existing.eq(key.joined_existing),
            idempotency_keys::created_at_ms.eq(now),
        ))
        .execute(tx.conn)?;
    Ok(())
}

/// How many Fintoc keys of this caller key's series Fintoc has answered (0 if none).
pub(super) fn fintoc_keys_spent(conn: &mut SqliteConnection, key: &str) -> StoreResult<u64> {
    let spent: Option<i64> = fintoc_key_series::table
        .find(key)
        .select(fintoc_key_series::spent)
        .first(conn)
        .optional()?;
    Ok(spent.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
}

/// Raises the count of answered Fintoc keys for `key` to `spent` (never lowers it).
pub(super) fn remember_fintoc_keys_spent(
    tx: &mut Tx<'_>,
    key: &str,
    spent: u64,
) -> StoreResult<()> {
    let now = tx.now_ms();
    let spent = i64::try_from(spent).unwrap_or(i64::MAX);
    diesel::insert_into(fintoc_key_series::table)
        .values((
            fintoc_key_series::idempotency_key.eq(key),
            fintoc_key_series::spent.eq(spent),
            fintoc_key_series::updated_at_ms.eq(now),
        ))
        .on_conflict(fintoc_key_series::idempotency_key)
        .do_update()
        .set((
            fintoc_key_series::spent.eq(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "max(spent, excluded.spent)",
            )),
            fintoc_key_series::updated_at_ms.eq(now),
        ))
        .execute(tx.conn)?;
    Ok(())
}
