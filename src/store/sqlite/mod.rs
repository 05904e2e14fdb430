//! The SQLite backend: one file, one process. Writes go to the single writer thread (group
//! commit, `writer.rs`); reads go to a small pool of read-only connections on the blocking
//! pool. Both carry the caller's tracing span.
//!
//! Durability: WAL, and no request waiting on a commit is answered before the WAL holding it
//! has been fsynced. SQLite's own `synchronous=FULL` would fsync inside every COMMIT while it
//! holds the write lock; instead the writer commits with `synchronous=NORMAL` (the frames are
//! written, not synced) and a second thread fsyncs the WAL before answering, so the next
//! group's statements run during the fsync (`durable.rs`). Both survive `kill -9` and power
//! loss for everything acknowledged. Readers may see a committed row a moment before it is
//! durable, so every read answers only once what it could have seen is durable
//! (`progress.rs`), and the result log is only ever read up to the durable high water, which
//! moves after the fsync.
//!
//! A SQLite store belongs to one process: opening it takes an exclusive lock beside the file
//! first and refuses a second opener (`lock.rs`).
//!
//! The marks of create calls in flight live here, in memory: this process is the only
//! writer, and they are read and changed only inside writer jobs (or before one is queued),
//! so their state is ordered with every commit. No create call survives a restart, so the
//! events held for one are settled when the store opens.

mod checkpoint;
mod durable;
pub(super) mod export;
mod ingest;
mod intents;
mod links;
mod lock;
mod log;
mod models;
mod movements;
mod progress;
mod retention;
#[rustfmt::skip]
mod schema;
mod statements;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::decide::LogTimes;
use async_trait::async_trait;
use bytes::Bytes;
use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tracing::Instrument;

use super::seam::{Backend, SharedTurn};
use super::{
    Counts, DueIntent, FetchClaim, FetchDone, FetchJob, FetchOutcome, IdempotencyRecord,
    IngestOutcome, KeyRecord, KnownLink, LinkSnapshot, LinkState, LinksFrom, LogBounds, LogPage,
    MovementsPage, Pruned, Publish, SealedToken, StoreError, StoreResult,
};
use crate::clock::{Clock, Millis};
use crate::config::Config;
use crate::domain::{IntentView, NewIntent, RefreshType, ResultRow, Target};
use crate::fintoc::event::{Decoded, decode};
use crate::metrics::Metrics;
use durable::SyncFn;
use progress::Progress;
use writer::Tx;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");

/// How long a connection waits for a lock another one holds before it gives up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read connections: watchers' catch-up and unary reads. WAL lets them run beside the writer.
const READ_POOL_SIZE: u32 = 4;

/// Link ids whose refresh-intent create call is in flight: account events for them are held
/// until the intent is known (see `domain::correlate`).
/// The create calls in flight: each Link's mark and the call (holder) it belongs to.
type InFlight = Arc<Mutex<HashMap<String, String>>>;

/// Removes the create mark of `link_id` if it is still `holder`'s (another call's may have
/// replaced it: that one stays).
fn clear_mark(in_flight: &InFlight, link_id: &str, holder: &str) {
    let mut marks = in_flight.lock().expect("in-flight lock");
    if marks.get(link_id).is_some_and(|h| h == holder) {
        marks.remove(link_id);
    }
}

#[derive(Clone)]
pub(super) struct SqliteStore {
    writer: writer::Writer,
    readers: Pool<ConnectionManager<SqliteConnection>>,
    in_flight: InFlight,
    /// The newest sequence whose commit is durable (and handed to the sink).
    durable: Arc<AtomicI64>,
    /// How far commits have got, and whether storage has stopped (`progress.rs`).
    progress: Arc<Progress>,
    checkpointer: Arc<Mutex<checkpoint::Checkpointer>>,
    /// This process's claim on the file, released by `close` or when the last handle drops.
    /// `None` for an in-memory database.
    file_lock: Arc<Mutex<Option<lock::DbLock>>>,
}

#[derive(Debug)]
struct ReadOnly;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for ReadOnly {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA query_only = ON;",
            BUSY_TIMEOUT.as_millis()
        ))
        .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// Process-wide SQLite settings, applied once before the first connection opens.
