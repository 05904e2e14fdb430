//! SQLite storage behind one seam. Everything else talks to [`Store`]; nothing else touches
//! diesel. Writes go through [`Store::write`] to the single writer thread (group commit, see
//! `writer.rs`); reads go through [`Store::read`] to a small pool of read-only connections on
//! the blocking pool. Both carry the caller's tracing span. A second backend (PostgreSQL) fits
//! behind the same two entry points.
//!
//! Durability: WAL, and no request waiting on a commit is answered before the WAL holding it
//! has been fsynced. SQLite's own `synchronous=FULL` would fsync inside every COMMIT while it
//! holds the write lock; instead the writer commits with `synchronous=NORMAL` (the frames are
//! written, not synced) and a second thread fsyncs the WAL before answering, so the next
//! group's statements run during the fsync (`durable.rs`). Both survive `kill -9` and power
//! loss for everything acknowledged. Readers may see a committed row a moment before it is
//! durable, so the result log is only ever streamed up to the hub's high water, which moves
//! after the fsync.
//!
//! A SQLite store belongs to one process: [`Store::open`] takes an exclusive lock beside the
//! file first and refuses a second opener (`lock.rs`).

mod checkpoint;
mod durable;
mod ingest;
mod intents;
pub mod links;
pub mod lock;
mod log;
pub mod models;
pub mod retention;
#[rustfmt::skip]
mod schema;
mod statements;
mod writer;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel::sqlite::SqliteConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tracing::Instrument;

pub use ingest::{IngestOutcome, ingest_event, process_held};
pub use intents::{
    NewIntent, complete_timed_out, get_intent, mark_reconciled, pending_intents_due,
    register_intent,
};
pub use log::{Counts, LogBounds, Target, counts, log_bounds, results_after};
pub use models::ResultRow;
pub use writer::Tx;

use crate::clock::Clock;
use crate::hub::Hub;
use crate::metrics::Metrics;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// Read connections: watchers' catch-up and unary reads. WAL lets them run beside the writer.
const READ_POOL_SIZE: u32 = 4;

/// Storage failures. None of them is the caller's fault; they map to INTERNAL / 500.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] diesel::result::Error),
    #[error("database connection error: {0}")]
    Connection(#[from] diesel::ConnectionError),
    #[error("database pool error: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    #[error(transparent)]
    Locked(#[from] lock::LockError),
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("a storage task panicked")]
    Panicked,
}

