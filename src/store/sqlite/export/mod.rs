//! Reading a SQLite store for `copy-store` (`store/copy/`): one consistent snapshot,
//! streamed table by table in bounded batches.
//!
//! - **Beside a running server.** The file is opened read-only (`mode=ro`, and
//!   `query_only` on top) and without the one-process lock (`lock.rs`): this only reads.
//!   Everything is read inside one read transaction, which WAL keeps at the instant it began
//!   while the server goes on committing; the copy is the store as it was at that instant.
//!   While it is open the server's checkpoints cannot recycle the WAL, so the WAL grows for
//!   as long as the copy runs.
//! - **Never creates.** A missing file is refused (SQLite would create an empty database),
//!   and so is a file that is not a fintoc-refresh store at this version's schema.
//! - **Bounded.** Each table is read by ranges of its primary key (`copy::BATCH_ROWS` rows, raw
//!   events also by bytes) into a channel of `copy::READ_AHEAD` batches, on a thread of its own:
//!   sending blocks while the writer is behind.

use std::path::{Path, PathBuf};

use diesel::connection::SimpleConnection;
use diesel::dsl::{count_star, max, min, sql};
use diesel::migration::MigrationSource;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel::sqlite::{Sqlite, SqliteConnection};
use tokio::sync::{mpsc, oneshot};

use super::schema::{
    accounts, fetch_jobs, fintoc_key_series, idempotency_keys, intent_accounts, link_tokens, links,
    movements, refresh_intents, results, webhook_events,
};
use crate::store::copy::batch::{
    AccountRow, BATCH_EVENT_BYTES, BATCH_EVENTS, Batch, EventRow, FetchJobRow, IntentAccountRow,
    IntentRecord, KeyRow, KeySeriesRow, LinkRow, LinkTokenRow, MovementRow, READ_AHEAD, Read, Rows,
    Snapshot, Table,
};
use crate::store::rows::ResultRecord;

/// A snapshot being read: what it holds, then its batches, ending with a `Done` per table.
pub(in crate::store) struct Export {
    pub snapshot: Snapshot,
    pub batches: mpsc::Receiver<Read>,
}

/// Why reading stopped.
enum Stop {
    /// A reason to tell the operator.
    Refused(String),
    Database(diesel::result::Error),
    /// The writer hung up (it failed, and says why itself).
    Gone,
}

impl From<diesel::result::Error> for Stop {
    fn from(e: diesel::result::Error) -> Self {
        Stop::Database(e)
    }
}

impl Stop {
    fn why(self) -> Option<String> {
        match self {
            Stop::Refused(why) => Some(why),
            Stop::Database(e) => Some(format!("database error: {e}")),
            Stop::Gone => None,
        }
    }
}

/// Opens the store at `url` (a path, or a `file:`/`sqlite://` URI) read-only, begins its
/// snapshot and reads what it holds; its rows follow on [`Export::batches`], `rows` at a time.
pub(in crate::store) async fn open(url: &str, rows: usize) -> Result<Export, String> {
    let file = super::lock::database_file(url)
        .ok_or("an in-memory database holds nothing to copy; give the store's file path")?;
    match std::fs::metadata(&file) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err("it is not a file".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(
                "no such file (copy-store reads an existing SQLite store, it never creates one)"
                    .into(),
            );
        }
        Err(e) => return Err(e.to_string()),
    }
    let (header, snapshot) = oneshot::channel();
    let (out, batches) = mpsc::channel(READ_AHEAD);
    std::thread::Builder::new()
        .name("copy-store-read".into())
        .spawn(move || read(&file, rows, header, out))
        .map_err(|e| format!("cannot start the reading thread: {e}"))?;
    let snapshot = snapshot
        .await
        .map_err(|_| "the reading thread stopped".to_owned())??;
    Ok(Export { snapshot, batches })
}

