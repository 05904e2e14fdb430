//! Filling an empty PostgreSQL database from a `copy-store` snapshot (`store/copy/`).
//!
//! The target is migrated as a server would migrate it, then everything happens in one
//! transaction: the log's counter is locked (every writer, and a second `copy-store`, waits
//! there), the target is checked to hold no data, every batch goes in with one multi-row
//! insert keeping its sequences and ids (only fetch jobs' leases are cleared: they were the
//! SQLite process's), and the counter is set to the source's high-water mark. A failure anywhere rolls all of it back: the target stays empty and the copy can
//! simply be run again. For a very large store that one transaction runs long; a one-off
//! move can afford that.

use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tokio::sync::mpsc;

use super::schema::{
    accounts, fetch_jobs, fintoc_key_series, idempotency_keys, intent_accounts, link_tokens, links,
    log_counter, movements, refresh_intents, results, webhook_events,
};
use crate::store::copy::batch::{
    AccountRow, Batch, EventRow, Failed, FetchJobRow, IntentAccountRow, IntentRecord, KeyRow,
    KeySeriesRow, LinkRow, LinkTokenRow, MovementRow, Read, Rows, Snapshot, Table,
};
use crate::store::rows::ResultRecord;

impl From<diesel::result::Error> for Failed {
    fn from(e: diesel::result::Error) -> Self {
        Failed::Target(format!("database error: {e}"))
    }
}

#[derive(QueryableByName)]
struct Holding {
    #[diesel(sql_type = Text)]
    name: String,
}

/// The tables that, holding any row, make the target not empty: every table a server
/// writes, and the log's counter once it has handed out a sequence.
const HOLDING_DATA: &str = "SELECT name FROM (VALUES \
     ('webhook_events', EXISTS (SELECT 1 FROM webhook_events)), \
     ('results', EXISTS (SELECT 1 FROM results)), \
     ('refresh_intents', EXISTS (SELECT 1 FROM refresh_intents)), \
     ('intent_accounts', EXISTS (SELECT 1 FROM intent_accounts)), \
     ('links', EXISTS (SELECT 1 FROM links)), \
     ('accounts', EXISTS (SELECT 1 FROM accounts)), \
     ('idempotency_keys', EXISTS (SELECT 1 FROM idempotency_keys)), \
     ('fintoc_key_series', EXISTS (SELECT 1 FROM fintoc_key_series)), \
     ('link_tokens', EXISTS (SELECT 1 FROM link_tokens)), \
     ('movements', EXISTS (SELECT 1 FROM movements)), \
     ('fetch_jobs', EXISTS (SELECT 1 FROM fetch_jobs)), \
     ('log_counter', (SELECT newest FROM log_counter) > 0) \
     ) AS tables (name, holds) WHERE holds";

/// Migrates the database at `url` and copies the snapshot into it: `batches` until every
/// table is `Done`. `progress` hears each table's running count (`true` once it is done).
pub(in crate::store) async fn fill(
    url: &str,
    snapshot: &Snapshot,
    batches: &mut mpsc::Receiver<Read>,
    progress: &mut (dyn FnMut(Table, u64, bool) + Send),
) -> Result<(), Failed> {
    // Connecting first: a mistake in the URL reads as one, not as "unreachable".
    let mut conn = super::connect::connect(url)
        .await
        .map_err(|e| Failed::Target(e.to_string()))?;
    super::migrate(url)
        .await
        .map_err(|e| Failed::Target(e.to_string()))?;
    conn.transaction::<_, Failed, _>(async |conn| {
        // Held to the end: nothing else writes the log meanwhile, and a second copy-store
        // waits here, then finds this one's rows and refuses.
        log_counter::table
            .select(log_counter::newest)
            .for_update()
            .get_result::<i64>(conn)
            .await?;
        let holding: Vec<String> = diesel::sql_query(HOLDING_DATA)
            .load::<Holding>(conn)
            .await?
            .into_iter()
            .map(|h| h.name)
            .collect();
        if !holding.is_empty() {
            return Err(Failed::Target(format!(
                "it already holds data ({}); copy-store fills only an empty database",
                holding.join(", ")
            )));
        }
        copy_batches(conn, snapshot, batches, progress).await?;
        diesel::update(log_counter::table)
            .set(log_counter::newest.eq(snapshot.high_water))
            .execute(conn)
            .await?;
        // The log's time goes on from the newest stamp copied. What SQLite's retention had
        // pruned is known here only as far as the oldest result copied (an upper bound): a
        // seek at or before it is refused if anything was pruned, never wrongly served.
        for statement in [
            "UPDATE log_counter SET newest_ms = \
               (SELECT COALESCE(max(committed_at_ms), 0) FROM results)",
            "UPDATE log_horizon SET pruned_through_ms = \
               (SELECT COALESCE(min(committed_at_ms), 0) FROM results)",
        ] {
            diesel::sql_query(statement).execute(conn).await?;
        }
        // The raw events kept their ids: new ones continue after the largest. (A sequence
        // moves outside the transaction; should the commit fail, ids merely skip ahead.)
        diesel::sql_query(
            "SELECT setval(pg_get_serial_sequence('webhook_events', 'id'), max(id)) \
             FROM webhook_events",
        )
        .execute(conn)
        .await?;
        Ok(())
    })
    .await
}