///
/// The bundled SQLite is built "serialized": every call takes a per-connection mutex, and
/// every allocation takes a global one to keep memory statistics. Neither buys anything here:
/// each connection is used by one thread at a time (the writer owns its own; the pool lends
/// the others out one at a time), and nothing reads SQLite's memory statistics. Off, the
/// writer spends ~5% fewer instructions per event (callgrind). If SQLite was already initialized (a
/// connection opened elsewhere first), the calls are refused and the safe defaults stay.
fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sqlite3_config may only run before sqlite3_initialize and with no other
        // SQLite call in flight; the Once makes this the first SQLite call of this path, and
        // SQLite answers SQLITE_MISUSE (changing nothing) if it was initialized already.
        unsafe {
            use libsqlite3_sys as ffi;
            let threading = ffi::sqlite3_config(ffi::SQLITE_CONFIG_MULTITHREAD);
            let memstatus = ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as std::ffi::c_int);
            if threading != ffi::SQLITE_OK || memstatus != ffi::SQLITE_OK {
                tracing::debug!(
                    threading,
                    memstatus,
                    "SQLite was initialized already; keeping its defaults"
                );
            }
        }
    });
}

impl SqliteStore {
    /// Opens the file at `config.database_url` (its WAL bounded by
    /// `--sqlite-wal-limit-bytes`) and starts its writer.
    pub(super) async fn open(
        config: &Config,
        metrics: Arc<Metrics>,
        publish: Publish,
    ) -> StoreResult<SqliteStore> {
        let (url, clock) = (&config.database_url, config.clock.clone());
        Self::open_with(
            url,
            clock,
            metrics,
            publish,
            None,
            config.sqlite_wal_limit_bytes,
            config.link_token_keys.is_some(),
        )
        .await
    }

    /// [`SqliteStore::open`], with the way commits are made durable given (tests hold the
    /// fsync back by hand); `None` fsyncs the WAL.
    async fn open_with(
        url: &str,
        clock: Clock,
        metrics: Arc<Metrics>,
        publish: Publish,
        sync: Option<SyncFn>,
        wal_limit: u64,
        movements: bool,
    ) -> StoreResult<SqliteStore> {
        let url = url.to_owned();
        let store = blocking(move || {
            Self::open_blocking(&url, clock, metrics, publish, sync, wal_limit, movements)
        })
        .await?;
        let bounds = store.log_bounds().await?;
        store.durable.fetch_max(bounds.newest, Ordering::AcqRel);
        // No create call survives a restart, so events held for one can be settled now.
        store.write(ingest::process_held).await?;
        Ok(store)
    }

    fn open_blocking(
        url: &str,
        clock: Clock,
        metrics: Arc<Metrics>,
        publish: Publish,
        sync: Option<SyncFn>,
        wal_limit: u64,
        movements: bool,
    ) -> StoreResult<SqliteStore> {
        // First: a second process must not even run migrations on a file that is in use.
        let file_lock = lock::lock_exclusive(url).map_err(|e| StoreError::Locked(e.to_string()))?;
        configure_sqlite();
        let mut conn = SqliteConnection::establish(url)?;
        // journal_mode persists in the file; the rest is per connection. synchronous=NORMAL
        // because the writer's syncer fsyncs the WAL itself (see the module docs). temp_store=MEMORY
        // keeps the writer's savepoint (statement) journals in memory: on a file they cost a
        // quarter of the intake's time in pwrite calls. Checkpoints run on their own thread.
        // The page cache stays at SQLite's default (2 MB): every commit walks it once, so a
        // larger one made each commit slower without saving reads (the hot pages fit).
        conn.batch_execute(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA busy_timeout = {}; PRAGMA temp_store = MEMORY; \
             PRAGMA wal_autocheckpoint = 0;",
            BUSY_TIMEOUT.as_millis()
        ))?;
        conn.run_pending_migrations(MIGRATIONS)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        let readers = Pool::builder()
            .max_size(READ_POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .connection_customizer(Box::new(ReadOnly))
            .build(ConnectionManager::new(url))?;
        let in_flight = InFlight::default();
        let durable = Arc::new(AtomicI64::new(0));
        // The durable high water moves before the sink hears of the rows: a reader capped by
        // it never shows what the disk could still lose, and never less than the hub has.
        let sink: Publish = {
            let durable = durable.clone();
            Arc::new(move |rows: &[Arc<ResultRow>]| {
                if let Some(last) = rows.last() {
                    durable.fetch_max(last.sequence, Ordering::AcqRel);
                }
                publish(rows);
            })
        };
        let checkpointer = checkpoint::Checkpointer::start(url, metrics.clone())?;
        let bound = checkpointer.bound(durable::wal_path(&mut conn)?, wal_limit, metrics.clone());
        conn.batch_execute(&bound.size_limit_pragma())?;
        let checkpointer = Arc::new(Mutex::new(checkpointer));
        let progress = Arc::new(Progress::new());
        let writer = writer::Writer::start(
            conn,
            sync,
            bound,
            in_flight.clone(),
            sink,
            clock,
            metrics,
            progress.clone(),
            movements,
        )?;
        Ok(SqliteStore {
            writer,
            readers,
            in_flight,
            durable,
            progress,
            checkpointer,
            file_lock: Arc::new(Mutex::new(file_lock)),
        })
    }

