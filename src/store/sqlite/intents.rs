//! Refresh intents: registering one (and matching the events held for it), tracking each
//! expected account's result, completing it with the final status, timing out what never
//! arrived, and reading its current state.

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;

use super::Tx;
use super::log::append;
use super::models::{NewResult, ResultRecord};
use super::schema::{accounts, intent_accounts, links, refresh_intents, results};
use crate::clock::Millis;
use crate::domain::status::intent_status;
use crate::domain::{IntentStatus, IntentView, NewIntent, ResultRow, ResultStatus};
use crate::store::view;
use crate::store::{DueIntent, StoreError, StoreResult};

/// Records an intent and its expected accounts (a no-op if it is already known). The caller
/// has cleared its create mark, and then logs the events held for it.
pub(super) fn register_intent(tx: &mut Tx<'_>, new: &NewIntent) -> StoreResult<()> {
    let inserted = diesel::insert_or_ignore_into(refresh_intents::table)
        .values((
            refresh_intents::id.eq(&new.id),
            refresh_intents::link_id.eq(&new.link_id),
            refresh_intents::refresh_type.eq(new.refresh_type.as_str()),
            refresh_intents::status.eq(IntentStatus::Pending.as_str()),
            refresh_intents::mfa_widget_token.eq(&new.mfa_widget_token),
            refresh_intents::created_at_ms.eq(new.created_at_ms),
        ))
        .execute(tx.conn)?;
    if inserted == 1 {
        for account in &new.accounts {
            diesel::insert_or_ignore_into(intent_accounts::table)
                .values((
                    intent_accounts::refresh_intent_id.eq(&new.id),
                    intent_accounts::account_id.eq(account),
                ))
                .execute(tx.conn)?;
            diesel::replace_into(accounts::table)
                .values((
                    accounts::account_id.eq(account),
                    accounts::link_id.eq(&new.link_id),
                ))
                .execute(tx.conn)?;
        }
        claim_unsolicited(tx, new)?;
    }
    Ok(())
}

/// Attributes results already logged without an intent to a newly registered one: an intent
/// adopted from Fintoc (created elsewhere) may have had results arrive before we knew of it.
/// Per expected account, the first unattributed result produced after the intent was created
/// is its answer.
fn claim_unsolicited(tx: &mut Tx<'_>, new: &NewIntent) -> StoreResult<()> {
    let since = new.created_at_ms - crate::domain::correlate::CLOCK_SLACK_MS;
    let mut last = None;
    for account in &new.accounts {
        let found: Option<(i64, String)> = results::table
            .filter(results::account_id.eq(account))
            .filter(results::refresh_intent_id.eq(""))
            .filter(results::occurred_at_ms.ge(since))
            .order(results::sequence.asc())
            .select((results::sequence, results::status))
            .first(tx.conn)
            .optional()?;
        let Some((sequence, status)) = found else {
            continue;
        };
        ResultStatus::parse(&status)?;
        diesel::update(results::table.find(sequence))
            .set(results::refresh_intent_id.eq(&new.id))
            .execute(tx.conn)?;
        diesel::update(intent_accounts::table.find((&new.id, account)))
            .set(intent_accounts::result_sequence.eq(sequence))
            .execute(tx.conn)?;
        last = last.max(Some(sequence));
    }
    let Some(last) = last else { return Ok(()) };
    let intent = get_intent(tx.conn, &new.id)?
        .ok_or_else(|| StoreError::Corrupt("intent vanished".into()))?;
    let mut statuses = Vec::with_capacity(intent.accounts.len());
    for a in &intent.accounts {
        statuses.push(match &a.result {
            Some(row) => Some(row.status()?),
            None => None,
        });
    }
    let status = intent_status(statuses);
    if status.is_final() {
        diesel::update(results::table.find(last))
            .set(results::completes_intent.eq(true))
            .execute(tx.conn)?;
        finish(tx, &new.id, status, last)?;
    }
    Ok(())
}

