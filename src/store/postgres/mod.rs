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
mod db;
pub(super) mod import;
mod ingest;
mod intents;
mod lead;
mod links;
mod log;
mod movements;
mod pooler;
mod retention;
#[rustfmt::skip]
mod schema;
mod session;
mod snapshots;
mod statements;
mod tail;
mod tls;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::store::decide::LogTimes;
use async_trait::async_trait;
use bytes::Bytes;
use diesel_async::AsyncPgConnection;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use tokio_util::sync::CancellationToken;

pub use connect::{check_url, redacted};
use db::Db;
pub use session::Bounds;

use super::seam::{Backend, SharedTurn};
use super::{
    Counts, DueIntent, FetchClaim, FetchDone, FetchJob, FetchOutcome, IdempotencyRecord,
    IngestOutcome, KeyRecord, KnownLink, LinkSnapshot, LinkState, LinksFrom, LogBounds, LogPage,
    MovementsPage, Pruned, Publish, SealedToken, StoreError, StoreResult,
};
use crate::clock::{Clock, Millis};
use crate::config::Config;
use crate::domain::{IntentView, NewIntent, RefreshType, Target};
use crate::fintoc::event::Decoded;
use crate::metrics::Metrics;
use tail::Published;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// How long past `--request-timeout` a create call's mark holds events back: the call is
/// bounded by the request's deadline, so a mark outlives it only when its replica died or
/// froze mid-call; then the events held for it are settled soon after.
const CREATE_LEASE_SLACK: Duration = Duration::from_secs(30);

/// How often this replica checks that it can commit (readiness), and how long the check may
/// wait beyond the lock timeout before it counts as "cannot".
const COMMIT_CHECK: Duration = Duration::from_secs(1);
const COMMIT_CHECK_SLACK: Duration = Duration::from_secs(1);

pub use crate::config::is_postgres_url;

#[derive(Clone)]
pub(super) struct PgStore {
    db: Db,
    writer: writer::Writer,
    /// What the tail has handed to the sink: reads of the log stop there.
    published: Arc<Published>,
    leader: lead::Leader,
    /// How long a create call's mark lasts (see [`CREATE_LEASE_SLACK`]).
    create_lease: Duration,
    /// Whether the last check found that this replica can commit.
    can_commit: Arc<AtomicBool>,
    clock: Clock,
    stop: CancellationToken,
    /// Cancelled when [`PgStore::close`] begins: tasks ending after it are not failures.
    closing: CancellationToken,
    /// Cancelled if one of this replica's own tasks (writer, tail, leader) ends on its own,
    /// or the log is found rewound: without it the replica would be half alive (see
    /// [`PgStore::failed`]).
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
        config: &Config,
        metrics: Arc<Metrics>,
        publish: Publish,
    ) -> StoreResult<PgStore> {
        let url = config.database_url.as_str();
        let bounds = Bounds::for_request_timeout(config.request_timeout);
        // What a transaction pooler cannot carry (LISTEN, the migrations' lock, the writer's
        // statements kept prepared) goes to the direct URL; with none, DATABASE_URL must not
        // lead to such a pooler.
        let direct = config.database_direct_url.as_deref();
        let session_url = direct.unwrap_or(url);
        if direct.is_none() && pooler::shares_sessions(url).await? {
            return Err(pooler::refusal());
        }
        migrate(session_url).await?;
        let pooled = direct.is_some();
        let pool = connect::pool(url, config.database_pool_size, pooled)
            .await
            .map_err(unavailable)?;
        let stop = CancellationToken::new();
        let db = Db::new(pool, bounds, pooled);
        let newest = db
            .read(async |c| Ok(log::log_bounds(c).await?.newest))
            .await?;
        // Watchers on this replica start from the log as it is now; the tail takes it from
        // there, so everything committed later (by any replica) reaches the sink once.
        let published = Arc::new(Published::starting_at(newest));
        let (closing, broken) = (CancellationToken::new(), CancellationToken::new());
        let (writer, task) = writer::Writer::new(writer::Setup {
            url: session_url.to_owned(),
            clock: config.clock.clone(),
            metrics,
            bounds,
            budget: config.request_timeout,
            published: published.clone(),
            broken: broken.clone(),
            movements: config.link_token_keys.is_some(),
            stop: stop.clone(),
        });
        vital("writer", task, closing.clone(), broken.clone());
        let rewound: tail::Rewound = {
            let (writer, broken) = (writer.clone(), broken.clone());
            Box::new(move |rewind: log::Rewind| {
                tokio::spawn(async move {
                    // Past every sequence this replica handed out, before anyone reuses one.
                    if let Err(e) = writer.raise(rewind.published).await {
                        tracing::error!(error = %e, "could not move the rewound log's counter");
                    }
                    rewind.report(&broken);
                });
            })
        };
        let tail = tail::run(
            session_url.to_owned(),
            db.clone(),
            published.clone(),
            publish,
            rewound,
            stop.clone(),
        );
        vital("log tail", tail, closing.clone(), broken.clone());
        let me = lead::replica_id();
        let (leader, task) = lead::Leader::new(db.clone(), &me, stop.clone());
        vital("leader lease", task, closing.clone(), broken.clone());
        let can_commit = Arc::new(AtomicBool::new(true));
        let check = check_commits(writer.clone(), bounds, can_commit.clone());
        vital(
            "commit check",
            cancellable(check, stop.clone()),
            closing.clone(),
            broken.clone(),
        );
        Ok(PgStore {
            db,
            writer,
            published,
            leader,
            create_lease: config.request_timeout + CREATE_LEASE_SLACK,
            can_commit,
            clock: config.clock.clone(),
            stop,
            closing,
            broken,
        })
    }
}