    /// Runs `f` inside the next group commit; resolves once the commit holding its work is
    /// durable (or failed). `f` runs under its own savepoint.
    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.writer.submit(f).await
    }

    /// Runs a read on a pooled read-only connection, off the async workers, and answers once
    /// every commit it could have seen is durable (`progress.rs`).
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        let progress = self.progress.clone();
        let (value, seen) = blocking(move || {
            let mut conn = pool.get()?;
            let value = f(&mut conn)?;
            // Noted after the queries: it covers every commit they could have seen.
            Ok((value, progress.taken()))
        })
        .await?;
        self.progress.until_settled(seen).await?;
        Ok(value)
    }

    fn durable(&self) -> i64 {
        self.durable.load(Ordering::Acquire)
    }
}

#[async_trait]
impl Backend for SqliteStore {
    async fn ingest_webhook(
        &self,
        body: Bytes,
        decoded: Decoded,
        received_at_ms: Millis,
    ) -> StoreResult<IngestOutcome> {
        // Repeatable: it only touches the database, so it may share a savepoint with its
        // neighbours (the cheap path of the group commit) and run again if one of them fails.
        self.writer
            .submit_repeatable(move |tx| ingest::ingest_event(tx, &body, &decoded, received_at_ms))
            .await
    }

    async fn ingest_reconciled(
        &self,
        bodies: Vec<Bytes>,
        received_at_ms: Millis,
    ) -> StoreResult<Vec<IngestOutcome>> {
        self.write(move |tx| {
            bodies
                .iter()
                .map(|body| ingest::ingest_event(tx, body, &decode(body), received_at_ms))
                .collect()
        })
        .await
    }

    async fn mark_create(&self, link_id: &str, holder: &str) -> StoreResult<()> {
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .insert(link_id.to_owned(), holder.to_owned());
        Ok(())
    }

    async fn abandon_create(&self, link_id: String, holder: String) -> StoreResult<usize> {
        self.write(move |tx| {
            clear_mark(tx.in_flight(), &link_id, &holder);
            ingest::process_held(tx)
        })
        .await
    }

    async fn register_intent(
        &self,
        new: NewIntent,
        key: Option<KeyRecord>,
        mark: Option<String>,
    ) -> StoreResult<IntentView> {
        self.write(move |tx| {
            if let Some(holder) = &mark {
                clear_mark(tx.in_flight(), &new.link_id, holder);
            }
            intents::register_intent(tx, &new)?;
            // The events held while it was being created can be attributed now.
            ingest::process_held(tx)?;
            if let Some(mut key) = key {
                key.refresh_intent_id = new.id.clone();
                links::remember_key(tx, &key)?;
            }
            intents::get_intent(tx.conn, &new.id)?
                .ok_or_else(|| StoreError::Corrupt(format!("intent {} vanished", new.id)))
        })
        .await
    }

