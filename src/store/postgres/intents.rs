//! Refresh intents on PostgreSQL: registering one (and claiming results that came before we
//! knew of it), writing answers and completions, timing out what never arrived, and reading
//! its state. What each of those means is decided in `store::decide`; this file only loads
//! and writes.

use diesel::prelude::*;
use diesel::sql_types::{Array, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::log::Appender;
use super::schema::{intent_accounts, refresh_intents, results};
use crate::clock::Millis;
use crate::domain::{IntentStatus, IntentView, NewIntent, RefreshType, ResultRow, ResultStatus};
use crate::store::decide::{self, Completion};
use crate::store::queries;
use crate::store::{DueIntent, StoreError, StoreResult};

/// Records an intent and its expected accounts (a no-op if it is already known), clears the
/// create mark `mark` (its holder) of its Link if that mark is still there, and claims
/// results logged for it before it was known. The caller then logs the events held for it.
pub(super) async fn register(
    conn: &mut AsyncPgConnection,
    new: &NewIntent,
    mark: Option<&str>,
    now_ms: Millis,
) -> StoreResult<()> {
    if let Some(holder) = mark {
        super::links::clear_creates(conn, Some(&(new.link_id.clone(), holder.to_owned()))).await?;
    }
    let inserted = queries::insert_intent!(&mut *conn, new, [.await])?;
    if inserted == 0 {
        return Ok(());
    }
    diesel::sql_query(
        "INSERT INTO intent_accounts (refresh_intent_id, account_id) \
         SELECT $1, a FROM unnest($2::text[]) AS a ON CONFLICT DO NOTHING",
    )
    .bind::<Text, _>(&new.id)
    .bind::<Array<Text>, _>(&new.accounts)
    .execute(conn)
    .await?;
    super::links::assign_accounts(conn, &new.link_id, &new.accounts).await?;
    claim_unsolicited(conn, new, now_ms).await?;
    Ok(())
}

/// Attributes results already logged without an intent to a newly registered one (an
/// intent adopted from Fintoc may have had results arrive before we knew of it): loads, per
/// expected account, the first unattributed result since `decide::claim_since`, and writes
/// what `decide::claims` makes of them.
async fn claim_unsolicited(
    conn: &mut AsyncPgConnection,
    new: &NewIntent,
    now_ms: Millis,
) -> StoreResult<()> {
    queries::claim_unsolicited!(conn, new, now_ms, [.await])
}

/// Marks `account_id` of `intent_id` answered by the result at `sequence`.
async fn answered(
    conn: &mut AsyncPgConnection,
    intent_id: &str,
    account_id: &str,
    sequence: i64,
) -> StoreResult<()> {
    queries::write_answer!(conn, intent_id, account_id, sequence, [.await])
}

/// Writes an intent's completion (`decide::Completion`); `sequence` is the result that
/// completed it.
async fn finish(
    conn: &mut AsyncPgConnection,
    intent_id: &str,
    done: Completion,
    sequence: i64,
) -> StoreResult<()> {
    queries::write_completion!(conn, intent_id, done, sequence, [.await])
}

/// Gives every account of a pending intent that is still missing a TIMED_OUT result (no
/// event id, its own sequence), which completes the intent (`decide::time_out`). `None` if
/// it was not pending.
pub(super) async fn complete_timed_out(
    conn: &mut AsyncPgConnection,
    log: &mut Appender,
    intent_id: &str,
    now_ms: Millis,
) -> StoreResult<Option<IntentView>> {
    let Some(intent) = get_intent(conn, intent_id).await? else {
        return Ok(None);
    };
    let Some(timed_out) = decide::time_out(&intent, now_ms)? else {
        return Ok(None);
    };
    for result in timed_out {
        let row = log.append(ResultRow {
            sequence: 0,
            account_id: result.account_id.clone(),
            link_id: intent.link_id.clone(),
            refresh_intent_id: intent_id.to_owned(),
            status: ResultStatus::TimedOut.as_str().to_owned(),
            new_movements: 0,
            public_error: String::new(),
            event_id: String::new(),
            occurred_at_ms: now_ms,
            committed_at_ms: now_ms,
            completes_intent: result.completes.is_some(),
            detail: crate::domain::Detail::Result,
            fetches_movements: false,
            trace_context: String::new(),
        });
        log.flush(conn).await?;
        answered(conn, intent_id, &result.account_id, row.sequence).await?;
        if let Some(done) = result.completes {
            finish(conn, intent_id, done, row.sequence).await?;
        }
    }
    get_intent(conn, intent_id).await
}

/// The Link's pending intent, if any (the newest, should there be several).
pub(super) async fn pending_intent(
    conn: &mut AsyncPgConnection,
    link_id: &str,
) -> StoreResult<Option<IntentView>> {
    match queries::pending_intent_id!(conn, link_id, [.await])? {
        Some(id) => get_intent(conn, &id).await,
        None => Ok(None),
    }
}

/// The most recently completed succeeded intent of this type: (id, completed at).
pub(super) async fn last_success(
    conn: &mut AsyncPgConnection,
    link_id: &str,
    refresh_type: RefreshType,
) -> StoreResult<Option<(String, Millis)>> {
    queries::last_success!(conn, link_id, refresh_type, [.await])
}

/// Pending intents created at or before `created_before_ms`, oldest first, with when each was
/// last reconciled.
pub(super) async fn pending_intents_due(
    conn: &mut AsyncPgConnection,
    created_before_ms: Millis,
) -> StoreResult<Vec<DueIntent>> {
    // Written as the partial index `refresh_intents_pending` is, so the prepared statement's
    // generic plan can use it (a bound value cannot match an index predicate).
    let is_pending =
        diesel::dsl::sql::<diesel::sql_types::Bool>("refresh_intents.status = 'pending'");
    queries::pending_intents_due!(conn, is_pending, created_before_ms, [.await])
}

/// Notes that the lost-webhook reconciliation ran for these intents.
pub(super) async fn mark_reconciled(
    conn: &mut AsyncPgConnection,
    ids: &[String],
    now_ms: Millis,
) -> StoreResult<()> {
    diesel::update(refresh_intents::table.filter(refresh_intents::id.eq_any(ids)))
        .set(refresh_intents::reconciled_at_ms.eq(now_ms))
        .execute(conn)
        .await?;
    Ok(())
}

/// The intent's current state, or `None` if it is unknown.
pub(super) async fn get_intent(
    conn: &mut AsyncPgConnection,
    id: &str,
) -> StoreResult<Option<IntentView>> {
    queries::get_intent!(conn, id, [.await])
}

/// The view of an intent that was just written (it must exist).
pub(super) async fn get_written(conn: &mut AsyncPgConnection, id: &str) -> StoreResult<IntentView> {
    get_intent(conn, id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("intent {id} vanished")))
}