#[async_trait]
impl Backend for PgStore {
    async fn ingest_webhook(
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

    async fn ingest_reconciled(
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

    async fn mark_create(&self, link_id: &str, holder: &str) -> StoreResult<()> {
        let lease_ms = crate::clock::millis(self.create_lease);
        self.db
            .write(async |c| links::mark_create(c, link_id, holder, lease_ms).await)
            .await
    }

    async fn abandon_create(&self, link_id: String, holder: String) -> StoreResult<usize> {
        self.writer.settle(Some((link_id, holder))).await
    }

    async fn register_intent(
        &self,
        new: NewIntent,
        key: Option<KeyRecord>,
        mark: Option<String>,
    ) -> StoreResult<IntentView> {
        self.writer.register(new, key, mark).await
    }

    async fn upsert_link(
        &self,
        link_id: String,
        token_sha256: String,
        accounts: Vec<String>,
    ) -> StoreResult<()> {
        let now = self.clock.now_ms();
        self.db
            .write(async |c| links::upsert_link(c, &link_id, &token_sha256, &accounts, now).await)
            .await
    }

    async fn remember_key(&self, key: KeyRecord) -> StoreResult<()> {
        let now = self.clock.now_ms();
        self.db
            .write(async |c| links::remember_key(c, &key, now).await)
            .await
    }

    async fn fintoc_keys_spent(&self, key: String) -> StoreResult<u64> {
        self.db
            .read(async |c| links::fintoc_keys_spent(c, &key).await)
            .await
    }

    async fn remember_fintoc_keys_spent(&self, key: String, spent: u64) -> StoreResult<()> {
        let now = self.clock.now_ms();
        self.db
            .write(async |c| links::remember_fintoc_keys_spent(c, &key, spent, now).await)
            .await
    }

    async fn complete_timed_out(&self, id: String) -> StoreResult<Option<IntentView>> {
        self.writer.timed_out(id).await
    }

    async fn mark_reconciled(&self, ids: Vec<String>) -> StoreResult<()> {
        let now = self.clock.now_ms();
        self.db
            .write(async |c| intents::mark_reconciled(c, &ids, now).await)
            .await
    }

    async fn prune(
        &self,
        cutoff_ms: Millis,
        key_cutoff_ms: Millis,
        limit: i64,
    ) -> StoreResult<Pruned> {
        self.db
            .write(async |c| retention::prune(c, cutoff_ms, key_cutoff_ms, limit).await)
            .await
    }

    async fn get_intent(&self, id: String) -> StoreResult<Option<IntentView>> {
        self.db
            .read(async |c| intents::get_intent(c, &id).await)
            .await
    }

    async fn results_after(&self, target: Target, after: i64, limit: i64) -> StoreResult<LogPage> {
        let upto = self.published.through();
        self.db
            .read(async |c| {
                let rows = if upto > after {
                    log::results_after(c, &target, after, upto, limit).await?
                } else {
                    Vec::new()
                };
                // Read after the rows: retention that ran before them shows here (a later run
                // only makes this look further on, which refuses a cursor rather than skip rows).
                let pruned_through = log::log_bounds(c).await?.pruned_through();
                Ok(LogPage {
                    rows,
                    pruned_through,
                })
            })
            .await
    }

    async fn log_bounds(&self) -> StoreResult<LogBounds> {
        self.db.read(async |c| log::log_bounds(c).await).await
    }

    async fn log_times(&self, at_ms: Millis) -> StoreResult<LogTimes> {
        self.db.read(async |c| log::log_times(c, at_ms).await).await
    }

    /// The newest sequence handed to the sink: where this replica's hub starts.
    async fn published_through(&self) -> StoreResult<i64> {
        Ok(self.published.through())
    }

    async fn link_by_token(&self, token_sha256: String) -> StoreResult<Option<KnownLink>> {
        self.db
            .read(async |c| links::link_by_token(c, &token_sha256).await)
            .await
    }

    async fn link_by_id(&self, link_id: String) -> StoreResult<Option<KnownLink>> {
        self.db
            .read(async |c| links::link_by_id(c, &link_id).await)
            .await
    }

    async fn link_state(
        &self,
        link_id: String,
        refresh_type: RefreshType,
    ) -> StoreResult<LinkState> {
        self.db
            .read(async |c| {
                Ok(LinkState {
                    pending: intents::pending_intent(c, &link_id).await?,
                    last_success: intents::last_success(c, &link_id, refresh_type).await?,
                })
            })
            .await
    }

    async fn link_snapshots(&self, from: LinksFrom, limit: i64) -> StoreResult<Vec<LinkSnapshot>> {
        self.db
            .read(async |c| snapshots::snapshots(c, &from, limit).await)
            .await
    }

    async fn idempotency(
        &self,
        key: String,
    ) -> StoreResult<Option<(IdempotencyRecord, Option<IntentView>)>> {
        self.db
            .read(async |c| {
                let Some(record) = links::idempotency(c, &key).await? else {
                    return Ok(None);
                };
                let intent = intents::get_intent(c, &record.refresh_intent_id).await?;
                Ok(Some((record, intent)))
            })
            .await
    }

    async fn pending_intents_due(&self, created_before_ms: Millis) -> StoreResult<Vec<DueIntent>> {
        self.db
            .read(async |c| intents::pending_intents_due(c, created_before_ms).await)
            .await
    }

    async fn counts(&self) -> StoreResult<Counts> {
        self.db.read(async |c| log::counts(c).await).await
    }

    async fn keep_token(
        &self,
        link_id: String,
        sealed: SealedToken,
        given_at_ms: Millis,
    ) -> StoreResult<()> {
        self.db
            .write(async |c| movements::keep_token(c, &link_id, &sealed, given_at_ms).await)
            .await
    }

    async fn reseal_token(
        &self,
        link_id: String,
        from_key: String,
        sealed: SealedToken,
    ) -> StoreResult<()> {
        self.db
            .write(async |c| movements::reseal_token(c, &link_id, &from_key, &sealed).await)
            .await
    }

    async fn forget_link(&self, link_id: String) -> StoreResult<bool> {
        self.writer.forget(link_id).await
    }

    async fn token_keys(&self) -> StoreResult<Vec<(String, i64)>> {
        self.db.read(async |c| movements::token_keys(c).await).await
    }

    async fn drop_tokens_of_key(&self, key_id: String) -> StoreResult<usize> {
        self.db
            .write(async |c| movements::drop_tokens_of_key(c, &key_id).await)
            .await
    }

    async fn drop_expired_tokens(&self, given_before_ms: Millis) -> StoreResult<usize> {
        self.db
            .write(async |c| movements::drop_expired_tokens(c, given_before_ms).await)
            .await
    }

    async fn claim_fetches(
        &self,
        owner: String,
        lease_ms: Millis,
    ) -> StoreResult<Option<FetchClaim>> {
        let now = self.clock.now_ms();
        self.db
            .write(async |c| movements::claim(c, &owner, now, lease_ms).await)
            .await
    }

    async fn finish_fetches(
        &self,
        owner: String,
        jobs: Vec<FetchJob>,
        outcome: FetchOutcome,
    ) -> StoreResult<FetchDone> {
        self.writer.fetched(owner, jobs, outcome).await
    }

    async fn list_movements(
        &self,
        account_id: String,
        after: Option<(String, String)>,
        limit: i64,
    ) -> StoreResult<Option<MovementsPage>> {
        let upto = self.published.through();
        self.db
            .read(async |c| movements::list(c, &account_id, &after, limit, upto).await)
            .await
    }

    async fn movements_settled(&self, intent_id: String) -> StoreResult<Option<i64>> {
        self.db
            .read(async |c| movements::settled(c, &intent_id).await)
            .await
    }

    /// Whether the database answers a trivial query in time, and the last check found that
    /// this replica can commit (readiness).
    async fn ping(&self) -> bool {
        use diesel_async::SimpleAsyncConnection;
        let answers = self
            .db
            .read(async |c| Ok(c.batch_execute("SELECT 1").await?))
            .await
            .is_ok();
        answers && self.can_commit.load(Ordering::Acquire)
    }

    /// Whether the last check found that this replica can commit.
    fn can_commit(&self) -> bool {
        self.is_healthy() && self.can_commit.load(Ordering::Acquire)
    }

    /// False for good once one of this replica's own tasks stopped, or the log was found
    /// rewound. PostgreSQL being away is not that: it is reported by [`PgStore::ping`] (and
    /// recovers).
    fn is_healthy(&self) -> bool {
        !self.broken.is_cancelled()
    }

    async fn failed(&self) {
        self.broken.cancelled().await
    }

    fn break_for_test(&self) {
        self.broken.cancel();
    }

    /// Whether this replica runs the cluster's background work now.
    fn leads(&self) -> bool {
        self.leader.leads()
    }

    /// Resolves once this replica does not run the background work.
    async fn leadership_lost(&self) {
        self.leader.lost().await
    }

    /// Settles the events held for creates whose lease ran out (their replica died).
    async fn settle_abandoned_creates(&self) -> StoreResult<usize> {
        self.writer.settle(None).await
    }

    async fn link_turn(
        &self,
        token_sha256: &str,
        deadline: Instant,
    ) -> StoreResult<Option<SharedTurn>> {
        let turn = lead::Turn::take(&self.db, token_sha256, deadline).await?;
        Ok(Some(Box::new(turn)))
    }

    async fn close(&self) {
        self.closing.cancel();
        self.writer.close().await;
        self.leader.resign().await;
        self.stop.cancel();
    }
}

/// Checks every [`COMMIT_CHECK`] that this replica can commit: a probe through the writer
/// takes the log counter's lock like any batch. A replica that cannot (a frozen replica holds
/// the lock, the database is read-only or out of reach) reports not ready meanwhile, though
/// a trivial query may still be answered.
async fn check_commits(writer: writer::Writer, bounds: Bounds, can_commit: Arc<AtomicBool>) {
    let mut could = true;
    loop {
        let probed = tokio::time::timeout(bounds.lock + COMMIT_CHECK_SLACK, writer.probe()).await;
        let can = matches!(probed, Ok(Ok(())));
        can_commit.store(can, Ordering::Release);
        if can != could {
            if can {
                tracing::info!("this replica can commit again");
            } else {
                tracing::warn!(outcome = ?probed.ok(), "this replica cannot commit; not ready until it can");
            }
            could = can;
        }
        tokio::time::sleep(COMMIT_CHECK).await;
    }
}

/// `task`, ended early (and cleanly) by `stop`.
async fn cancellable(task: impl Future<Output = ()>, stop: CancellationToken) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = task => {}
    }
}

