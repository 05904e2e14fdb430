//! Taking in a batch of verified webhook bodies inside one writer transaction, set-based: one
//! statement stores (and dedupes) every raw body, a few read what the batch's results are
//! decided against, the pure planner (`store::plan`) decides each result in arrival order,
//! and a few statements write the outcome. A round trip to PostgreSQL costs more than the
//! work itself, so the number of statements is what matters, not the number of events.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bytea, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::log::Appender;
use super::schema::{creates_in_flight, links, webhook_events};
use crate::clock::Millis;
use crate::domain::{ResultRow, ResultStatus};
use crate::fintoc::event::{AccountEvent, Decoded, decode};
use crate::store::plan::{Context, Plan, Progress};
use crate::store::{IngestOutcome, StoreError, StoreResult};

const RESULT: &str = "result";
const HELD: &str = "held";

#[derive(QueryableByName)]
struct Key {
    #[diesel(sql_type = Text)]
    event_key: String,
}

/// Stores each body once and applies the new account results. One outcome per body, in
/// order; a body repeated within the batch is a duplicate of its first copy.
pub(super) async fn ingest(
    conn: &mut AsyncPgConnection,
    log: &mut Appender,
    events: &[(Bytes, Decoded)],
    received_at_ms: &[Millis],
    now_ms: Millis,
) -> StoreResult<Vec<IngestOutcome>> {
    let keys: Vec<String> = events
        .iter()
        .map(|(body, decoded)| match decoded.event_id() {
            Some(id) => id.to_owned(),
            // No readable id: the body itself is the identity, so a retried delivery of the
            // same bytes is still recognized.
            None => format!("sha256:{}", crate::secret::sha256_bytes_hex(body)),
        })
        .collect();
    let mut seen = HashSet::new();
    let first: Vec<bool> = keys.iter().map(|k| seen.insert(k.as_str())).collect();
    let fresh: Vec<usize> = (0..events.len()).filter(|&i| first[i]).collect();
    let inserted: HashSet<String> = diesel::sql_query(
        "INSERT INTO webhook_events (event_key, event_type, disposition, received_at_ms, body) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::bytea[]) \
         ON CONFLICT (event_key) DO NOTHING RETURNING event_key",
    )
    .bind::<Array<Text>, _>(fresh.iter().map(|&i| &keys[i]).collect::<Vec<_>>())
    .bind::<Array<Nullable<Text>>, _>(
        fresh
            .iter()
            .map(|&i| events[i].1.event_type())
            .collect::<Vec<_>>(),
    )
    .bind::<Array<Text>, _>(
        fresh
            .iter()
            .map(|&i| disposition(&events[i].1))
            .collect::<Vec<_>>(),
    )
    .bind::<Array<BigInt>, _>(fresh.iter().map(|&i| received_at_ms[i]).collect::<Vec<_>>())
    .bind::<Array<Bytea>, _>(
        fresh
            .iter()
            .map(|&i| events[i].0.as_ref())
            .collect::<Vec<_>>(),
    )
    .load::<Key>(conn)
    .await?
    .into_iter()
    .map(|k| k.event_key)
    .collect();
    let mut outcomes: Vec<IngestOutcome> = events
        .iter()
        .enumerate()
        .map(|(i, (_, decoded))| {
            if !first[i] || !inserted.contains(&keys[i]) {
                return IngestOutcome::Duplicate;
            }
            match decoded {
                Decoded::Result(_) => IngestOutcome::Held,
                Decoded::Other { .. } => IngestOutcome::Ignored,
                Decoded::Unparseable { .. } => IngestOutcome::Unparseable,
            }
        })
        .collect();
    let results: Vec<(usize, &AccountEvent)> = events
        .iter()
        .enumerate()
        .filter_map(|(i, (_, decoded))| match (decoded, &outcomes[i]) {
            (Decoded::Result(event), IngestOutcome::Held) => Some((i, event)),
            _ => None,
        })
        .collect();
    let items: Vec<(&AccountEvent, Millis)> = results
        .iter()
        .map(|(i, e)| (*e, received_at_ms[*i]))
        .collect();
    let logged = apply(conn, log, &items, now_ms).await?;
    let mut held = Vec::new();
    for ((i, _), sequence) in results.iter().zip(logged) {
        match sequence {
            Some(sequence) => outcomes[*i] = IngestOutcome::Logged(sequence),
            None => held.push(keys[*i].clone()),
        }
    }
    if !held.is_empty() {
        diesel::update(webhook_events::table.filter(webhook_events::event_key.eq_any(&held)))
            .set(webhook_events::disposition.eq(HELD))
            .execute(conn)
            .await?;
    }
    Ok(outcomes)
}