/// Inserts one account's result for `intent_id` through `insert` (told whether it completes
/// the intent), marks the account answered, and completes the intent when it was the last.
pub(super) fn complete_if_done(
    tx: &mut Tx<'_>,
    intent_id: &str,
    account_id: &str,
    status: ResultStatus,
    insert: impl FnOnce(&mut Tx<'_>, bool) -> StoreResult<ResultRow>,
) -> StoreResult<ResultRow> {
    let expected: Vec<(String, Option<i64>)> = intent_accounts::table
        .filter(intent_accounts::refresh_intent_id.eq(intent_id))
        .select((
            intent_accounts::account_id,
            intent_accounts::result_sequence,
        ))
        .load(tx.conn)?;
    let answered: Vec<i64> = expected.iter().filter_map(|(_, seq)| *seq).collect();
    let answered_statuses: Vec<String> = results::table
        .filter(results::sequence.eq_any(&answered))
        .select(results::status)
        .load(tx.conn)?;
    let mut statuses = Vec::with_capacity(expected.len());
    for s in &answered_statuses {
        statuses.push(Some(ResultStatus::parse(s)?));
    }
    for (account, seq) in &expected {
        if seq.is_none() {
            statuses.push((account == account_id).then_some(status));
        }
    }
    let final_status = intent_status(statuses);
    let row = insert(tx, final_status.is_final())?;
    diesel::update(intent_accounts::table.find((intent_id, account_id)))
        .set(intent_accounts::result_sequence.eq(row.sequence))
        .execute(tx.conn)?;
    if final_status.is_final() {
        finish(tx, intent_id, final_status, row.sequence)?;
    }
    Ok(row)
}

/// Completes an intent with its final status; `sequence` is the result that completed it.
///
/// It completed when Fintoc produced its last result, not when that result reached us: the
/// completion time is the latest `occurred_at` of its results (the events' `created_at`;
/// a TIMED_OUT result's is the moment it was given). A result that comes late (a retried
/// webhook, one recovered by reconciliation) so starts no longer cooldown than Fintoc's own.
/// Never later than now, should an event claim a time ahead of our clock.
fn finish(
    tx: &mut Tx<'_>,
    intent_id: &str,
    status: IntentStatus,
    sequence: i64,
) -> StoreResult<()> {
    let answers = intent_accounts::table
        .filter(intent_accounts::refresh_intent_id.eq(intent_id))
        .filter(intent_accounts::result_sequence.is_not_null())
        .select(intent_accounts::result_sequence.assume_not_null());
    let last_occurred: Option<Millis> = results::table
        .filter(results::sequence.eq_any(answers))
        .select(diesel::dsl::max(results::occurred_at_ms))
        .get_result(tx.conn)?;
    let now = tx.now_ms();
    let completed_at = last_occurred.map_or(now, |at| at.min(now));
    diesel::update(refresh_intents::table.find(intent_id))
        .set((
            refresh_intents::status.eq(status.as_str()),
            refresh_intents::completed_at_ms.eq(completed_at),
            refresh_intents::completed_sequence.eq(sequence),
        ))
        .execute(tx.conn)?;
    Ok(())
}

/// Starts the rejected-credentials hold for a Link.
pub(super) fn rejected_now(tx: &mut Tx<'_>, link_id: &str, at_ms: Millis) -> StoreResult<()> {
    diesel::update(links::table.find(link_id))
        .set(links::rejected_at_ms.eq(at_ms))
        .execute(tx.conn)?;
    Ok(())
}

/// Gives every account of a pending intent that is still missing a TIMED_OUT result (no
/// event id, its own sequence), which completes the intent. `None` if it was not pending.
pub(super) fn complete_timed_out(
    tx: &mut Tx<'_>,
    intent_id: &str,
) -> StoreResult<Option<IntentView>> {
    let Some(intent) = get_intent(tx.conn, intent_id)? else {
        return Ok(None);
    };
    if intent.status.is_final() {
        return Ok(None);
    }
    let now = tx.now_ms();
    for account in intent.accounts.iter().filter(|a| a.result.is_none()) {
        let id = account.account_id.as_str();
        complete_if_done(
            tx,
            intent_id,
            id,
            ResultStatus::TimedOut,
            |tx, completes| {
                append(
                    tx,
                    &NewResult {
                        account_id: id,
                        link_id: &intent.link_id,
                        refresh_intent_id: intent_id,
                        status: ResultStatus::TimedOut.as_str(),
                        new_movements: 0,
                        public_error: "",
                        event_id: "",
                        occurred_at_ms: now,
                        committed_at_ms: now,
                        completes_intent: completes,
                    },
                )
            },
        )?;
    }
    get_intent(tx.conn, intent_id)
}

/// Pending intents created at or before `created_before_ms`, oldest first, with when each was
/// last reconciled.
pub(super) fn pending_intents_due(
    conn: &mut SqliteConnection,
    created_before_ms: Millis,
) -> StoreResult<Vec<DueIntent>> {
    let due: Vec<(String, Millis, Option<Millis>)> = refresh_intents::table
        .filter(refresh_intents::status.eq(IntentStatus::Pending.as_str()))
        .filter(refresh_intents::created_at_ms.le(created_before_ms))
        .order(refresh_intents::created_at_ms.asc())
        .select((
            refresh_intents::id,
            refresh_intents::created_at_ms,
            refresh_intents::reconciled_at_ms,
        ))
        .load(conn)?;
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
pub(super) fn mark_reconciled(tx: &mut Tx<'_>, ids: &[String]) -> StoreResult<()> {
    let now = tx.now_ms();
    diesel::update(refresh_intents::table.filter(refresh_intents::id.eq_any(ids)))
        .set(refresh_intents::reconciled_at_ms.eq(now))
        .execute(tx.conn)?;
    Ok(())
}

/// The intent's current state, or `None` if it is unknown.
pub(super) fn get_intent(conn: &mut SqliteConnection, id: &str) -> StoreResult<Option<IntentView>> {
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
        .load(conn)?;
    let answered = view::answered(&expected);
    let results: Vec<ResultRow> = results::table
        .filter(results::sequence.eq_any(&answered))
        .select(ResultRecord::as_select())
        .load(conn)?
        .into_iter()
        .map(ResultRow::from)
        .collect();
    Ok(Some(view::intent_view(row, expected, results)?))
}
