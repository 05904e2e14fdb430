//! Refresh intents on SQLite: registering one (and claiming results logged before it was
//! known), loading how far one has got, writing answers and completions, timing out what
//! never arrived, and reading its current state. What each of those means is decided in
//! `store::decide`; this file only loads and writes.

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;

use super::Tx;
use super::log::append;
use super::models::NewResult;
use super::schema::{accounts, intent_accounts, links, refresh_intents, results};
use crate::clock::Millis;
use crate::domain::{IntentStatus, IntentView, NewIntent, ResultRow, ResultStatus};
use crate::store::decide::{self, Completion, Progress};
use crate::store::queries;
use crate::store::view;
use crate::store::{DueIntent, StoreResult};

/// Records an intent and its expected accounts (a no-op if it is already known). The caller
/// has cleared its create mark, and then logs the events held for it.
pub(super) fn register_intent(tx: &mut Tx<'_>, new: &NewIntent) -> StoreResult<()> {
    let inserted = queries::insert_intent!(tx.conn, new, [])?;
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

/// Attributes results already logged without an intent to a newly registered one (an
/// intent adopted from Fintoc may have had results arrive before we knew of it): loads, per
/// expected account, the first unattributed result since `decide::claim_since`, and writes
/// what `decide::claims` makes of them.
fn claim_unsolicited(tx: &mut Tx<'_>, new: &NewIntent) -> StoreResult<()> {
    let now = tx.now_ms();
    queries::claim_unsolicited!(tx.conn, new, now, [])
}

/// How far a pending intent has got: each expected account's result status so far, and
/// when the latest of them was produced (what `decide` completes it by).
pub(super) fn progress(
    conn: &mut SqliteConnection,
    intent_id: &str,
    created_at_ms: Millis,
) -> StoreResult<Progress> {
    let expected: Vec<(String, Option<i64>)> = intent_accounts::table
        .filter(intent_accounts::refresh_intent_id.eq(intent_id))
        .select((
            intent_accounts::account_id,
            intent_accounts::result_sequence,
        ))
        .load(conn)?;
    let answered: Vec<(i64, String, Millis)> = results::table
        .filter(results::sequence.eq_any(view::answered(&expected)))
        .select((results::sequence, results::status, results::occurred_at_ms))
        .load(conn)?;
    let mut progress = Progress {
        created_at_ms,
        expected: Vec::with_capacity(expected.len()),
        latest_result_ms: answered.iter().map(|a| a.2).max(),
    };
    for (account, sequence) in expected {
        let status = match answered.iter().find(|a| Some(a.0) == sequence) {
            Some((_, status, _)) => Some(ResultStatus::parse(status)?),
            None => None,
        };
        progress.expected.push((account, status));
    }
    Ok(progress)
}

/// Marks `account_id` of `intent_id` answered by the result at `sequence`.
pub(super) fn answered(
    tx: &mut Tx<'_>,
    intent_id: &str,
    account_id: &str,
    sequence: i64,
) -> StoreResult<()> {
    queries::write_answer!(tx.conn, intent_id, account_id, sequence, [])
}

/// Writes an intent's completion (`decide::Completion`); `sequence` is the result that
/// completed it.
pub(super) fn finish(
    tx: &mut Tx<'_>,
    intent_id: &str,
    done: Completion,
    sequence: i64,
) -> StoreResult<()> {
    queries::write_completion!(tx.conn, intent_id, done, sequence, [])
}

/// Starts the rejected-credentials hold for a Link.
pub(super) fn rejected_now(tx: &mut Tx<'_>, link_id: &str, at_ms: Millis) -> StoreResult<()> {
    diesel::update(links::table.find(link_id))
        .set(links::rejected_at_ms.eq(at_ms))
        .execute(tx.conn)?;
    Ok(())
}

/// Gives every account of a pending intent that is still missing a TIMED_OUT result (no
/// event id, its own sequence), which completes the intent (`decide::time_out`). `None` if
/// it was not pending.
pub(super) fn complete_timed_out(
    tx: &mut Tx<'_>,
    intent_id: &str,
) -> StoreResult<Option<IntentView>> {
    let Some(intent) = get_intent(tx.conn, intent_id)? else {
        return Ok(None);
    };
    let now = tx.now_ms();
    let Some(timed_out) = decide::time_out(&intent, now)? else {
        return Ok(None);
    };
    for result in timed_out {
        let row = append(
            tx,
            &NewResult {
                account_id: &result.account_id,
                link_id: &intent.link_id,
                refresh_intent_id: intent_id,
                status: ResultStatus::TimedOut.as_str(),
                new_movements: 0,
                public_error: "",
                event_id: "",
                occurred_at_ms: now,
                committed_at_ms: now,
                completes_intent: result.completes.is_some(),
                detail: crate::domain::Detail::Result,
                stored_detail: String::new(),
                fetches_movements: false,
                trace_context: String::new(),
            },
        )?;
        answered(tx, intent_id, &result.account_id, row.sequence)?;
        if let Some(done) = result.completes {
            finish(tx, intent_id, done, row.sequence)?;
        }
    }
    get_intent(tx.conn, intent_id)
}

/// Pending intents created at or before `created_before_ms`, oldest first, with when each was
/// last reconciled.
pub(super) fn pending_intents_due(
    conn: &mut SqliteConnection,
    created_before_ms: Millis,
) -> StoreResult<Vec<DueIntent>> {
    let is_pending = refresh_intents::status.eq(IntentStatus::Pending.as_str());
    queries::pending_intents_due!(conn, is_pending, created_before_ms, [])
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
    queries::get_intent!(conn, id, [])
}
