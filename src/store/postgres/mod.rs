//! The PostgreSQL backend: any number of replicas share one database and act as one service.
//!
//! - **One ordered, gap-free log.** Every transaction that writes the log or the intents'
//!   progress locks the one row of `log_counter` first and takes its sequences from it, so
//!   the log commits in sequence order cluster-wide: a reader can never see n+1 while n is
//!   still to come. Each replica funnels those writes through one task that batches them
//!   into group commits (`writer.rs`), so the lock is taken once per batch.
//! - **Durable before answered.** Connections run with `synchronous_commit = on`: a COMMIT
//!   returns once its WAL is flushed; only then is the caller answered.
//! - **Watchers on any replica.** Each replica tails the log (`tail.rs`): LISTEN/NOTIFY wakes
//!   it, a periodic poll covers notifications lost while its connection was down, and every
//!   entry is handed to the local sink (the hub) once, in order. Reads of the log are capped
//!   at what the tail has handed over, so a cursor taken on one replica is safe on any other.
//! - **"Once" cluster-wide.** Dedupe by event id, idempotency keys, cooldowns and holds live
//!   in the shared tables; a Link's RequestRefresh work takes turns under a PostgreSQL
//!   advisory lock; the marks of create calls in flight are rows with a lease
//!   (`creates_in_flight`), so an event landing on another replica is still held, and a
//!   crashed replica's marks expire; background work runs on the one replica holding the
//!   leader lock (`lead.rs`), and moves when that replica dies.
//! - **PostgreSQL away.** Every failure to reach it is [`StoreError::Unavailable`] (webhooks
//!   500, RPCs UNAVAILABLE, not ready); pools, the tail and the leader lock reconnect by
//!   themselves when it is back.

mod connect;
pub(super) mod import;
mod ingest;
mod intents;
mod lead;
mod links;
mod log;
mod models;
mod retention;
#[rustfmt::skip]
mod schema;
mod statements;
mod tail;
mod tls;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tokio_util::sync::CancellationToken;

use connect::Pool;
pub use connect::{check_url, redacted};
pub use lead::Turn;

use super::{
    Counts, DueIntent, IdempotencyRecord, IngestOutcome, KeyRecord, KnownLink, LinkState,
    LogBounds, LogPage, Pruned, Publish, StoreError, StoreResult,
};
use crate::clock::{Clock, Millis};
use crate::domain::{IntentView, NewIntent, RefreshType, Target};
use crate::fintoc::event::Decoded;
use crate::metrics::Metrics;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Connections for reads and short writes (RPCs, watchers' catch-up, link turns).
const POOL_SIZE: u32 = 16;

/// How long a create call's mark holds events back at most: longer than any create call may
/// take (`--request-timeout` caps them, 30 s by default), short enough that the events held
/// for a replica that died mid-call are settled within minutes.
pub(super) const CREATE_LEASE_MS: Millis = 2 * 60 * 1000;

/// Whether `url` selects this backend.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

#[derive(Clone)]
pub(super) struct PgStore {
    pool: Pool,
    writer: writer::Writer,
    /// The newest sequence the tail has handed to the sink: reads of the log stop there.
    tailed: Arc<AtomicI64>,
    leader: lead::Leader,
    clock: Clock,
    stop: CancellationToken,
    /// Cancelled when [`PgStore::close`] begins: tasks ending after it are not failures.
    closing: CancellationToken,
    /// Cancelled if one of this replica's own tasks (writer, tail, leader) ends on its own:
    /// without it the replica would be half alive (see [`PgStore::failed`]).
    broken: CancellationToken,
}

/// Runs one of the store's tasks; if it ends before the store is closing (a panic, a bug),
/// the store reports itself failed, so the service stops instead of serving half alive.
fn vital<F>(name: &'static str, task: F, closing: CancellationToken, broken: CancellationToken)
where
    F: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let ended = tokio::spawn(task).await;
        if !closing.is_cancelled() {
            tracing::error!(task = name, outcome = ?ended.err(), "a storage task stopped");
            broken.cancel();
        }
    });
}

