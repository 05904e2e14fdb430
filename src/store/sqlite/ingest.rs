//! Taking in one verified webhook body: dedupe on the event id, keep the body, and turn an
//! account result into a log entry attributed to the intent waiting for it (or held until
//! that intent is known, or logged as unsolicited). Runs inside a writer job, so the raw
//! event, the log entry and the intent's progress commit together or not at all.

use diesel::prelude::*;

use super::Tx;
use super::intents::{complete_if_done, rejected_now};
use super::log::append;
use super::models::{NewResult, NewWebhookEvent};
use super::schema::{accounts, intent_accounts, refresh_intents, webhook_events};
use crate::clock::Millis;
use crate::domain::ResultRow;
use crate::domain::correlate::{Candidate, Correlation, correlate};
use crate::fintoc::event::{AccountEvent, Decoded, decode};
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
        Decoded::Result(_) => RESULT,
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
        Decoded::Other { .. } => IngestOutcome::Ignored,
        Decoded::Unparseable { .. } => IngestOutcome::Unparseable,
    })
}

/// Correlates one account result and logs it; `None` when it must be held.
fn apply_result(
    tx: &mut Tx<'_>,
    event: &AccountEvent,
    received_at_ms: Millis,
) -> StoreResult<Option<ResultRow>> {
    // get_result, not first(): a bound LIMIT made SQLite re-prepare this on every event.
    let link_id: Option<String> = accounts::table
        .find(&event.account_id)
        .select(accounts::link_id)
        .get_result(tx.conn)
        .optional()?;
    // An account still waiting means its intent is pending (completion and timeouts fill
    // every account), so no status filter: a bound status would also make SQLite re-prepare
    // the statement on every run (its value decides whether a partial index applies).
    let waiting: Vec<(String, Millis)> = intent_accounts::table
        .inner_join(refresh_intents::table)
        .filter(intent_accounts::account_id.eq(&event.account_id))
        .filter(intent_accounts::result_sequence.is_null())
        .select((refresh_intents::id, refresh_intents::created_at_ms))
        .load(tx.conn)?;
    let candidates: Vec<Candidate<'_>> = waiting
        .iter()
        .map(|(id, at)| Candidate {
            intent_id: id,
            created_at_ms: *at,
        })
        .collect();
    let creating = link_id.as_ref().is_some_and(|l| {
        tx.in_flight()
            .lock()
            .expect("in-flight lock")
            .contains_key(l)
    });
    let occurred_at_ms = event.occurred_at_ms.unwrap_or(received_at_ms);
    let intent_id = match correlate(occurred_at_ms, &candidates, creating) {
        Correlation::Hold => return Ok(None),
        Correlation::Matched(id) => id,
        Correlation::Unsolicited => "",
    };
    let link_id = link_id.as_deref().unwrap_or("");
    if event.status == crate::domain::ResultStatus::Rejected && !link_id.is_empty() {
        rejected_now(tx, link_id, received_at_ms)?;
    }
    let mut new = NewResult {
        account_id: &event.account_id,
        link_id,
        refresh_intent_id: intent_id,
        status: event.status.as_str(),
        new_movements: i64::from(event.new_movements),
        public_error: &event.public_error,
        event_id: &event.event_id,
        occurred_at_ms,
        committed_at_ms: tx.now_ms(),
        completes_intent: false,
    };
    if intent_id.is_empty() {
        return Ok(Some(append(tx, &new)?));
    }
    let intent_id = intent_id.to_owned();
    let row = complete_if_done(
        tx,
        &intent_id,
        &event.account_id,
        event.status,
        |tx, completes| {
            new.completes_intent = completes;
            append(tx, &new)
        },
    )?;
    Ok(Some(row))
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
