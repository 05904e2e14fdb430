//! What RequestRefresh needs to answer locally, on PostgreSQL: Links known by their token's
//! hash, the pending intent of a Link, the last success (cooldown), the rejected hold,
//! idempotency keys, and the marks of create calls in flight.

use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::{creates_in_flight, fintoc_key_series, idempotency_keys, links};
use super::statements::DB_NOW_MS;
use crate::clock::Millis;
use crate::store::queries;
use crate::store::{IdempotencyRecord, KeyRecord, KnownLink, StoreResult};

pub(super) async fn link_by_token(
    conn: &mut AsyncPgConnection,
    token_sha256: &str,
) -> StoreResult<Option<KnownLink>> {
    queries::link_by_token!(conn, token_sha256, [.await])
}

pub(super) async fn link_by_id(
    conn: &mut AsyncPgConnection,
    link_id: &str,
) -> StoreResult<Option<KnownLink>> {
    queries::link_by_id!(conn, link_id, [.await])
}

/// Records a Link resolved through Fintoc, with its current accounts.
pub(super) async fn upsert_link(
    conn: &mut AsyncPgConnection,
    link_id: &str,
    token_sha256: &str,
    account_ids: &[String],
    now_ms: Millis,
) -> StoreResult<()> {
    queries::upsert_link!(&mut *conn, link_id, token_sha256, now_ms, [.await])?;
    assign_accounts(conn, link_id, account_ids).await
}

/// Records that these accounts belong to `link_id` (an account may move between Links).
pub(super) async fn assign_accounts(
    conn: &mut AsyncPgConnection,
    link_id: &str,
    account_ids: &[String],
) -> StoreResult<()> {
    if account_ids.is_empty() {
        return Ok(());
    }
    diesel::sql_query(
        "INSERT INTO accounts (account_id, link_id) SELECT a, $2 FROM unnest($1::text[]) AS a \
         ON CONFLICT (account_id) DO UPDATE SET link_id = excluded.link_id",
    )
    .bind::<Array<Text>, _>(account_ids)
    .bind::<Text, _>(link_id)
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn idempotency(
    conn: &mut AsyncPgConnection,
    key: &str,
) -> StoreResult<Option<IdempotencyRecord>> {
    queries::idempotency_record!(conn, key, [.await])
}

/// Remembers the first answer given for a key (a later call with the same key keeps it).
pub(super) async fn remember_key(
    conn: &mut AsyncPgConnection,
    key: &KeyRecord,
    now_ms: Millis,
) -> StoreResult<()> {
    queries::remember_key!(conn, key, now_ms, [.await])
}

/// Marks a create call for `link_id` as in flight, by `holder` (the call's own id), for
/// `lease_ms` from now on the database's clock (or until the intent is registered or the
/// call abandoned, which remove the mark). A mark of another call for the Link is replaced.
pub(super) async fn mark_create(
    conn: &mut AsyncPgConnection,
    link_id: &str,
    holder: &str,
    lease_ms: Millis,
) -> StoreResult<()> {
    diesel::sql_query(format!(
        "INSERT INTO creates_in_flight (link_id, holder, expires_at_ms) \
         VALUES ($1, $2, {DB_NOW_MS} + $3) \
         ON CONFLICT (link_id) DO UPDATE \
         SET holder = excluded.holder, expires_at_ms = excluded.expires_at_ms"
    ))
    .bind::<Text, _>(link_id)
    .bind::<Text, _>(holder)
    .bind::<BigInt, _>(lease_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes one create call's mark, (Link, holder) — only if it is still that call's — or,
/// with `None`, every mark whose lease ran out on the database's clock (its replica died or
/// froze mid-call), so the events held for them can be settled.
pub(super) async fn clear_creates(
    conn: &mut AsyncPgConnection,
    mark: Option<&(String, String)>,
) -> StoreResult<usize> {
    let cleared = match mark {
        Some((link_id, holder)) => {
            diesel::delete(
                creates_in_flight::table
                    .filter(creates_in_flight::link_id.eq(link_id))
                    .filter(creates_in_flight::holder.eq(holder)),
            )
            .execute(conn)
            .await?
        }
        None => {
            diesel::sql_query(format!(
                "DELETE FROM creates_in_flight WHERE expires_at_ms <= {DB_NOW_MS}"
            ))
            .execute(conn)
            .await?
        }
    };
    Ok(cleared)
}

/// How many Fintoc keys derived from the caller's `key` Fintoc has answered (0 if unknown).
pub(super) async fn fintoc_keys_spent(conn: &mut AsyncPgConnection, key: &str) -> StoreResult<u64> {
    queries::fintoc_keys_spent!(conn, key, [.await])
}

/// Raises the count of answered Fintoc keys for `key` to `spent` (never lowers it, whichever
/// replica wrote last).
pub(super) async fn remember_fintoc_keys_spent(
    conn: &mut AsyncPgConnection,
    key: &str,
    spent: u64,
    now_ms: Millis,
) -> StoreResult<()> {
    queries::remember_fintoc_keys_spent!(
        conn,
        key,
        spent,
        now_ms,
        "GREATEST(fintoc_key_series.spent, excluded.spent)",
        [.await]
    )
}