impl PgStore {
    pub(super) async fn open(
        url: &str,
        clock: Clock,
        metrics: Arc<Metrics>,
        publish: Publish,
    ) -> StoreResult<PgStore> {
        migrate(url).await?;
        let pool = connect::pool(url, POOL_SIZE).await.map_err(unavailable)?;
        let stop = CancellationToken::new();
        let newest = {
            let mut conn = get(&pool).await?;
            log::log_bounds(&mut conn).await?.newest
        };
        // Watchers on this replica start from the log as it is now; the tail takes it from
        // there, so everything committed later (by any replica) reaches the sink once.
        let tailed = Arc::new(AtomicI64::new(newest));
        let (closing, broken) = (CancellationToken::new(), CancellationToken::new());
        let tail = tail::run(
            url.to_owned(),
            pool.clone(),
            tailed.clone(),
            publish,
            stop.clone(),
        );
        vital("log tail", tail, closing.clone(), broken.clone());
        let (writer, task) =
            writer::Writer::new(url.to_owned(), clock.clone(), metrics, stop.clone());
        vital("writer", task, closing.clone(), broken.clone());
        let (leader, task) = lead::Leader::new(url.to_owned(), stop.clone());
        vital("leader lock", task, closing.clone(), broken.clone());
        Ok(PgStore {
            pool,
            writer,
            tailed,
            leader,
            clock,
            stop,
            closing,
            broken,
        })
    }

