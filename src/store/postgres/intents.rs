//! Refresh intents on PostgreSQL: registering one (and claiming results that came before we
//! knew of it), completing it, timing out what never arrived, and reading its state.

use diesel::prelude::*;
use diesel::sql_types::{Array, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::log::Appender;
use super::models::ResultRecord;
use super::schema::{intent_accounts, refresh_intents, results};
use crate::clock::Millis;
use crate::domain::correlate::CLOCK_SLACK_MS;
use crate::domain::status::intent_status;
use crate::domain::{IntentStatus, IntentView, NewIntent, RefreshType, ResultRow, ResultStatus};
use crate::store::plan::{Context, Progress};
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

/// Attributes results already logged without an intent to a newly registered one: an intent
/// adopted from Fintoc (created elsewhere) may have had results arrive before we knew of it.
/// Per expected account, the first unattributed result produced after the intent was created
/// is its answer.
async fn claim_unsolicited(
    conn: &mut AsyncPgConnection,
    new: &NewIntent,
    now_ms: Millis,
) -> StoreResult<()> {
    let since = new.created_at_ms - CLOCK_SLACK_MS;
    let mut statuses = Vec::with_capacity(new.accounts.len());
    let mut last = None;
    for account in &new.accounts {
        let found: Option<(i64, String)> = results::table
            .filter(results::account_id.eq(account))
            .filter(results::refresh_intent_id.eq(""))
            .filter(results::occurred_at_ms.ge(since))
            .order(results::sequence.asc())
            .select((results::sequence, results::status))
            .first(conn)
            .await
            .optional()?;
        let Some((sequence, status)) = found else {
            statuses.push(None);
            continue;
        };
        statuses.push(Some(ResultStatus::parse(&status)?));
        diesel::update(results::table.find(sequence))
            .set(results::refresh_intent_id.eq(&new.id))
            .execute(conn)
            .await?;
        diesel::update(intent_accounts::table.find((&new.id, account)))
            .set(intent_accounts::result_sequence.eq(sequence))
            .execute(conn)
            .await?;
        last = last.max(Some(sequence));
    }
    let status = intent_status(statuses);
    // The newest claimed result completes it, so its watchers see every other one first.
    if let Some(last) = last
        && status.is_final()
    {
        diesel::update(results::table.find(last))
            .set(results::completes_intent.eq(true))
            .execute(conn)
            .await?;
        finish(conn, &new.id, status.as_str(), last, now_ms).await?;
    }
    Ok(())
}

/// Gives an intent its final status, completed by the result at `sequence`. It completed
/// when Fintoc produced its last result (the latest `occurred_at` of its results), not when
/// that reached us, so a late result starts no longer cooldown than Fintoc's own; never
/// later than now.
pub(super) async fn finish(
    conn: &mut AsyncPgConnection,
    intent_id: &str,
    status: &str,
    sequence: i64,
    now_ms: Millis,
) -> StoreResult<()> {
    let answers = intent_accounts::table
        .filter(intent_accounts::refresh_intent_id.eq(intent_id))
        .filter(intent_accounts::result_sequence.is_not_null())
        .select(intent_accounts::result_sequence.assume_not_null());
    let last_occurred: Option<Millis> = results::table
        .filter(results::sequence.eq_any(answers))
        .select(diesel::dsl::max(results::occurred_at_ms))
        .get_result(conn)
        .await?;
    let completed_at = last_occurred.map_or(now_ms, |at| at.min(now_ms));
    diesel::update(refresh_intents::table.find(intent_id))
        .set((
            refresh_intents::status.eq(status),
            refresh_intents::completed_at_ms.eq(completed_at),
            refresh_intents::completed_sequence.eq(sequence),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Gives every account of a pending intent that is still missing a TIMED_OUT result (no
/// event id, its own sequence), which completes the intent. `None` if it was not pending.
pub(super) async fn complete_timed_out(
    conn: &mut AsyncPgConnection,
    log: &mut Appender,
    intent_id: &str,
    now_ms: Millis,
) -> StoreResult<Option<IntentView>> {
    let Some(intent) = get_intent(conn, intent_id).await? else {
        return Ok(None);
    };
    if intent.status.is_final() {
        return Ok(None);
    }
    let mut ctx = Context::default();
    ctx.pending.insert(
        intent.id.clone(),
        Progress {
            created_at_ms: intent.created_at_ms,
            latest_result_ms: None,
            expected: intent
                .accounts
                .iter()
                .map(|a| {
                    let status = a.result.as_ref().map(ResultRow::status).transpose();
                    status.map(|s| (a.account_id.clone(), s))
                })
                .collect::<Result<_, _>>()?,
        },
    );
    for account in intent.accounts.iter().filter(|a| a.result.is_none()) {
        let completes = ctx.answer(
            intent_id,
            &account.account_id,
            ResultStatus::TimedOut,
            now_ms,
        );
        let row = log.append(ResultRow {
            sequence: 0,
            account_id: account.account_id.clone(),
            link_id: intent.link_id.clone(),
            refresh_intent_id: intent_id.to_owned(),
            status: ResultStatus::TimedOut.as_str().to_owned(),
            new_movements: 0,
            public_error: String::new(),
            event_id: String::new(),
            occurred_at_ms: now_ms,
            committed_at_ms: now_ms,
            completes_intent: completes.is_some(),
        });
        log.flush(conn).await?;
        diesel::update(intent_accounts::table.find((intent_id, &account.account_id)))
            .set(intent_accounts::result_sequence.eq(row.sequence))
            .execute(conn)
            .await?;
        if let Some((status, _)) = completes {
            finish(conn, intent_id, status.as_str(), row.sequence, now_ms).await?;
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