type Manager = diesel_async::pooled_connection::AsyncDieselConnectionManager<AsyncPgConnection>;

fn unavailable(e: diesel::ConnectionError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Longest the migrations may take at start, waiting for another replica's included: a
/// start that cannot finish them fails (before the listening line) instead of hanging.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the embedded migrations on one connection. Several replicas starting at once
/// serialize on an advisory lock, so each migration runs once. diesel's migration harness is
/// synchronous: it runs on the blocking pool, driving the async connection from there. The
/// session's own limits end a wait for the lock or a statement that hangs; the timeout
/// around it all ends a database that stops answering.
async fn migrate(url: &str) -> StoreResult<()> {
    use diesel::RunQueryDsl;
    use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
    let conn = connect::connect(url).await.map_err(unavailable)?;
    let limit = MIGRATE_TIMEOUT.as_millis();
    let migrated = tokio::task::spawn_blocking(move || {
        let mut conn = AsyncConnectionWrapper::<AsyncPgConnection>::from(conn);
        for setting in ["lock_timeout", "statement_timeout"] {
            diesel::sql_query(format!("SET {setting} = {limit}")).execute(&mut conn)?;
        }
        diesel::sql_query("SELECT pg_advisory_lock($1)")
            .bind::<diesel::sql_types::BigInt, _>(lead::MIGRATION_LOCK)
            .execute(&mut conn)?;
        // Closing the connection afterwards releases the lock.
        conn.run_pending_migrations(MIGRATIONS)
            .map(|_| ())
            .map_err(|e| StoreError::Migration(e.to_string()))
    });
    match tokio::time::timeout(MIGRATE_TIMEOUT, migrated).await {
        Ok(done) => done.map_err(|e| StoreError::TaskFailed(e.to_string()))?,
        Err(_) => Err(StoreError::Migration(format!(
            "the migrations did not finish within {} s (the database stopped answering, or \
             another replica holds the migration lock)",
            MIGRATE_TIMEOUT.as_secs()
        ))),
    }
}