    async fn conn(&self) -> StoreResult<bb8::PooledConnection<'_, Manager>> {
        get(&self.pool).await
    }

    pub(super) async fn ingest_webhook(
        &self,
        body: Bytes,
        decoded: Decoded,
        received_at_ms: Millis,
    ) -> StoreResult<IngestOutcome> {
        self.writer
            .ingest(vec![(body, decoded)], received_at_ms)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("an ingest answered nothing".into()))
    }

    pub(super) async fn ingest_reconciled(
        &self,
        bodies: Vec<Bytes>,
        received_at_ms: Millis,
    ) -> StoreResult<Vec<IngestOutcome>> {
        let events = bodies
            .into_iter()
            .map(|body| {
                let decoded = crate::fintoc::event::decode(&body);
                (body, decoded)
            })
            .collect();
        self.writer.ingest(events, received_at_ms).await
    }

    pub(super) async fn mark_create(&self, link_id: &str) -> StoreResult<()> {
        let expires = self.clock.now_ms() + CREATE_LEASE_MS;
        let mut conn = self.conn().await?;
        links::mark_create(&mut conn, link_id, expires).await
    }

    pub(super) async fn abandon_create(&self, link_id: String) -> StoreResult<usize> {
        self.writer.settle(Some(link_id)).await
    }

    pub(super) async fn register_intent(
        &self,
        new: NewIntent,
        key: Option<KeyRecord>,
    ) -> StoreResult<IntentView> {
        self.writer.register(new, key).await
    }

    pub(super) async fn upsert_link(
        &self,
        link_id: String,
        token_sha256: String,
        accounts: Vec<String>,
    ) -> StoreResult<()> {
        let now = self.clock.now_ms();
        let mut conn = self.conn().await?;
        links::upsert_link(&mut conn, &link_id, &token_sha256, &accounts, now).await
    }

    pub(super) async fn remember_key(&self, key: KeyRecord) -> StoreResult<()> {
        let now = self.clock.now_ms();
        let mut conn = self.conn().await?;
        links::remember_key(&mut conn, &key, now).await
    }

    pub(super) async fn fintoc_keys_spent(&self, key: String) -> StoreResult<u64> {
        let mut conn = self.conn().await?;
        links::fintoc_keys_spent(&mut conn, &key).await
    }

    pub(super) async fn remember_fintoc_keys_spent(
        &self,
        key: String,
        spent: u64,
    ) -> StoreResult<()> {
        let now = self.clock.now_ms();
        let mut conn = self.conn().await?;
        links::remember_fintoc_keys_spent(&mut conn, &key, spent, now).await
    }

    pub(super) async fn complete_timed_out(&self, id: String) -> StoreResult<Option<IntentView>> {
        self.writer.timed_out(id).await
    }

    pub(super) async fn mark_reconciled(&self, ids: Vec<String>) -> StoreResult<()> {
        let now = self.clock.now_ms();
        let mut conn = self.conn().await?;
        intents::mark_reconciled(&mut conn, &ids, now).await
    }

    pub(super) async fn prune(
        &self,
        cutoff_ms: Millis,
        key_cutoff_ms: Millis,
        limit: i64,
    ) -> StoreResult<Pruned> {
        let mut conn = self.conn().await?;
        retention::prune(&mut conn, cutoff_ms, key_cutoff_ms, limit).await
    }

    pub(super) async fn get_intent(&self, id: String) -> StoreResult<Option<IntentView>> {
        let mut conn = self.conn().await?;
        intents::get_intent(&mut conn, &id).await
    }

    pub(super) async fn results_after(
        &self,
        target: Target,
        after: i64,
        limit: i64,
    ) -> StoreResult<LogPage> {
        let upto = self.tailed.load(Ordering::Acquire);
        let mut conn = self.conn().await?;
        let rows = if upto > after {
            log::results_after(&mut conn, &target, after, upto, limit).await?
        } else {
            Vec::new()
        };
        // Read after the rows: retention that ran before them shows here (a later run only
        // makes this look further on, which refuses a cursor rather than skip rows).
        let pruned_through = log::log_bounds(&mut conn).await?.pruned_through();
        Ok(LogPage {
            rows,
            pruned_through,
        })
    }

    pub(super) async fn log_bounds(&self) -> StoreResult<LogBounds> {
        let mut conn = self.conn().await?;
        log::log_bounds(&mut conn).await
    }

    pub(super) async fn link_by_token(
        &self,
        token_sha256: String,
    ) -> StoreResult<Option<KnownLink>> {
        let mut conn = self.conn().await?;
        links::link_by_token(&mut conn, &token_sha256).await
    }

    pub(super) async fn link_by_id(&self, link_id: String) -> StoreResult<Option<KnownLink>> {
        let mut conn = self.conn().await?;
        links::link_by_id(&mut conn, &link_id).await
    }

    pub(super) async fn link_state(
        &self,
        link_id: String,
        refresh_type: RefreshType,
    ) -> StoreResult<LinkState> {
        let mut conn = self.conn().await?;
        Ok(LinkState {
            pending: intents::pending_intent(&mut conn, &link_id).await?,
            last_success: intents::last_success(&mut conn, &link_id, refresh_type).await?,
        })
    }

    pub(super) async fn idempotency(
        &self,
        key: String,
    ) -> StoreResult<Option<(IdempotencyRecord, Option<IntentView>)>> {
        let mut conn = self.conn().await?;
        let Some(record) = links::idempotency(&mut conn, &key).await? else {
            return Ok(None);
        };
        let intent = intents::get_intent(&mut conn, &record.refresh_intent_id).await?;
        Ok(Some((record, intent)))
    }

    pub(super) async fn pending_intents_due(
        &self,
        created_before_ms: Millis,
    ) -> StoreResult<Vec<DueIntent>> {
        let mut conn = self.conn().await?;
        intents::pending_intents_due(&mut conn, created_before_ms).await
    }

    pub(super) async fn counts(&self) -> StoreResult<Counts> {
        let mut conn = self.conn().await?;
        log::counts(&mut conn).await
    }

    pub(super) async fn ping(&self) -> bool {
        use diesel_async::SimpleAsyncConnection;
        match self.conn().await {
            Ok(mut conn) => conn.batch_execute("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }

    /// False for good once one of this replica's own tasks stopped. PostgreSQL being away is
    /// not that: it is reported by [`PgStore::ping`] (and recovers).
    pub(super) fn is_healthy(&self) -> bool {
        !self.broken.is_cancelled()
    }

    pub(super) async fn failed(&self) {
        self.broken.cancelled().await
    }

    pub(super) fn break_for_test(&self) {
        self.broken.cancel();
    }

    /// Whether this replica runs the cluster's background work now.
    pub(super) fn leads(&self) -> bool {
        self.leader.leads()
    }

    /// Settles the events held for creates whose lease ran out (their replica died).
    pub(super) async fn settle_expired_creates(&self) -> StoreResult<usize> {
        self.writer.settle(None).await
    }

    pub(super) async fn link_turn(&self, token_sha256: &str) -> StoreResult<Turn> {
        lead::Turn::take(&self.pool, token_sha256).await
    }

    pub(super) async fn close(&self) {
        self.closing.cancel();
        self.writer.close().await;
        self.stop.cancel();
    }
}

type Manager = diesel_async::pooled_connection::AsyncDieselConnectionManager<AsyncPgConnection>;

async fn get(pool: &Pool) -> StoreResult<bb8::PooledConnection<'_, Manager>> {
    pool.get()
        .await
        .map_err(|e| StoreError::Unavailable(format!("no database connection: {e}")))
}

fn unavailable(e: diesel::ConnectionError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Runs the embedded migrations on one connection. Several replicas starting at once
/// serialize on an advisory lock, so each migration runs once. diesel's migration harness is
/// synchronous: it runs on the blocking pool, driving the async connection from there.
async fn migrate(url: &str) -> StoreResult<()> {
    use diesel::RunQueryDsl;
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
    let conn = connect::connect(url).await.map_err(unavailable)?;
    tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        diesel::sql_query("SELECT pg_advisory_lock($1)")
            .bind::<diesel::sql_types::BigInt, _>(lead::MIGRATION_LOCK)
            .execute(&mut conn)?;
        // Closing the connection afterwards releases the lock.
        conn.run_pending_migrations(MIGRATIONS)
            .map(|_| ())
            .map_err(|e| StoreError::Migration(e.to_string()))
    })
    .await
    .map_err(|e| StoreError::TaskFailed(e.to_string()))?
}