fn disposition(decoded: &Decoded) -> &'static str {
    match decoded {
        Decoded::Result(_) => RESULT,
        Decoded::Other { .. } => "ignored",
        Decoded::Unparseable { .. } => "unparseable",
    }
}

/// Re-examines the held events (oldest first): those whose Link no longer has a live create
/// mark are logged, attributed to the intent now known or as unsolicited.
pub(super) async fn process_held(
    conn: &mut AsyncPgConnection,
    log: &mut Appender,
    now_ms: Millis,
) -> StoreResult<usize> {
    let held: Vec<(i64, Vec<u8>, Millis)> = webhook_events::table
        .filter(webhook_events::disposition.eq(HELD))
        .order(webhook_events::id.asc())
        .select((
            webhook_events::id,
            webhook_events::body,
            webhook_events::received_at_ms,
        ))
        .load(conn)
        .await?;
    let decoded: Vec<(i64, AccountEvent, Millis)> = held
        .into_iter()
        .filter_map(|(id, body, at)| match decode(&body) {
            Decoded::Result(event) => Some((id, event, at)),
            _ => None,
        })
        .collect();
    let items: Vec<(&AccountEvent, Millis)> = decoded.iter().map(|(_, e, at)| (e, *at)).collect();
    let logged = apply(conn, log, &items, now_ms).await?;
    let settled: Vec<i64> = decoded
        .iter()
        .zip(&logged)
        .filter(|(_, sequence)| sequence.is_some())
        .map(|((id, _, _), _)| *id)
        .collect();
    if !settled.is_empty() {
        diesel::update(webhook_events::table.filter(webhook_events::id.eq_any(&settled)))
            .set(webhook_events::disposition.eq(RESULT))
            .execute(conn)
            .await?;
    }
    Ok(settled.len())
}