    async fn upsert_link(
        &self,
        link_id: String,
        token_sha256: String,
        accounts: Vec<String>,
    ) -> StoreResult<()> {
        self.write(move |tx| links::upsert_link(tx, &link_id, &token_sha256, &accounts))
            .await
    }

    async fn remember_key(&self, key: KeyRecord) -> StoreResult<()> {
        self.write(move |tx| links::remember_key(tx, &key)).await
    }

    async fn fintoc_keys_spent(&self, key: String) -> StoreResult<u64> {
        self.read(move |c| links::fintoc_keys_spent(c, &key)).await
    }

    async fn remember_fintoc_keys_spent(&self, key: String, spent: u64) -> StoreResult<()> {
        self.write(move |tx| links::remember_fintoc_keys_spent(tx, &key, spent))
            .await
    }

    async fn complete_timed_out(&self, id: String) -> StoreResult<Option<IntentView>> {
        self.write(move |tx| intents::complete_timed_out(tx, &id))
            .await
    }

    async fn mark_reconciled(&self, ids: Vec<String>) -> StoreResult<()> {
        self.write(move |tx| intents::mark_reconciled(tx, &ids))
            .await
    }

    async fn prune(
        &self,
        cutoff_ms: Millis,
        key_cutoff_ms: Millis,
        limit: i64,
    ) -> StoreResult<Pruned> {
        self.write(move |tx| retention::prune(tx, cutoff_ms, key_cutoff_ms, limit))
            .await
    }

    async fn get_intent(&self, id: String) -> StoreResult<Option<IntentView>> {
        self.read(move |c| intents::get_intent(c, &id)).await
    }

    async fn results_after(&self, target: Target, after: i64, limit: i64) -> StoreResult<LogPage> {
        let upto = self.durable();
        self.read(move |c| {
            // One snapshot for both: what retention had pruned is known for these very rows.
            c.transaction(|c| {
                let rows = log::results_after(c, &target, after, upto, limit)?;
                let pruned_through = log::log_bounds(c)?.pruned_through();
                Ok(LogPage {
                    rows,
                    pruned_through,
                })
            })
        })
        .await
    }

    async fn log_bounds(&self) -> StoreResult<LogBounds> {
        self.read(log::log_bounds).await
    }

    async fn log_times(&self, at_ms: Millis) -> StoreResult<LogTimes> {
        self.read(move |c| log::log_times(c, at_ms)).await
    }

    async fn link_by_token(&self, token_sha256: String) -> StoreResult<Option<KnownLink>> {
        self.read(move |c| links::link_by_token(c, &token_sha256))
            .await
    }

    async fn link_by_id(&self, link_id: String) -> StoreResult<Option<KnownLink>> {
        self.read(move |c| links::link_by_id(c, &link_id)).await
    }

    async fn link_state(
        &self,
        link_id: String,
        refresh_type: RefreshType,
    ) -> StoreResult<LinkState> {
        self.read(move |c| {
            Ok(LinkState {
                pending: links::pending_intent(c, &link_id)?,
                last_success: links::last_success(c, &link_id, refresh_type)?,
            })
        })
        .await
    }

    async fn link_snapshots(&self, from: LinksFrom, limit: i64) -> StoreResult<Vec<LinkSnapshot>> {
        self.read(move |c| links::snapshots(c, &from, limit)).await
    }

    async fn idempotency(
        &self,
        key: String,
    ) -> StoreResult<Option<(IdempotencyRecord, Option<IntentView>)>> {
        self.read(move |c| {
            let Some(record) = links::idempotency(c, &key)? else {
                return Ok(None);
            };
            let intent = intents::get_intent(c, &record.refresh_intent_id)?;
            Ok(Some((record, intent)))
        })
        .await
    }

    async fn pending_intents_due(&self, created_before_ms: Millis) -> StoreResult<Vec<DueIntent>> {
        self.read(move |c| intents::pending_intents_due(c, created_before_ms))
            .await
    }

    async fn counts(&self) -> StoreResult<Counts> {
        self.read(log::counts).await
    }

    fn is_healthy(&self) -> bool {
        !self.progress.has_failed()
    }

    async fn failed(&self) {
        self.progress.failed().await;
    }

