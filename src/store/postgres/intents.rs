//! Refresh intents on PostgreSQL: registering one (and claiming results that came before we
//! knew of it), writing answers and completions, timing out what never arrived, and reading
//! its state. What each of those means is decided in `store::decide`; this file only loads
//! and writes.

use diesel::prelude::*;
use diesel::sql_types::{Array, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::log::Appender;
use super::models::ResultRecord;
use super::schema::{intent_accounts, refresh_intents, results};
use crate::clock::Millis;
use crate::domain::{IntentStatus, IntentView, NewIntent, RefreshType, ResultRow, ResultStatus};
use crate::store::decide::{self, Completion, Unclaimed};
use crate::store::view;
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
    let inserted = diesel::insert_into(refresh_intents::table)
        .values((
            refresh_intents::id.eq(&new.id),
            refresh_intents::link_id.eq(&new.link_id),
            refresh_intents::refresh_type.eq(new.refresh_type.as_str()),
            refresh_intents::status.eq(IntentStatus::Pending.as_str()),
            refresh_intents::mfa_widget_token.eq(&new.mfa_widget_token),
            refresh_intents::created_at_ms.eq(new.created_at_ms),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
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
    let since = decide::claim_since(new.created_at_ms);
    let mut found = Vec::new();
    for account in &new.accounts {
        let first: Option<(i64, String, Millis)> = results::table
            .filter(results::account_id.eq(account))
            .filter(results::refresh_intent_id.eq(""))
            .filter(results::occurred_at_ms.ge(since))
            .order(results::sequence.asc())
            .select((results::sequence, results::status, results::occurred_at_ms))
            .first(conn)
            .await
            .optional()?;
        if let Some((sequence, status, occurred_at_ms)) = first {
            found.push(Unclaimed {
                account_id: account.clone(),
                sequence,
                status: ResultStatus::parse(&status)?,
                occurred_at_ms,
            });
        }
    }
    let claims = decide::claims(&new.accounts, found, now_ms);
    for (account, sequence) in &claims.claimed {
        diesel::update(results::table.find(sequence))
            .set(results::refresh_intent_id.eq(&new.id))
            .execute(conn)
            .await?;
        answered(conn, &new.id, account, *sequence).await?;
    }
    if let Some((done, last)) = claims.completes {
        diesel::update(results::table.find(last))
            .set(results::completes_intent.eq(true))
            .execute(conn)
            .await?;
        finish(conn, &new.id, done, last).await?;
    }
    Ok(())
}

/// Marks `account_id` of `intent_id` answered by the result at `sequence`.
async fn answered(
    conn: &mut AsyncPgConnection,
    intent_id: &str,
    account_id: &str,
    sequence: i64,
) -> StoreResult<()> {
    diesel::update(intent_accounts::table.find((intent_id, account_id)))
        .set(intent_accounts::result_sequence.eq(sequence))
        .execute(conn)
        .await?;
    Ok(())
}

/// Writes an intent's completion (`decide::Completion`); `sequence` is the result that
/// completed it.
async fn finish(
    conn: &mut AsyncPgConnection,
    intent_id: &str,
    done: Completion,
    sequence: i64,
) -> StoreResult<()> {
    diesel::update(refresh_intents::table.find(intent_id))
        .set((
            refresh_intents::status.eq(done.status.as_str()),
            refresh_intents::completed_at_ms.eq(done.at_ms),
            refresh_intents::completed_sequence.eq(sequence),
        ))
        .execute(conn)
        .await?;
    Ok(())
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
    let id: Option<String> = refresh_intents::table
        .filter(refresh_intents::link_id.eq(link_id))
        .filter(refresh_intents::status.eq(IntentStatus::Pending.as_str()))
        .order(refresh_intents::created_at_ms.desc())
        .select(refresh_intents::id)
        .first(conn)
        .await
        .optional()?;
    match id {
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
        .await
        .optional()?)
}

/// Pending intents created at or before `created_before_ms`, oldest first, with when each was
/// last reconciled.
pub(super) async fn pending_intents_due(
    conn: &mut AsyncPgConnection,
    created_before_ms: Millis,
) -> StoreResult<Vec<DueIntent>> {
    // Written as the partial index `refresh_intents_pending` is, so the prepared statement's
    // generic plan can use it (a bound value cannot match an index predicate).
    let due: Vec<(String, Millis, Option<Millis>)> = refresh_intents::table
        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(
            "refresh_intents.status = 'pending'",
        ))
        .filter(refresh_intents::created_at_ms.le(created_before_ms))
        .order(refresh_intents::created_at_ms.asc())
        .select((
            refresh_intents::id,
            refresh_intents::created_at_ms,
            refresh_intents::reconciled_at_ms,
        ))
        .load(conn)
        .await?;
    Ok(due
        .into_iter()
        .map(|(id, created_at_ms, reconciled_at_ms)| DueIntent {
            id,
            created_at_ms,
            reconciled_at_ms,
        })
        .collect())
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
    let Some(row) = refresh_intents::table
        .find(id)
        .select((
            refresh_intents::id,
            refresh_intents::link_id,
            refresh_intents::refresh_type,
            refresh_intents::status,
            refresh_intents::mfa_widget_token,
            refresh_intents::created_at_ms,
            refresh_intents::completed_at_ms,
            refresh_intents::completed_sequence,
        ))
        .first(conn)
        .await
        .optional()?
    else {
        return Ok(None);
    };
    let expected: Vec<(String, Option<i64>)> = intent_accounts::table
        .filter(intent_accounts::refresh_intent_id.eq(id))
        .order(intent_accounts::account_id.asc())
        .select((
            intent_accounts::account_id,
            intent_accounts::result_sequence,
        ))
        .load(conn)
        .await?;
    let answered = view::answered(&expected);
    let results: Vec<ResultRow> = results::table
        .filter(results::sequence.eq_any(&answered))
        .select(ResultRecord::as_select())
        .load(conn)
        .await?
        .into_iter()
        .map(ResultRow::from)
        .collect();
    Ok(Some(view::intent_view(row, expected, results)?))
}

/// The view of an intent that was just written (it must exist).
pub(super) async fn get_written(conn: &mut AsyncPgConnection, id: &str) -> StoreResult<IntentView> {
    get_intent(conn, id)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("intent {id} vanished")))
}
