//! SQLite storage behind one seam. Everything else talks to [`Store`]; nothing else touches
//! diesel. Writes go through [`Store::write`] to the single writer thread (group commit, see
//! `writer.rs`); reads go through [`Store::read`] to a small pool of read-only connections on
//! the blocking pool. Both carry the caller's tracing span. A second backend (PostgreSQL) fits
//! behind the same two entry points.
//!
//! Durability: WAL with `synchronous=FULL`, so a commit has reached the disk (the WAL is
//! fsynced) before any request waiting on it is answered. NORMAL would survive a process
//! crash but can lose the last commits on power loss; we acknowledge webhooks, so FULL.

mod checkpoint;
mod ingest;
mod intents;
pub mod links;
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
}

#[derive(Debug)]
struct ReadOnly;

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for ReadOnly {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `url`, and starts the writer.
    /// Committed results are handed to `hub` right after each commit.
    pub fn open(url: &str, hub: Arc<Hub>, clock: Clock) -> StoreResult<Store> {
        let mut conn = SqliteConnection::establish(url)?;
        // journal_mode persists in the file; the rest is per connection. temp_store=MEMORY
        // keeps the writer's savepoint (statement) journals in memory: on a file they cost a
        // quarter of the intake's time in pwrite calls. Checkpoints run on their own thread.
        conn.batch_execute(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
             PRAGMA busy_timeout = 5000; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -16000; \
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
        let writer = writer::Writer::start(conn, hub, clock)?;
        Ok(Store {
            writer,
            readers,
            in_flight,
            checkpointer,
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

    /// Stops the writer after the work already queued is committed.
    pub async fn close(&self) {
        self.writer.close().await;
        let checkpointer = self.checkpointer.clone();
        let _ =
            tokio::task::spawn_blocking(move || checkpointer.lock().expect("checkpointer").stop())
                .await;
    }
}
