//! Taking in a batch of verified webhook bodies inside one writer transaction, set-based and
//! pipelined: one round trip stores (and dedupes) every raw body while reading what the
//! batch's results are decided against; the decision core (`store::decide`) decides each result
//! in arrival order; one more round trip writes every outcome. A round trip to PostgreSQL
//! costs more than the work itself, so round trips are what is counted, not events.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;

use bytes::Bytes;
use diesel::prelude::*;
use diesel_async::SimpleAsyncConnection;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use futures_util::future::{try_join, try_join4, try_join5};

use super::log::{Appender, LOCK_COUNTER};
use super::schema::webhook_events;
use super::statements::{
    AccountLinks, AnswerAccounts, FinishIntents, HoldEvents, InsertEvents, RejectLinks, Waiting,
    is_held,
};
use crate::clock::Millis;
use crate::domain::{Detail, ResultRow, ResultStatus};
use crate::fintoc::event::{AccountEvent, Decoded, decode};
use crate::store::decide::movements::Follow;
use crate::store::decide::{Context, Plan, Progress};
use crate::store::{IngestOutcome, StoreError, StoreResult};

const RESULT: &str = "result";

/// Stores each body once and applies the new account results, inside a transaction that
/// holds the counter's lock. One outcome per body, in order; a body repeated within the batch
/// is a duplicate of its first copy.
pub(super) async fn ingest(
    conn: &mut AsyncPgConnection,
    log: &mut Appender,
    events: &[(Bytes, Decoded)],
    received_at_ms: &[Millis],
    now_ms: Millis,
    movements: bool,
) -> StoreResult<Vec<IngestOutcome>> {
    let batch = Batch::new(events, received_at_ms);
    let shared: &AsyncPgConnection = conn;
    let (inserted, ctx) = try_join(
        batch.insert(shared),
        load_context(shared, &batch.accounts, now_ms, movements),
    )
    .await?;
    batch.apply(conn, log, inserted, ctx).await
}

/// [`ingest`] opening its own transaction: `begin` (BEGIN with the session's bounds, then
/// the counter's lock: `session::Bounds::begin`, `log::LOCK_COUNTER`), the counter's value
/// and the first round trip of the ingest go out together, in that order (a simple query is
/// sent the moment it is first polled, so what is polled after it runs after it, holding the
/// lock), so a batch waiting for the lock runs the moment it is granted, with no round trip
/// in between. `published` is what this replica's watchers were handed (see
/// [`Appender::after`]). Returns the appender to finish the transaction with.
pub(super) async fn begin_and_ingest(
    conn: &mut AsyncPgConnection,
    begin: &str,
    published: i64,
    events: &[(Bytes, Decoded)],
    received_at_ms: &[Millis],
    now_ms: Millis,
    movements: bool,
) -> StoreResult<(Vec<IngestOutcome>, Appender)> {
    let batch = Batch::new(events, received_at_ms);
    let shared: &AsyncPgConnection = conn;
    let begin_locked = format!("{begin}; {LOCK_COUNTER}");
    let ((), newest, inserted, ctx) = try_join4(
        async {
            let mut c = shared;
            Ok::<_, StoreError>(c.batch_execute(&begin_locked).await?)
        },
        async {
            Ok(Appender::newest_query()
                .get_result::<(i64, Millis)>(&mut &*shared)
                .await?)
        },
        batch.insert(shared),
        load_context(shared, &batch.accounts, now_ms, movements),
    )
    .await?;
    let mut log = Appender::after(newest, published);
    let outcomes = batch.apply(conn, &mut log, inserted, ctx).await?;
    Ok((outcomes, log))
}

/// A batch of bodies on its way in: their identities, and what the first round trip sends.
struct Batch<'a> {
    events: &'a [(Bytes, Decoded)],
    received_at_ms: &'a [Millis],
    keys: Vec<String>,
    /// Whether each body is the first with its key in the batch.
    first: Vec<bool>,
    /// Indexes of the first copies: what is inserted.
    fresh: Vec<usize>,
    /// The accounts of the fresh results: their context is read with the insert.
    accounts: Vec<&'a str>,
}