/// Inserts every batch until each table is done, checking each table's row count against
/// the snapshot's.
async fn copy_batches(
    conn: &mut AsyncPgConnection,
    snapshot: &Snapshot,
    batches: &mut mpsc::Receiver<Read>,
    progress: &mut (dyn FnMut(Table, u64, bool) + Send),
) -> Result<(), Failed> {
    let mut copied = Rows::default();
    let mut done = 0;
    while done < Table::ALL.len() {
        let batch = match batches.recv().await {
            Some(read) => read.map_err(Failed::Source)?,
            None => return Err(Failed::Source("the reading stopped early".into())),
        };
        let (table, _) = batch.table_and_len();
        if let Batch::Done(table) = batch {
            let (got, want) = (copied.get(table), snapshot.rows.get(table));
            if got != want {
                return Err(Failed::Source(format!(
                    "{} gave {got} rows where the snapshot counted {want}",
                    table.name()
                )));
            }
            progress(table, got, true);
            done += 1;
            continue;
        }
        let inserted = insert(conn, batch).await?;
        copied.set(table, copied.get(table) + inserted as u64);
        progress(table, copied.get(table), false);
    }
    Ok(())
}

/// One multi-row insert, every column as read (sequences and ids included).
async fn insert(conn: &mut AsyncPgConnection, batch: Batch) -> Result<usize, Failed> {
    Ok(match batch {
        Batch::Links(rows) => insert_links(conn, &rows).await?,
        Batch::LinkTokens(rows) => insert_link_tokens(conn, &rows).await?,
        Batch::Accounts(rows) => insert_accounts(conn, &rows).await?,
        Batch::Movements(rows) => insert_movements(conn, &rows).await?,
        Batch::RefreshIntents(rows) => insert_intents(conn, &rows).await?,
        Batch::IntentAccounts(rows) => insert_intent_accounts(conn, &rows).await?,
        Batch::IdempotencyKeys(rows) => insert_keys(conn, &rows).await?,
        Batch::FintocKeySeries(rows) => insert_key_series(conn, &rows).await?,
        Batch::Results(rows) => insert_results(conn, &rows).await?,
        Batch::FetchJobs(rows) => insert_fetch_jobs(conn, &rows).await?,
        Batch::WebhookEvents(rows) => insert_events(conn, &rows).await?,
        Batch::Done(_) => 0,
    })
}

async fn insert_results(conn: &mut AsyncPgConnection, rows: &[ResultRecord]) -> QueryResult<usize> {
    use results as t;
    // Every column (`RESULT_COLUMNS` of them, which bounds the batch): a movements entry
    // without its `detail` would read back as no entry at all, and a result without
    // `fetches_movements` would let its intent complete before its movements are pushed.
    let values: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                t::sequence.eq(r.sequence),
                t::account_id.eq(&r.account_id),
                t::link_id.eq(&r.link_id),
                t::refresh_intent_id.eq(&r.refresh_intent_id),
                t::status.eq(&r.status),
                t::new_movements.eq(r.new_movements),
                t::public_error.eq(&r.public_error),
                t::event_id.eq(&r.event_id),
                t::occurred_at_ms.eq(r.occurred_at_ms),
                t::committed_at_ms.eq(r.committed_at_ms),
                t::completes_intent.eq(r.completes_intent),
                (
                    t::detail.eq(&r.detail),
                    t::fetches_movements.eq(r.fetches_movements),
                    t::trace_context.eq(&r.trace_context),
                ),
            )
        })
        .collect();
    diesel::insert_into(t::table)
        .values(values)
        .execute(conn)
        .await
}

async fn insert_links(conn: &mut AsyncPgConnection, rows: &[LinkRow]) -> QueryResult<usize> {
    use links as t;
    let values: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                t::link_id.eq(&r.link_id),
                t::token_sha256.eq(&r.token_sha256),
                t::rejected_at_ms.eq(r.rejected_at_ms),
                t::resolved_at_ms.eq(r.resolved_at_ms),
            )
        })
        .collect();
    diesel::insert_into(t::table)
        .values(values)
        .execute(conn)
        .await
}

/// Byte for byte: the sealed token opens under the same key wherever it is stored.
async fn insert_link_tokens(
    conn: &mut AsyncPgConnection,
    rows: &[LinkTokenRow],
) -> QueryResult<usize> {
    use link_tokens as t;
    let values: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                t::link_id.eq(&r.link_id),
                t::key_id.eq(&r.key_id),
                t::nonce.eq(&r.nonce),
                t::ciphertext.eq(&r.ciphertext),
                t::given_at_ms.eq(r.given_at_ms),
            )
        })
        .collect();
    diesel::insert_into(t::table)
        .values(values)
        .execute(conn)
        .await
}