    fn break_for_test(&self) {
        self.writer.break_for_test();
    }

    async fn keep_token(
        &self,
        link_id: String,
        sealed: SealedToken,
        given_at_ms: Millis,
    ) -> StoreResult<()> {
        self.write(move |tx| movements::keep_token(tx, &link_id, &sealed, given_at_ms))
            .await
    }

    async fn reseal_token(
        &self,
        link_id: String,
        from_key: String,
        sealed: SealedToken,
    ) -> StoreResult<()> {
        self.write(move |tx| movements::reseal_token(tx, &link_id, &from_key, &sealed))
            .await
    }

    async fn forget_link(&self, link_id: String) -> StoreResult<bool> {
        self.write(move |tx| movements::forget_link(tx, &link_id))
            .await
    }

    async fn token_keys(&self) -> StoreResult<Vec<(String, i64)>> {
        self.read(movements::token_keys).await
    }

    async fn drop_tokens_of_key(&self, key_id: String) -> StoreResult<usize> {
        self.write(move |tx| movements::drop_tokens_of_key(tx, &key_id))
            .await
    }

    async fn drop_expired_tokens(&self, given_before_ms: Millis) -> StoreResult<usize> {
        self.write(move |tx| movements::drop_expired_tokens(tx, given_before_ms))
            .await
    }

    async fn claim_fetches(
        &self,
        owner: String,
        lease_ms: Millis,
    ) -> StoreResult<Option<FetchClaim>> {
        self.write(move |tx| movements::claim(tx, &owner, lease_ms))
            .await
    }

    async fn finish_fetches(
        &self,
        owner: String,
        jobs: Vec<FetchJob>,
        outcome: FetchOutcome,
    ) -> StoreResult<FetchDone> {
        self.write(move |tx| movements::finish(tx, &owner, &jobs, outcome))
            .await
    }

    async fn list_movements(
        &self,
        account_id: String,
        after: Option<(String, String)>,
        limit: i64,
    ) -> StoreResult<Option<MovementsPage>> {
        let upto = self.durable();
        self.read(move |c| movements::list(c, &account_id, &after, limit, upto))
            .await
    }

    async fn movements_settled(&self, intent_id: String) -> StoreResult<Option<i64>> {
        self.read(move |c| movements::settled(c, &intent_id)).await
    }

    async fn ping(&self) -> bool {
        self.read(|conn| {
            conn.batch_execute("SELECT 1")?;
            Ok(())
        })
        .await
        .is_ok()
    }

    /// Stops the writer after the work already queued is committed, then gives up the file's
    /// lock: nothing writes through this store any more, so the next process (or a new store
    /// in this one) may take over even while stray handles to this one linger.
    async fn close(&self) {
        self.writer.close().await;
        let checkpointer = self.checkpointer.clone();
        let _ = blocking(move || {
            checkpointer.lock().expect("checkpointer").stop();
            Ok(())
        })
        .await;
        self.file_lock.lock().expect("file lock").take();
    }
    async fn published_through(&self) -> StoreResult<i64> {
        Ok(self.log_bounds().await?.newest)
    }

    /// One process is all there is: its in-process line is the whole turn.
    async fn link_turn(&self, _: &str, _: Instant) -> StoreResult<Option<SharedTurn>> {
        Ok(None)
    }

    /// The one process runs the background work, always.
    fn leads(&self) -> bool {
        true
    }

    async fn leadership_lost(&self) {
        std::future::pending().await
    }

    /// Held events of a process that died are settled when the file is opened.
    async fn settle_abandoned_creates(&self) -> StoreResult<usize> {
        Ok(0)
    }

    fn can_commit(&self) -> bool {
        self.is_healthy()
    }
}

/// The one bridge from async callers to blocking SQLite work: the blocking pool, with the
/// caller's tracing span carried across.
async fn blocking<T, F>(f: F) -> StoreResult<T>
where
    T: Send + 'static,
    F: FnOnce() -> StoreResult<T> + Send + 'static,
{
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        f()
    })
    .instrument(tracing::Span::current())
    .await
    .map_err(|e| StoreError::TaskFailed(e.to_string()))?
}

#[cfg(test)]
pub(crate) mod tests;