impl<'a> Batch<'a> {
    fn new(events: &'a [(Bytes, Decoded)], received_at_ms: &'a [Millis]) -> Batch<'a> {
        let keys: Vec<String> = events
            .iter()
            .map(|(body, decoded)| match decoded.event_id() {
                Some(id) => id.to_owned(),
                // No readable id: the body itself is the identity, so a retried delivery of
                // the same bytes is still recognized.
                None => format!("sha256:{}", crate::secret::sha256_bytes_hex(body)),
            })
            .collect();
        let mut seen = HashSet::new();
        let first: Vec<bool> = keys.iter().map(|k| seen.insert(k.clone())).collect();
        let fresh: Vec<usize> = (0..events.len()).filter(|&i| first[i]).collect();
        // Every result's context is read with the insert (in the same round trip), whether
        // or not it turns out to be new: reading a little more costs less than a round trip.
        let accounts = fresh
            .iter()
            .filter_map(|&i| match &events[i].1 {
                Decoded::Result(event) => Some(event.account_id.as_str()),
                _ => None,
            })
            .collect();
        Batch {
            events,
            received_at_ms,
            keys,
            first,
            fresh,
            accounts,
        }
    }

    /// Inserts the fresh bodies; the keys of those that were not stored already.
    async fn insert(&self, conn: &AsyncPgConnection) -> StoreResult<Vec<String>> {
        let fresh = &self.fresh;
        let insert = InsertEvents {
            keys: fresh.iter().map(|&i| self.keys[i].as_str()).collect(),
            types: fresh
                .iter()
                .map(|&i| self.events[i].1.event_type())
                .collect(),
            dispositions: fresh
                .iter()
                .map(|&i| disposition(&self.events[i].1))
                .collect(),
            received_at_ms: fresh.iter().map(|&i| self.received_at_ms[i]).collect(),
            bodies: fresh.iter().map(|&i| self.events[i].0.as_ref()).collect(),
            _life: PhantomData,
        };
        Ok(insert.load::<String>(&mut &*conn).await?)
    }

    /// Decides each new result against `ctx` and writes every outcome (one round trip).
    async fn apply(
        self,
        conn: &mut AsyncPgConnection,
        log: &mut Appender,
        inserted: Vec<String>,
        ctx: Context,
    ) -> StoreResult<Vec<IngestOutcome>> {
        let Batch {
            events,
            received_at_ms,
            keys,
            first,
            ..
        } = self;
        let inserted: HashSet<String> = inserted.into_iter().collect();
        let mut outcomes: Vec<IngestOutcome> = events
            .iter()
            .enumerate()
            .map(|(i, (_, decoded))| {
                if !first[i] || !inserted.contains(&keys[i]) {
                    return IngestOutcome::Duplicate;
                }
                match decoded {
                    Decoded::Result(_) => IngestOutcome::Held,
                    Decoded::Movements(_) | Decoded::Other { .. } => IngestOutcome::Ignored,
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
        let (movements_on, now_ms) = (ctx.movements, ctx.now_ms);
        let mut writes = plan(ctx, log, &items);
        for ((i, _), sequence) in results.iter().zip(&writes.logged) {
            match sequence {
                Some(sequence) => outcomes[*i] = IngestOutcome::Logged(*sequence),
                None => writes.held.push(keys[*i].clone()),
            }
        }
        writes.run(conn, log).await?;
        // Movements events are rare: each is applied on its own, after the results.
        for (i, (_, decoded)) in events.iter().enumerate() {
            if let (Decoded::Movements(event), IngestOutcome::Ignored) = (decoded, &outcomes[i])
                && movements_on
                && let Some(sequence) =
                    super::movements::apply_event(conn, log, event, now_ms).await?
            {
                outcomes[i] = IngestOutcome::Logged(sequence);
            }
        }
        Ok(outcomes)
    }
}

fn disposition(decoded: &Decoded) -> &'static str {
    match decoded {
        Decoded::Result(_) | Decoded::Movements(_) => RESULT,
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
    movements: bool,
) -> StoreResult<usize> {
    let held: Vec<(i64, Vec<u8>, Millis)> = webhook_events::table
        .filter(is_held())
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
    if decoded.is_empty() {
        return Ok(0);
    }
    let items: Vec<(&AccountEvent, Millis)> = decoded.iter().map(|(_, e, at)| (e, *at)).collect();
    let accounts: Vec<&str> = items.iter().map(|(e, _)| e.account_id.as_str()).collect();
    let ctx = load_context(conn, &accounts, now_ms, movements).await?;
    let writes = plan(ctx, log, &items);
    let settled: Vec<i64> = decoded
        .iter()
        .zip(&writes.logged)
        .filter(|(_, sequence)| sequence.is_some())
        .map(|((id, _, _), _)| *id)
        .collect();
    writes.run(conn, log).await?;
    if !settled.is_empty() {
        diesel::update(webhook_events::table.filter(webhook_events::id.eq_any(&settled)))
            .set(webhook_events::disposition.eq(RESULT))
            .execute(conn)
            .await?;
    }
    Ok(settled.len())
}

/// What a batch of results writes, decided before anything is written.
#[derive(Default)]
struct Writes {
    /// Per result, in order: the sequence it was logged with, or `None` when it is held.
    logged: Vec<Option<i64>>,
    /// (intent, account, sequence) of each result that answers an intent.
    answered: Vec<(String, String, i64)>,
    /// (intent, final status, completing sequence, when Fintoc completed it).
    completed: Vec<(String, &'static str, i64, Millis)>,
    /// Links whose rejected-credentials hold starts, with when.
    rejected: HashMap<String, Millis>,
    /// Keys of events to keep until their intent is known.
    held: Vec<String>,
    /// Results whose movements are owed a fetch.
    fetches: Vec<ResultRow>,
}

/// Decides every result in arrival order against `ctx`, handing out sequences from `log`.
fn plan(mut ctx: Context, log: &mut Appender, items: &[(&AccountEvent, Millis)]) -> Writes {
    let mut writes = Writes::default();
    for (event, received_at_ms) in items {
        let entry = match ctx.plan(event, *received_at_ms) {
            Plan::Hold => {
                writes.logged.push(None);
                continue;
            }
            Plan::Log(entry) => entry,
        };
        if entry.rejects_link {
            writes
                .rejected
                .insert(entry.link_id.clone(), *received_at_ms);
        }
        let follow = entry.follow;
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
            committed_at_ms: ctx.now_ms,
            completes_intent: entry.completes.is_some(),
            detail: Detail::Result,
            fetches_movements: follow == Follow::Fetch,
            trace_context: crate::telemetry::traceparent_of(&event.event_id),
        });
        match follow {
            Follow::Nothing => {}
            Follow::Fetch => writes.fetches.push(row.clone()),
            Follow::Unavailable(unavailable) => {
                log.append(ResultRow {
                    sequence: 0,
                    account_id: row.account_id.clone(),
                    link_id: row.link_id.clone(),
                    refresh_intent_id: row.refresh_intent_id.clone(),
                    status: Detail::UNAVAILABLE.to_owned(),
                    new_movements: 0,
                    public_error: String::new(),
                    event_id: row.event_id.clone(),
                    occurred_at_ms: ctx.now_ms,
                    committed_at_ms: ctx.now_ms,
                    completes_intent: false,
                    detail: Detail::Unavailable(std::sync::Arc::new(unavailable)),
                    fetches_movements: false,
                    trace_context: String::new(),
                });
            }
        }
        if !entry.intent_id.is_empty() {
            writes.answered.push((
                entry.intent_id.clone(),
                event.account_id.clone(),
                row.sequence,
            ));
        }
        if let Some(done) = entry.completes {
            writes.completed.push((
                entry.intent_id,
                done.status.as_str(),
                row.sequence,
                done.at_ms,
            ));
        }
        writes.logged.push(Some(row.sequence));
    }
    writes
}

impl Writes {
    /// Writes the appended rows and every effect in one pipelined round trip: none of these
    /// statements depends on another, so their order on the wire does not matter.
    async fn run(self, conn: &mut AsyncPgConnection, log: &mut Appender) -> StoreResult<()> {
        let append = log.take();
        let shared: &AsyncPgConnection = conn;
        let opt = |present: bool| present.then_some(());
        let answers = opt(!self.answered.is_empty()).map(|()| AnswerAccounts {
            intents: self.answered.iter().map(|a| a.0.as_str()).collect(),
            accounts: self.answered.iter().map(|a| a.1.as_str()).collect(),
            sequences: self.answered.iter().map(|a| a.2).collect(),
            _life: PhantomData,
        });
        let finishes = opt(!self.completed.is_empty()).map(|()| FinishIntents {
            ids: self.completed.iter().map(|c| c.0.as_str()).collect(),
            statuses: self.completed.iter().map(|c| c.1).collect(),
            sequences: self.completed.iter().map(|c| c.2).collect(),
            completed_at_ms: self.completed.iter().map(|c| c.3).collect(),
            _life: PhantomData,
        });
        let rejects = opt(!self.rejected.is_empty()).map(|()| RejectLinks {
            links: self.rejected.keys().map(String::as_str).collect(),
            at_ms: self.rejected.values().copied().collect(),
            _life: PhantomData,
        });
        let holds = opt(!self.held.is_empty()).map(|()| HoldEvents {
            keys: self.held.iter().map(String::as_str).collect(),
            _life: PhantomData,
        });
        try_join5(
            optional(append.as_ref().map(|a| a.statement()), shared),
            optional(answers, shared),
            optional(finishes, shared),
            optional(rejects, shared),
            optional(holds, shared),
        )
        .await?;
        log.wrote_something(append.is_some());
        for row in &self.fetches {
            super::movements::insert_fetch_job(conn, row).await?;
        }
        Ok(())
    }
}

/// Runs `statement` (if there is one) on `conn`, pipelined with whatever else is in flight.
async fn optional<Q>(statement: Option<Q>, conn: &AsyncPgConnection) -> StoreResult<()>
where
    Q: diesel::query_builder::QueryFragment<diesel::pg::Pg> + diesel::query_builder::QueryId + Send,
{
    if let Some(statement) = statement {
        statement.execute(&mut &*conn).await?;
    }
    Ok(())
}

/// What results for these accounts are decided against: their Links and live create marks,
/// and the pending intents still waiting for any of them (with every expected account and
/// its status so far). Two reads, pipelined.
async fn load_context(
    conn: &AsyncPgConnection,
    accounts: &[&str],
    now_ms: Millis,
    movements: bool,
) -> StoreResult<Context> {
    let mut ctx = Context::new(now_ms);
    ctx.movements = movements;
    if accounts.is_empty() {
        return Ok(ctx);
    }
    let links = AccountLinks {
        accounts: accounts.to_vec(),
        _life: PhantomData,
    };
    let waiting = Waiting {
        accounts: accounts.to_vec(),
        _life: PhantomData,
    };
    let (links, waiting) = try_join(
        links.load::<(String, String, bool, bool)>(&mut &*conn),
        waiting.load::<(String, Millis, String, Option<String>, Option<Millis>)>(&mut &*conn),
    )
    .await?;
    for (account, link, creating, kept) in links {
        if creating {
            ctx.creating.insert(link.clone());
        }
        if kept && movements {
            ctx.kept.insert(link.clone());
        }
        ctx.link_of.insert(account, link);
    }
    for (intent, created_at_ms, account, status, occurred_at_ms) in waiting {
        let status = match status {
            Some(s) => Some(ResultStatus::parse(&s).map_err(StoreError::from)?),
            None => None,
        };
        let progress = ctx.pending.entry(intent).or_insert_with(|| Progress {
            created_at_ms,
            expected: Vec::new(),
            latest_result_ms: None,
        });
        progress.expected.push((account, status));
        progress.latest_result_ms = progress.latest_result_ms.max(occurred_at_ms);
    }
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use diesel::pg::Pg;
    use diesel::prelude::*;

    use super::*;

    const SCHEMA: &str =
        include_str!("../../../migrations/postgres/2026-12-02-000001_create_log/up.sql");

    /// The settling read's filter is the partial index's predicate, word for word, and no
    /// bound parameter: only then can a prepared statement's generic plan use the index.
    #[test]
    fn the_held_events_filter_is_the_partial_index_predicate() {
        assert!(
            SCHEMA.contains("ON webhook_events (id) WHERE disposition = 'held';"),
            "the partial index changed: change is_held() with it"
        );
        let query = webhook_events::table
            .filter(is_held())
            .select(webhook_events::id);
        let sql = diesel::debug_query::<Pg, _>(&query).to_string();
        assert!(
            sql.contains("WHERE webhook_events.disposition = 'held'"),
            "{sql}"
        );
        assert!(
            !sql.contains('$'),
            "a bound parameter hides the predicate: {sql}"
        );
    }
}