/// Decides and writes account results (each with its arrival time), in order: the sequence
/// each was logged with, or `None` for one that must be held.
async fn apply(
    conn: &mut AsyncPgConnection,
    log: &mut Appender,
    items: &[(&AccountEvent, Millis)],
    now_ms: Millis,
) -> StoreResult<Vec<Option<i64>>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let accounts: Vec<&str> = items.iter().map(|(e, _)| e.account_id.as_str()).collect();
    let mut ctx = load_context(conn, &accounts, now_ms).await?;
    let mut logged = Vec::with_capacity(items.len());
    let mut answered: Vec<(String, String, i64)> = Vec::new();
    let mut completed: Vec<(String, &'static str, i64)> = Vec::new();
    let mut rejected: HashMap<String, Millis> = HashMap::new();
    for (event, received_at_ms) in items {
        let entry = match ctx.plan(event, *received_at_ms) {
            Plan::Hold => {
                logged.push(None);
                continue;
            }
            Plan::Log(entry) => entry,
        };
        if entry.rejects_link {
            rejected.insert(entry.link_id.clone(), *received_at_ms);
        }
        let row = log.append(ResultRow {
            sequence: 0,
            account_id: event.account_id.clone(),
            link_id: entry.link_id,
            refresh_intent_id: entry.intent_id.clone(),
            status: event.status.as_str().to_owned(),
            new_movements: i64::from(event.new_movements),
            public_error: event.public_error.clone(),
            event_id: event.event_id.clone(),
            occurred_at_ms: entry.occurred_at_ms,
            committed_at_ms: now_ms,
            completes_intent: entry.completes.is_some(),
        });
        if !entry.intent_id.is_empty() {
            answered.push((
                entry.intent_id.clone(),
                event.account_id.clone(),
                row.sequence,
            ));
        }
        if let Some(status) = entry.completes {
            completed.push((entry.intent_id, status.as_str(), row.sequence));
        }
        logged.push(Some(row.sequence));
    }
    log.flush(conn).await?;
    if !answered.is_empty() {
        diesel::sql_query(
            "UPDATE intent_accounts SET result_sequence = a.sequence \
             FROM unnest($1::text[], $2::text[], $3::int8[]) AS a(intent, account, sequence) \
             WHERE refresh_intent_id = a.intent AND account_id = a.account",
        )
        .bind::<Array<Text>, _>(answered.iter().map(|a| &a.0).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(answered.iter().map(|a| &a.1).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(answered.iter().map(|a| a.2).collect::<Vec<_>>())
        .execute(conn)
        .await?;
    }
    for (intent_id, status, sequence) in &completed {
        super::intents::finish(conn, intent_id, status, *sequence, now_ms).await?;
    }
    for (link_id, at) in &rejected {
        diesel::update(links::table.find(link_id))
            .set(links::rejected_at_ms.eq(at))
            .execute(conn)
            .await?;
    }
    Ok(logged)
}

#[derive(QueryableByName)]
struct Waiting {
    #[diesel(sql_type = Text)]
    refresh_intent_id: String,
    #[diesel(sql_type = BigInt)]
    created_at_ms: Millis,
    #[diesel(sql_type = Text)]
    account_id: String,
    #[diesel(sql_type = Nullable<Text>)]
    status: Option<String>,
}

/// What results for these accounts are decided against: their Links, the pending intents
/// still waiting for any of them (with every expected account and its status so far), and
/// the live create marks of their Links.
async fn load_context(
    conn: &mut AsyncPgConnection,
    accounts: &[&str],
    now_ms: Millis,
) -> StoreResult<Context> {
    use super::schema::accounts as acc;
    let link_of: HashMap<String, String> = acc::table
        .filter(acc::account_id.eq_any(accounts))
        .select((acc::account_id, acc::link_id))
        .load::<(String, String)>(conn)
        .await?
        .into_iter()
        .collect();
    let waiting: Vec<Waiting> = diesel::sql_query(
        "SELECT ia.refresh_intent_id, ri.created_at_ms, ia.account_id, r.status \
         FROM intent_accounts ia \
         JOIN refresh_intents ri ON ri.id = ia.refresh_intent_id \
         LEFT JOIN results r ON r.sequence = ia.result_sequence \
         WHERE ia.refresh_intent_id IN ( \
             SELECT refresh_intent_id FROM intent_accounts \
             WHERE account_id = ANY($1) AND result_sequence IS NULL)",
    )
    .bind::<Array<Text>, _>(accounts)
    .load(conn)
    .await?;
    let mut pending: HashMap<String, Progress> = HashMap::new();
    for w in waiting {
        let status = match w.status {
            Some(s) => Some(ResultStatus::parse(&s).map_err(StoreError::from)?),
            None => None,
        };
        pending
            .entry(w.refresh_intent_id)
            .or_insert_with(|| Progress {
                created_at_ms: w.created_at_ms,
                expected: Vec::new(),
            })
            .expected
            .push((w.account_id, status));
    }
    let links: Vec<&String> = link_of.values().collect();
    let creating: HashSet<String> = creates_in_flight::table
        .filter(creates_in_flight::link_id.eq_any(links))
        .filter(creates_in_flight::expires_at_ms.gt(now_ms))
        .select(creates_in_flight::link_id)
        .load::<String>(conn)
        .await?
        .into_iter()
        .collect();
    Ok(Context {
        link_of,
        creating,
        pending,
    })
}