impl From<crate::domain::status::UnknownValue> for StoreError {
    fn from(e: crate::domain::status::UnknownValue) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Link ids whose refresh-intent create call is in flight: account events for them are held
/// until the intent is known (see `domain::correlate`). Shared with the RequestRefresh path;
/// read and changed only inside writer jobs, so its state is ordered with every commit.
pub type InFlight = Arc<Mutex<std::collections::HashSet<String>>>;

/// The handle to the database: cheap to clone.
#[derive(Clone)]
pub struct Store {
    writer: writer::Writer,
    readers: Pool<ConnectionManager<SqliteConnection>>,
    in_flight: InFlight,
    checkpointer: Arc<Mutex<checkpoint::Checkpointer>>,
    /// This process's claim on the file, released by [`Store::close`] or when the last handle
    /// drops. `None` for an in-memory database.
    file_lock: Arc<Mutex<Option<lock::DbLock>>>,
}

#[derive(Debug)]
struct ReadOnly;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for ReadOnly {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
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

impl Store {
    /// Opens (creating if needed) and migrates the database at `url`, and starts the writer.
    /// Committed results are handed to `hub` right after each commit; each group commit's
    /// size and time go to `metrics`. Refused with [`StoreError::Locked`], before anything
    /// touches the file, while another store (in any process) has it open.
    pub fn open(
        url: &str,
        hub: Arc<Hub>,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> StoreResult<Store> {
        // First: a second process must not even run migrations on a file that is in use.
        let file_lock = lock::lock_exclusive(url)?;
        configure_sqlite();
        let mut conn = SqliteConnection::establish(url)?;
        // journal_mode persists in the file; the rest is per connection. synchronous=NORMAL
        // because the writer's syncer fsyncs the WAL itself (see the module docs). temp_store=MEMORY
        // keeps the writer's savepoint (statement) journals in memory: on a file they cost a
        // quarter of the intake's time in pwrite calls. Checkpoints run on their own thread.
        // The page cache stays at SQLite's default (2 MB): every commit walks it once, so a
        // larger one made each commit slower without saving reads (the hot pages fit).
        conn.batch_execute(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; \
             PRAGMA busy_timeout = 5000; PRAGMA temp_store = MEMORY; \
             PRAGMA wal_autocheckpoint = 0;",
        )?;
        conn.run_pending_migrations(MIGRATIONS)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        let readers = Pool::builder()
            .max_size(READ_POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(Duration::from_secs(10))
            .connection_customizer(Box::new(ReadOnly))
            .build(ConnectionManager::new(url))?;
        let in_flight = InFlight::default();
        let checkpointer = Arc::new(Mutex::new(checkpoint::Checkpointer::start(url)?));
        let writer = writer::Writer::start(conn, hub, clock, metrics)?;
        Ok(Store {
            writer,
            readers,
            in_flight,
            checkpointer,
            file_lock: Arc::new(Mutex::new(file_lock)),
        })
    }

    /// Runs `f` inside the next group commit. It resolves once the transaction holding its
    /// work is durable (or failed). `f` runs under its own savepoint: an error from it undoes
    /// only its own work and is returned to this caller alone.
    pub async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.writer.submit(f).await
    }

    /// Like [`Store::write`] for work that may run twice (it must only touch the database,
    /// like ingesting a webhook): it is grouped with its neighbours under one savepoint,
    /// which is what makes the intake's group commit cheap.
    pub async fn write_repeatable<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut Tx<'_>) -> StoreResult<T> + Send + 'static,
    {
        self.writer.submit_repeatable(f).await
    }

    /// Runs a read on a pooled read-only connection, off the async workers.
    pub async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut SqliteConnection) -> StoreResult<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let mut conn = pool.get()?;
            f(&mut conn)
        })
        .instrument(tracing::Span::current())
        .await
        .map_err(|_| StoreError::Panicked)?
    }

    /// Whether the database answers a trivial query (readiness).
    pub async fn ping(&self) -> bool {
        self.read(|conn| {
            conn.batch_execute("SELECT 1")?;
            Ok(())
        })
        .await
        .is_ok()
    }

    /// The shared set of links with a create call in flight.
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    /// Stops the writer after the work already queued is committed, then gives up the file's
    /// lock: nothing writes through this store any more, so the next process (or a new store
    /// in this one) may take over even while stray handles to this one linger.
    pub async fn close(&self) {
        self.writer.close().await;
        let checkpointer = self.checkpointer.clone();
        let _ =
            tokio::task::spawn_blocking(move || checkpointer.lock().expect("checkpointer").stop())
                .await;
        self.file_lock.lock().expect("file lock").take();
    }
}

#[cfg(test)]
mod tests {
    use diesel::prelude::*;
    use diesel::sql_types::BigInt;

    use super::*;

    #[derive(QueryableByName)]
    struct Seq {
        #[diesel(sql_type = BigInt)]
        sequence: i64,
    }

    fn append(conn: &mut SqliteConnection) -> i64 {
        conn.batch_execute(
            "INSERT INTO results (account_id, link_id, refresh_intent_id, status, new_movements, \
             public_error, event_id, occurred_at_ms, committed_at_ms) \
             VALUES ('acc', '', '', 'succeeded', 0, '', 'evt', 0, 0)",
        )
        .unwrap();
        diesel::sql_query("SELECT last_insert_rowid() AS sequence")
            .get_result::<Seq>(conn)
            .unwrap()
            .sequence
    }

    /// The CHECK rebuild copies the tables; a log that retention emptied must still never
    /// hand out a sequence twice.
    #[test]
    fn rebuilding_the_tables_keeps_rows_and_the_sequence_high_water() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("m.db").to_string_lossy().into_owned();
        let mut conn = SqliteConnection::establish(&url).unwrap();
        for _ in 0..2 {
            conn.run_next_migration(MIGRATIONS).unwrap();
        }
        for _ in 0..5 {
            append(&mut conn);
        }
        conn.batch_execute(
            "DELETE FROM results; \
             INSERT INTO webhook_events (event_key, disposition, received_at_ms, body) \
             VALUES ('evt_kept', 'held', 7, x'7b7d');",
        )
        .unwrap();
        conn.run_pending_migrations(MIGRATIONS).unwrap();
        assert_eq!(append(&mut conn), 6, "sequences continue after the rebuild");
        let held: Vec<(String, String)> = schema::webhook_events::table
            .select((
                schema::webhook_events::event_key,
                schema::webhook_events::disposition,
            ))
            .load(&mut conn)
            .unwrap();
        assert_eq!(held, vec![("evt_kept".into(), "held".into())]);
        let bad = conn.batch_execute(
            "INSERT INTO webhook_events (event_key, disposition, received_at_ms, body) \
             VALUES ('evt_bad', 'bogus', 7, x'00')",
        );
        assert!(bad.is_err(), "the closed set is still enforced");
    }
}