async fn insert_movements(
    conn: &mut AsyncPgConnection,
    rows: &[MovementRow],
) -> QueryResult<usize> {
    use movements as t;
    let values: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                t::account_id.eq(&r.account_id),
                t::movement_id.eq(&r.movement_id),
                t::link_id.eq(&r.link_id),
                t::post_date.eq(&r.post_date),
                t::body.eq(&r.body),
            )
        })
        .collect();
    diesel::insert_into(t::table)
        .values(values)
        .execute(conn)
        .await
}

async fn insert_accounts(conn: &mut AsyncPgConnection, rows: &[AccountRow]) -> QueryResult<usize> {
    use accounts as t;
    let values: Vec<_> = rows
        .iter()
        .map(|r| (t::account_id.eq(&r.account_id), t::link_id.eq(&r.link_id)))
        .collect();
    diesel::insert_into(t::table)
        .values(values)
        .execute(conn)
        .await
}

async fn insert_intents(conn: &mut AsyncPgConnection, rows: &[IntentRecord]) -> QueryResult<usize> {
    use refresh_intents as t;
    let values: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                t::id.eq(&r.id),
                t::link_id.eq(&r.link_id),
                t::refresh_type.eq(&r.refresh_type),
                t::status.eq(&r.status),
                t::mfa_widget_token.eq(&r.mfa_widget_token),
                t::created_at_ms.eq(r.created_at_ms),
                t::completed_at_ms.eq(r.completed_at_ms),
                t::completed_sequence.eq(r.completed_sequence),
                t::reconciled_at_ms.eq(r.reconciled_at_ms),
            )
        })
        .collect();
    diesel::insert_into(t::table)
        .values(values)
        .execute(conn)
        .await
}

async fn insert_intent_accounts(
    conn: &mut AsyncPgConnection,
    rows: &[IntentAccountRow],
) -> QueryResult<usize> {
    use intent_accounts as t;
    let values: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                t::refresh_intent_id.eq(&r.refresh_intent_id),
                t::account_id.eq(&r.account_id),
                t::result_sequence.eq(r.result_sequence),
            )
        })
        .collect();
    diesel::insert_into(t::table)
        .values(values)
        .execute(conn)
        .await
}

async fn insert_keys(conn: &mut AsyncPgConnection, rows: &[KeyRow]) -> QueryResult<usize> {
    use idempotency_keys as t;
    let values: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                t::idempotency_key.eq(&r.idempotency_key),
                t::token_sha256.eq(&r.token_sha256),
                t::refresh_type.eq(&r.refresh_type),
                t::refresh_intent_id.eq(&r.refresh_intent_id),
                t::joined_existing.eq(r.joined_existing),
                t::created_at_ms.eq(r.created_at_ms),
            )
        })
        .collect();
    diesel::insert_into(t::table)
        .values(values)
        .execute(conn)
        .await
}

async fn insert_key_series(
    conn: &mut AsyncPgConnection,
    rows: &[KeySeriesRow],
) -> QueryResult<usize> {
    use fintoc_key_series as t;
    let values: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                t::idempotency_key.eq(&r.idempotency_key),
                t::spent.eq(r.spent),
                t::updated_at_ms.eq(r.updated_at_ms),
            )
        })
        .collect();
    diesel::insert_into(t::table)
        .values(values)
        .execute(conn)
        .await
}

/// Each job as owed, but unleased: its lease was a SQLite process's, which no replica on
/// PostgreSQL could tell has gone; left in place, it would hold the job back until it ran
/// out. Cleared, any replica may claim it when it is due.
async fn insert_fetch_jobs(
    conn: &mut AsyncPgConnection,
    rows: &[FetchJobRow],
) -> QueryResult<usize> {
    use fetch_jobs as t;
    let values: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                t::result_sequence.eq(r.result_sequence),
                t::account_id.eq(&r.account_id),
                t::link_id.eq(&r.link_id),
                t::event_id.eq(&r.event_id),
                t::new_movements.eq(r.new_movements),
                t::occurred_at_ms.eq(r.occurred_at_ms),
                t::attempts.eq(r.attempts),
                t::due_at_ms.eq(r.due_at_ms),
                t::lease_owner.eq(""),
                t::lease_until_ms.eq(0),
            )
        })
        .collect();
    diesel::insert_into(t::table)
        .values(values)
        .execute(conn)
        .await
}

async fn insert_events(conn: &mut AsyncPgConnection, rows: &[EventRow]) -> QueryResult<usize> {
    use webhook_events as t;
    let values: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                t::id.eq(r.id),
                t::event_key.eq(&r.event_key),
                t::event_type.eq(&r.event_type),
                t::disposition.eq(&r.disposition),
                t::received_at_ms.eq(r.received_at_ms),
                t::body.eq(&r.body),
            )
        })
        .collect();
    diesel::insert_into(t::table)
        .values(values)
        .execute(conn)
        .await
}