/// The reading thread: the snapshot's summary on `header`, then every batch on `out`; a
/// failure goes to whichever the other side is waiting on.
fn read(
    file: &Path,
    rows: usize,
    header: oneshot::Sender<Result<Snapshot, String>>,
    out: mpsc::Sender<Read>,
) {
    let mut header = Some(header);
    let outcome = open_read_only(file).and_then(|mut conn| {
        // A deferred BEGIN: the snapshot is taken by the first read and kept until the end.
        conn.transaction::<_, Stop, _>(|conn| {
            let snapshot = summary(conn)?;
            let waiting = header.take().expect("sent once");
            if waiting.send(Ok(snapshot)).is_err() {
                return Err(Stop::Gone);
            }
            stream(conn, rows, &out)
        })
    });
    let Err(stop) = outcome else { return };
    let Some(why) = stop.why() else { return };
    match header.take() {
        Some(waiting) => {
            let _ = waiting.send(Err(why));
        }
        None => {
            let _ = out.blocking_send(Err(why));
        }
    }
}

/// The file opened read-only, as a URI so SQLite cannot create it or write to it.
fn open_read_only(file: &Path) -> Result<SqliteConnection, Stop> {
    let path: PathBuf = std::fs::canonicalize(file).map_err(|e| Stop::Refused(e.to_string()))?;
    let path = path
        .to_str()
        .ok_or_else(|| Stop::Refused("its path is not valid UTF-8".into()))?;
    // In a URI's path, `%`, `?` and `#` would be read as an escape, the query or a fragment.
    let escaped = path
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    let mut conn = SqliteConnection::establish(&format!("file:{escaped}?mode=ro"))
        .map_err(|e| Stop::Refused(e.to_string()))?;
    conn.batch_execute("PRAGMA query_only = ON; PRAGMA busy_timeout = 5000;")?;
    Ok(conn)
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

/// Checks that the file is a fintoc-refresh store at this version's schema, and reads what
/// it holds. The first read of the transaction: the snapshot is taken here.
fn summary(conn: &mut SqliteConnection) -> Result<Snapshot, Stop> {
    let not_ours = |why: &str| Stop::Refused(format!("it is not a fintoc-refresh store ({why})"));
    let tables = diesel::sql_query("SELECT name FROM sqlite_master WHERE type = 'table'")
        .load::<Name>(conn)
        .map_err(|e| not_ours(&e.to_string()))?;
    if !tables
        .iter()
        .any(|t| t.name == "__diesel_schema_migrations")
    {
        return Err(not_ours("it has no migrations table"));
    }
    let applied: Vec<String> = diesel::sql_query(
        "SELECT version AS name FROM __diesel_schema_migrations ORDER BY version",
    )
    .load::<Name>(conn)?
    .into_iter()
    .map(|n| n.name)
    .collect();
    let known: Vec<String> = MigrationSource::<Sqlite>::migrations(&super::MIGRATIONS)
        .map_err(|e| Stop::Refused(format!("cannot list this version's migrations: {e}")))?
        .iter()
        .map(|m| m.name().version().to_string())
        .collect();
    if known.first().is_none_or(|first| !applied.contains(first)) {
        return Err(not_ours("its migrations are not fintoc-refresh's"));
    }
    if let Some(newer) = applied.iter().find(|v| !known.contains(v)) {
        return Err(Stop::Refused(format!(
            "a newer fintoc-refresh migrated it (migration {newer} is unknown to this one); \
             copy it with that version"
        )));
    }
    if let Some(missing) = known.iter().find(|v| !applied.contains(v)) {
        return Err(Stop::Refused(format!(
            "an older fintoc-refresh wrote it (migration {missing} not applied): start this \
             version's serve on it once to migrate it, then copy"
        )));
    }
    let mut rows = Rows::default();
    let mut count = |table: Table, n: i64| rows.set(table, u64::try_from(n).unwrap_or(0));
    count(Table::Links, links::table.select(count_star()).first(conn)?);
    count(
        Table::LinkTokens,
        link_tokens::table.select(count_star()).first(conn)?,
    );
    count(
        Table::Accounts,
        accounts::table.select(count_star()).first(conn)?,
    );
    count(
        Table::Movements,
        movements::table.select(count_star()).first(conn)?,
    );
    count(
        Table::RefreshIntents,
        refresh_intents::table.select(count_star()).first(conn)?,
    );
    count(
        Table::IntentAccounts,
        intent_accounts::table.select(count_star()).first(conn)?,
    );
    count(
        Table::IdempotencyKeys,
        idempotency_keys::table.select(count_star()).first(conn)?,
    );
    count(
        Table::FintocKeySeries,
        fintoc_key_series::table.select(count_star()).first(conn)?,
    );
    count(
        Table::Results,
        results::table.select(count_star()).first(conn)?,
    );
    count(
        Table::FetchJobs,
        fetch_jobs::table.select(count_star()).first(conn)?,
    );
    count(
        Table::WebhookEvents,
        webhook_events::table.select(count_star()).first(conn)?,
    );
    let (oldest, newest): (Option<i64>, Option<i64>) = results::table
        .select((min(results::sequence), max(results::sequence)))
        .first(conn)?;
    // sqlite_sequence keeps the high-water mark even when retention pruned the newest rows'
    // predecessors or the whole log; never below a row that is there.
    let high_water = super::log::log_bounds(conn)
        .map_err(|e| Stop::Refused(e.to_string()))?
        .newest
        .max(newest.unwrap_or(0));
    Ok(Snapshot {
        rows,
        sequences: oldest.zip(newest),
        high_water,
    })
}

/// Sends every table, in the order the writer inserts them.
fn stream(conn: &mut SqliteConnection, rows: usize, out: &mpsc::Sender<Read>) -> Result<(), Stop> {
    let n = i64::try_from(rows).unwrap_or(i64::MAX);
    for table in Table::ALL {
        match table {
            Table::Links => pages(
                out,
                table,
                Batch::Links,
                |r: &LinkRow| r.link_id.clone(),
                |a| links_after(conn, a, n),
            )?,
            Table::LinkTokens => pages(
                out,
                table,
                Batch::LinkTokens,
                |r: &LinkTokenRow| r.link_id.clone(),
                |a| link_tokens_after(conn, a, n),
            )?,
            Table::Accounts => pages(
                out,
                table,
                Batch::Accounts,
                |r: &AccountRow| r.account_id.clone(),
                |a| accounts_after(conn, a, n),
            )?,
            Table::Movements => pages(
                out,
                table,
                Batch::Movements,
                |r: &MovementRow| (r.account_id.clone(), r.movement_id.clone()),
                |a| movements_after(conn, a, n),
            )?,
            Table::RefreshIntents => pages(
                out,
                table,
                Batch::RefreshIntents,
                |r: &IntentRecord| r.id.clone(),
                |a| intents_after(conn, a, n),
            )?,
            Table::IntentAccounts => pages(
                out,
                table,
                Batch::IntentAccounts,
                |r: &IntentAccountRow| (r.refresh_intent_id.clone(), r.account_id.clone()),
                |a| intent_accounts_after(conn, a, n),
            )?,
            Table::IdempotencyKeys => pages(
                out,
                table,
                Batch::IdempotencyKeys,
                |r: &KeyRow| r.idempotency_key.clone(),
                |a| keys_after(conn, a, n),
            )?,
            Table::FintocKeySeries => pages(
                out,
                table,
                Batch::FintocKeySeries,
                |r: &KeySeriesRow| r.idempotency_key.clone(),
                |a| key_series_after(conn, a, n),
            )?,
            Table::Results => pages(
                out,
                table,
                Batch::Results,
                |r: &ResultRecord| r.sequence,
                |a| results_after(conn, a.copied(), n),
            )?,
            Table::FetchJobs => pages(
                out,
                table,
                Batch::FetchJobs,
                |r: &FetchJobRow| r.result_sequence,
                |a| fetch_jobs_after(conn, a.copied(), n),
            )?,
            Table::WebhookEvents => pages(
                out,
                table,
                Batch::WebhookEvents,
                |r: &EventRow| r.id,
                |a| events_after(conn, a.copied().unwrap_or(i64::MIN)),
            )?,
        }
    }
    Ok(())
}

// One page of each table: up to `n` rows after the key `after` (from the start without one),
// in primary-key order, so each page is a range seek on the primary key's index.

fn links_after(
    conn: &mut SqliteConnection,
    after: Option<&String>,
    n: i64,
) -> QueryResult<Vec<LinkRow>> {
    use links as t;
    let mut q = t::table
        .select((
            t::link_id,
            t::token_sha256,
            t::rejected_at_ms,
            t::resolved_at_ms,
        ))
        .order(t::link_id)
        .limit(n)
        .into_boxed();
    if let Some(after) = after {
        q = q.filter(t::link_id.gt(after));
    }
    q.load(conn)
}

fn link_tokens_after(
    conn: &mut SqliteConnection,
    after: Option<&String>,
    n: i64,
) -> QueryResult<Vec<LinkTokenRow>> {
    use link_tokens as t;
    let mut q = t::table
        .select((
            t::link_id,
            t::key_id,
            t::nonce,
            t::ciphertext,
            t::given_at_ms,
        ))
        .order(t::link_id)
        .limit(n)
        .into_boxed();
    if let Some(after) = after {
        q = q.filter(t::link_id.gt(after));
    }
    q.load(conn)
}

fn accounts_after(
    conn: &mut SqliteConnection,
    after: Option<&String>,
    n: i64,
) -> QueryResult<Vec<AccountRow>> {
    use accounts as t;
    let mut q = t::table
        .select((t::account_id, t::link_id))
        .order(t::account_id)
        .limit(n)
        .into_boxed();
    if let Some(after) = after {
        q = q.filter(t::account_id.gt(after));
    }
    q.load(conn)
}

fn movements_after(
    conn: &mut SqliteConnection,
    after: Option<&(String, String)>,
    n: i64,
) -> QueryResult<Vec<MovementRow>> {
    use movements as t;
    let mut q = t::table
        .select((
            t::account_id,
            t::movement_id,
            t::link_id,
            t::post_date,
            t::body,
        ))
        .order((t::account_id, t::movement_id))
        .limit(n)
        .into_boxed();
    // After (account, movement) in key order, seeking the primary key's index as
    // `intent_accounts_after` does.
    if let Some((account, movement)) = after {
        q = q.filter(
            t::account_id
                .ge(account)
                .and(t::account_id.gt(account).or(t::movement_id.gt(movement))),
        );
    }
    q.load(conn)
}

fn intents_after(
    conn: &mut SqliteConnection,
    after: Option<&String>,
    n: i64,
) -> QueryResult<Vec<IntentRecord>> {
    use refresh_intents as t;
    let mut q = t::table
        .select((
            t::id,
            t::link_id,
            t::refresh_type,
            t::status,
            t::mfa_widget_token,
            t::created_at_ms,
            t::completed_at_ms,
            t::completed_sequence,
            t::reconciled_at_ms,
        ))
        .order(t::id)
        .limit(n)
        .into_boxed();
    if let Some(after) = after {
        q = q.filter(t::id.gt(after));
    }
    q.load(conn)
}

fn intent_accounts_after(
    conn: &mut SqliteConnection,
    after: Option<&(String, String)>,
    n: i64,
) -> QueryResult<Vec<IntentAccountRow>> {
    use intent_accounts as t;
    let mut q = t::table
        .select((t::refresh_intent_id, t::account_id, t::result_sequence))
        .order((t::refresh_intent_id, t::account_id))
        .limit(n)
        .into_boxed();
    // After (intent, account) in key order; the leading `>=` lets SQLite seek the primary
    // key's index instead of scanning it from its start.
    if let Some((intent, account)) = after {
        q = q.filter(
            t::refresh_intent_id.ge(intent).and(
                t::refresh_intent_id
                    .gt(intent)
                    .or(t::account_id.gt(account)),
            ),
        );
    }
    q.load(conn)
}

fn keys_after(
    conn: &mut SqliteConnection,
    after: Option<&String>,
    n: i64,
) -> QueryResult<Vec<KeyRow>> {
    use idempotency_keys as t;
    let mut q = t::table
        .select((
            t::idempotency_key,
            t::token_sha256,
            t::refresh_type,
            t::refresh_intent_id,
            t::joined_existing,
            t::created_at_ms,
        ))
        .order(t::idempotency_key)
        .limit(n)
        .into_boxed();
    if let Some(after) = after {
        q = q.filter(t::idempotency_key.gt(after));
    }
    q.load(conn)
}

fn key_series_after(
    conn: &mut SqliteConnection,
    after: Option<&String>,
    n: i64,
) -> QueryResult<Vec<KeySeriesRow>> {
    use fintoc_key_series as t;
    let mut q = t::table
        .select((t::idempotency_key, t::spent, t::updated_at_ms))
        .order(t::idempotency_key)
        .limit(n)
        .into_boxed();
    if let Some(after) = after {
        q = q.filter(t::idempotency_key.gt(after));
    }
    q.load(conn)
}

fn results_after(
    conn: &mut SqliteConnection,
    after: Option<i64>,
    n: i64,
) -> QueryResult<Vec<ResultRecord>> {
    results::table
        .select(results::all_columns)
        .filter(results::sequence.gt(after.unwrap_or(i64::MIN)))
        .order(results::sequence)
        .limit(n)
        .load(conn)
}

fn fetch_jobs_after(
    conn: &mut SqliteConnection,
    after: Option<i64>,
    n: i64,
) -> QueryResult<Vec<FetchJobRow>> {
    use fetch_jobs as t;
    t::table
        .select((
            t::result_sequence,
            t::account_id,
            t::link_id,
            t::event_id,
            t::new_movements,
            t::occurred_at_ms,
            t::attempts,
            t::due_at_ms,
            t::lease_owner,
            t::lease_until_ms,
        ))
        .filter(t::result_sequence.gt(after.unwrap_or(i64::MIN)))
        .order(t::result_sequence)
        .limit(n)
        .load(conn)
}

/// Sends a table page by page: `load` gets the key of the last row sent (none at first) and
/// answers the next page, empty at the end; then the table's `Done`.
fn pages<R, K>(
    out: &mpsc::Sender<Read>,
    table: Table,
    wrap: fn(Vec<R>) -> Batch,
    key: impl Fn(&R) -> K,
    mut load: impl FnMut(Option<&K>) -> QueryResult<Vec<R>>,
) -> Result<(), Stop> {
    let mut after = None;
    loop {
        let page = load(after.as_ref())?;
        let Some(last) = page.last() else { break };
        after = Some(key(last));
        send(out, wrap(page))?;
    }
    send(out, Batch::Done(table))
}

fn send(out: &mpsc::Sender<Read>, batch: Batch) -> Result<(), Stop> {
    out.blocking_send(Ok(batch)).map_err(|_| Stop::Gone)
}

/// The next raw events after id `after`: at most [`BATCH_EVENTS`], cut where their bodies
/// pass [`BATCH_EVENT_BYTES`] (but at least one). Bodies are sized from the record headers
/// first, so a batch of large bodies is never read whole before being cut.
fn events_after(conn: &mut SqliteConnection, after: i64) -> QueryResult<Vec<EventRow>> {
    let sizes: Vec<(i64, i64)> = webhook_events::table
        .select((webhook_events::id, sql::<BigInt>("length(body)")))
        .filter(webhook_events::id.gt(after))
        .order(webhook_events::id)
        .limit(BATCH_EVENTS as i64)
        .load(conn)?;
    let mut bytes = 0;
    let mut last = None;
    for (id, size) in sizes {
        bytes += size;
        if last.is_some() && bytes > BATCH_EVENT_BYTES {
            break;
        }
        last = Some(id);
    }
    let Some(last) = last else {
        return Ok(Vec::new());
    };
    use webhook_events as t;
    t::table
        .select((
            t::id,
            t::event_key,
            t::event_type,
            t::disposition,
            t::received_at_ms,
            t::body,
        ))
        .filter(t::id.gt(after).and(t::id.le(last)))
        .order(t::id)
        .load(conn)
}

#[cfg(test)]
mod tests;
