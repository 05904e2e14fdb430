//! Taking in one verified webhook body: dedupe on the event id, keep the body, and turn an
//! account result into a log entry attributed to the intent waiting for it (or held until
//! that intent is known, or logged as unsolicited), as `store::decide` rules. Runs inside a writer job, so the raw
//! event, the log entry and the intent's progress commit together or not at all.

use std::sync::Arc;

use diesel::prelude::*;

use super::Tx;
use super::intents::{answered, finish, progress, rejected_now};
use super::log::append;
use super::models::{NewResult, NewWebhookEvent};
use super::movements::{Owner, append_entry, insert_fetch_job, token_kept};
use super::schema::{accounts, intent_accounts, refresh_intents, webhook_events};
use crate::clock::Millis;
use crate::domain::{Detail, ResultRow};
use crate::fintoc::event::{AccountEvent, Decoded, decode};
use crate::store::decide::movements::Follow;
use crate::store::decide::{Context, Plan};
use crate::store::{IngestOutcome, StoreResult};

const RESULT: &str = "result";
const HELD: &str = "held";

/// Stores one signed body and applies it. `received_at_ms` is the arrival time.
pub(super) fn ingest_event(
    tx: &mut Tx<'_>,
    body: &[u8],
    decoded: &Decoded,
    received_at_ms: Millis,
) -> StoreResult<IngestOutcome> {
    let hashed;
    let key = match decoded.event_id() {
        Some(id) => id,
        None => {
            // No readable id: the body itself is the identity, so a retried delivery of the
            // same bytes is still recognized.
            hashed = format!("sha256:{}", crate::secret::sha256_bytes_hex(body));
            &hashed
        }
    };
    let disposition = match decoded {
        Decoded::Result(_) | Decoded::Movements(_) => RESULT,
        Decoded::Other { .. } => "ignored",
        Decoded::Unparseable { .. } => "unparseable",
    };
    let new = NewWebhookEvent {
        event_key: key,
        event_type: decoded.event_type(),
        disposition,
        received_at_ms,
        body,
    };
    let inserted = super::statements::InsertEvent(&new).execute(tx.conn)?;
    if inserted == 0 {
        return Ok(IngestOutcome::Duplicate);
    }
    Ok(match decoded {
        Decoded::Result(event) => match apply_result(tx, event, received_at_ms)? {
            Some(row) => IngestOutcome::Logged(row.sequence),
            None => {
                diesel::update(webhook_events::table.filter(webhook_events::event_key.eq(key)))
                    .set(webhook_events::disposition.eq(HELD))
                    .execute(tx.conn)?;
                IngestOutcome::Held
            }
        },
        Decoded::Movements(event) => match super::movements::apply_event(tx, event)? {
            Some(sequence) => IngestOutcome::Logged(sequence),
            None => IngestOutcome::Ignored,
        },
        Decoded::Other { .. } => IngestOutcome::Ignored,
        Decoded::Unparseable { .. } => IngestOutcome::Unparseable,
    })
}

/// Decides one account result (`store::decide`) and writes the plan; `None` when it must be
/// held.
fn apply_result(
    tx: &mut Tx<'_>,
    event: &AccountEvent,
    received_at_ms: Millis,
) -> StoreResult<Option<ResultRow>> {
    let mut ctx = load_context(tx, &event.account_id)?;
    let Plan::Log(entry) = ctx.plan(event, received_at_ms) else {
        return Ok(None);
    };
    if entry.rejects_link {
        rejected_now(tx, &entry.link_id, received_at_ms)?;
    }
    let fetches = entry.follow == Follow::Fetch;
    let row = append(
        tx,
        &NewResult {
            account_id: &event.account_id,
            link_id: &entry.link_id,
            refresh_intent_id: &entry.intent_id,
            status: event.status.as_str(),
            new_movements: i64::from(event.new_movements),
            public_error: &event.public_error,
            event_id: &event.event_id,
            occurred_at_ms: entry.occurred_at_ms,
            committed_at_ms: ctx.now_ms,
            completes_intent: entry.completes.is_some(),
            detail: Detail::Result,
            stored_detail: String::new(),
            fetches_movements: fetches,
            trace_context: crate::telemetry::traceparent_of(&event.event_id),
        },
    )?;
    match entry.follow {
        Follow::Nothing => {}
        Follow::Fetch => insert_fetch_job(tx, &row)?,
        Follow::Unavailable(unavailable) => {
            let owner = Owner {
                account_id: &event.account_id,
                link_id: &entry.link_id,
                intent_id: &entry.intent_id,
                event_id: &event.event_id,
            };
            append_entry(tx, &owner, Detail::Unavailable(Arc::new(unavailable)))?;
        }
    }
    if !entry.intent_id.is_empty() {
        answered(tx, &entry.intent_id, &event.account_id, row.sequence)?;
    }
    if let Some(done) = entry.completes {
        finish(tx, &entry.intent_id, done, row.sequence)?;
    }
    Ok(Some(row))
}

/// What a result for `account_id` is decided against: its Link, whether a create for that
/// Link is in flight, and the pending intents still waiting for it.
fn load_context(tx: &mut Tx<'_>, account_id: &str) -> StoreResult<Context> {
    let mut ctx = Context::new(tx.now_ms());
    // get_result, not first(): a bound LIMIT made SQLite re-prepare this on every event.
    let link_id: Option<String> = accounts::table
        .find(account_id)
        .select(accounts::link_id)
        .get_result(tx.conn)
        .optional()?;
    // An account still waiting means its intent is pending (completion and timeouts fill
    // every account), so no status filter: a bound status would also make SQLite re-prepare
    // the statement on every run (its value decides whether a partial index applies).
    let waiting: Vec<(String, Millis)> = intent_accounts::table
        .inner_join(refresh_intents::table)
        .filter(intent_accounts::account_id.eq(account_id))
        .filter(intent_accounts::result_sequence.is_null())
        .select((refresh_intents::id, refresh_intents::created_at_ms))
        .load(tx.conn)?;
    for (intent_id, created_at_ms) in waiting {
        let progress = progress(tx.conn, &intent_id, created_at_ms)?;
        ctx.pending.insert(intent_id, progress);
    }
    ctx.movements = tx.movements();
    if let Some(link_id) = link_id {
        if ctx.movements && token_kept(tx.conn, &link_id)? {
            ctx.kept.insert(link_id.clone());
        }
        let marks = tx.in_flight().lock().expect("in-flight lock");
        if marks.contains_key(&link_id) {
            ctx.creating.insert(link_id.clone());
        }
        drop(marks);
        ctx.link_of.insert(account_id.to_owned(), link_id);
    }
    Ok(ctx)
}

/// Re-examines held events (oldest first): those whose Link no longer has a create in
/// flight are logged, attributed to the intent now known or as unsolicited.
pub(super) fn process_held(tx: &mut Tx<'_>) -> StoreResult<usize> {
    let held: Vec<(i64, Vec<u8>, Millis)> = webhook_events::table
        .filter(webhook_events::disposition.eq(HELD))
        .order(webhook_events::id.asc())
        .select((
            webhook_events::id,
            webhook_events::body,
            webhook_events::received_at_ms,
        ))
        .load(tx.conn)?;
    let mut logged = 0;
    for (id, body, received_at_ms) in held {
        let Decoded::Result(event) = decode(&body) else {
            continue;
        };
        if apply_result(tx, &event, received_at_ms)?.is_some() {
            diesel::update(webhook_events::table.find(id))
                .set(webhook_events::disposition.eq(RESULT))
                .execute(tx.conn)?;
            logged += 1;
        }
    }
    Ok(logged)
}
