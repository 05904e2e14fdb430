//! Storage behind one seam. Everything above talks to [`Store`], in intentions — "ingest this
//! webhook", "register this intent", "results of this target after this cursor" — and never
//! sees diesel, a connection, or the marks of create calls in flight. A backend lives in its
//! own folder behind the `Backend` trait (`seam.rs`): SQLite (`sqlite/`, one process, the default) and
//! PostgreSQL (`postgres/`, any number of replicas acting as one), chosen by the URL.
//!
//! The promises every backend keeps:
//! - **Durable before answered.** A write resolves only once the commit holding it is
//!   durable; the committed log entries then go to the [`Publish`] sink (the hub), in
//!   sequence order, once each.
//! - **Reads never show what is not durable.** Every read — an intent, a Link's state, an
//!   idempotency key, the log, its bounds — answers only with what a crash could not take
//!   back: no result, completion, intent or remembered key that is committed but not yet
//!   durable. (On SQLite a read waits, after its queries, until every commit they could have
//!   seen is durable: `sqlite/progress.rs`.) So nothing a caller or a watcher is told can
//!   revert after a power loss. The log is also read only up to the newest sequence handed
//!   to the sink ([`Store::results_after`] caps itself), so a watcher's catch-up never gets
//!   ahead of the hub.
//! - **Failure is loud and final.** If the store can no longer commit (on SQLite: its
//!   writer or sync thread stopped), [`Store::is_healthy`] turns false for good and
//!   [`Store::failed`] resolves; the service then stops instead of answering every write
//!   with an error while probes say it is fine.

pub mod copy;
mod decide;
mod error;
mod movement_queries;
mod postgres;
mod queries;
mod rows;
mod seam;
mod sqlite;
mod turns;
mod view;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;

use crate::clock::Millis;
use crate::config::Config;
use crate::domain::{IntentView, NewIntent, RefreshType, Target};
use crate::fintoc::event::Decoded;
use crate::metrics::Metrics;

pub use decide::Seek;
pub use decide::movements::{
    MAX_ATTEMPTS as FETCH_ATTEMPTS, WINDOW_DAYS as MOVEMENTS_WINDOW_DAYS,
    by_account as jobs_by_account,
};
pub use error::{StoreError, StoreResult};
pub use postgres::{is_postgres_url, redacted};
use seam::Backend;
pub use seam::{
    Counts, DueIntent, FetchClaim, FetchDone, FetchJob, FetchOutcome, IdempotencyRecord,
    IngestOutcome, KeyRecord, KnownLink, LinkSnapshot, LinkState, LinksFrom, LogBounds, LogPage,
    MovementsPage, Pruned, Publish, SealedToken,
};

/// Whether `url` can be used, checked without connecting: a PostgreSQL URL must be readable,
/// its `ssl*` settings a combination libpq accepts and their files usable; anything else is
/// a SQLite path, checked when opened.
pub fn check_url(url: &str) -> Result<(), String> {
    if is_postgres_url(url) {
        postgres::check_url(url)
    } else {
        Ok(())
    }
}

/// The handle to storage: cheap to clone.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    links: turns::LinkLocks,
    hooks: Arc<TestHooks>,
}

/// Failures tests ask for through the store's hidden hooks; never set by the service.
#[derive(Default)]
struct TestHooks {
    /// Log reads ([`Store::results_after`]) still to fail.
    failing_log_reads: std::sync::atomic::AtomicUsize,
}

impl Store {
    /// Opens (creating and migrating if needed) the database at `config.database_url` and
    /// starts its writer. Committed log entries go to `publish` once durable; commit sizes and
    /// times to `metrics`. A URL starting with `postgres://` or `postgresql://` opens
    /// PostgreSQL (its sessions bounded by `--request-timeout`); anything else is a SQLite file
    /// (its WAL bounded by `--sqlite-wal-limit-bytes`).
    pub async fn open(
        config: &Config,
        metrics: Arc<Metrics>,
        publish: Publish,
    ) -> StoreResult<Store> {
        let backend: Arc<dyn Backend> = if is_postgres_url(&config.database_url) {
            Arc::new(postgres::PgStore::open(config, metrics, publish).await?)
        } else {
            Arc::new(sqlite::SqliteStore::open(config, metrics, publish).await?)
        };
        Ok(Store {
            backend,
            links: turns::LinkLocks::default(),
            hooks: Arc::default(),
        })
    }

    /// Waits for this link token's turn: RequestRefresh work for one token runs one at a
    /// time across the service (every replica), so concurrent callers make one create call.
    /// Callers on this process wait in line here first, holding nothing; on PostgreSQL the
    /// first of them then takes a lease every replica respects (a frozen holder's runs out).
    /// A turn not had by `deadline` is [`StoreError::Unavailable`].
    pub async fn link_turn(&self, token_sha256: &str, deadline: Instant) -> StoreResult<LinkTurn> {
        let local = tokio::time::timeout_at(deadline.into(), self.links.turn(token_sha256))
            .await
            .map_err(|_| {
                StoreError::Unavailable(
                    "another request for this Link is still being worked on; retry shortly".into(),
                )
            })?;
        let shared = self.backend.link_turn(token_sha256, deadline).await?;
        Ok(LinkTurn {
            _shared: shared,
            _local: local,
        })
    }

    /// Whether this process runs the background work (reconciliation, timeouts, retention)
    /// now: always on SQLite; on PostgreSQL, the one replica holding the leader's lease.
    pub fn leads(&self) -> bool {
        self.backend.leads()
    }

    /// Resolves once this process does not run the background work: never on SQLite; on
    /// PostgreSQL when its lease runs out without renewal (work in progress then stops, before
    /// another replica may start it).
    pub async fn leadership_lost(&self) {
        self.backend.leadership_lost().await
    }

    /// The newest log sequence handed to the [`Publish`] sink: where a hub starts, so that no
    /// watcher is told of a cursor past what it can be given.
    pub async fn published_through(&self) -> StoreResult<i64> {
        self.backend.published_through().await
    }

    /// Settles the events held for create calls that can no longer return: on PostgreSQL,
    /// those of replicas that died mid-call (their mark's lease ran out). A no-op on SQLite,
    /// which settles them when it opens.
    pub async fn settle_abandoned_creates(&self) -> StoreResult<usize> {
        self.backend.settle_abandoned_creates().await
    }

    /// Takes in one verified webhook body (`decoded` from it): dedupe on the event id, keep
    /// the body, and log an account result attributed to the intent waiting for it (held
    /// while a create call for its Link is in flight). Resolves once durable.
    pub async fn ingest_webhook(
        &self,
        body: Bytes,
        decoded: Decoded,
        received_at_ms: Millis,
    ) -> StoreResult<IngestOutcome> {
        self.backend
            .ingest_webhook(body, decoded, received_at_ms)
            .await
    }

    /// Takes in event bodies found through Fintoc's events endpoint (lost webhooks), exactly
    /// as if they had been delivered, in one commit.
    pub async fn ingest_reconciled(
        &self,
        bodies: Vec<Bytes>,
        received_at_ms: Millis,
    ) -> StoreResult<Vec<IngestOutcome>> {
        self.backend.ingest_reconciled(bodies, received_at_ms).await
    }

    /// Marks a create call for `link_id` as in flight (on every replica, before it is
    /// sent): account events for the Link are held until the guard registers the intent, or
    /// settled as unsolicited when it is dropped. The mark is this call's own: cleaning it up
    /// never removes another call's.
    pub async fn begin_create(&self, link_id: &str) -> StoreResult<CreateGuard> {
        let holder = uuid::Uuid::new_v4().simple().to_string();
        self.backend.mark_create(link_id, &holder).await?;
        Ok(CreateGuard {
            store: self.clone(),
            link_id: link_id.to_owned(),
            holder,
            armed: true,
        })
    }

    /// Records an intent and its expected accounts (a no-op if already known), logs the
    /// events held for its Link, and remembers `key` with it, all in one commit.
    /// `new.accounts` must not be empty ([`StoreError::Invalid`]): an intent with nothing to
    /// wait for could never complete, so callers refuse such Links before asking Fintoc.
    pub async fn register_intent(
        &self,
        new: NewIntent,
        key: Option<KeyRecord>,
    ) -> StoreResult<IntentView> {
        self.register(new, key, None).await
    }

    /// [`Store::register_intent`], clearing the create mark `mark` (its holder) with it.
    async fn register(
        &self,
        new: NewIntent,
        key: Option<KeyRecord>,
        mark: Option<String>,
    ) -> StoreResult<IntentView> {
        if new.accounts.is_empty() {
            return Err(StoreError::Invalid(format!(
                "refresh intent {} expects no account: it could never complete",
                new.id
            )));
        }
        self.backend.register_intent(new, key, mark).await
    }

    /// Records a Link resolved through Fintoc (by its token's hash) with its current accounts.
    pub async fn upsert_link(
        &self,
        link_id: String,
        token_sha256: String,
        accounts: Vec<String>,
    ) -> StoreResult<()> {
        self.backend
            .upsert_link(link_id, token_sha256, accounts)
            .await
    }

    /// Remembers the first answer given for an idempotency key (a later one keeps it).
    pub async fn remember_key(&self, key: KeyRecord) -> StoreResult<()> {
        self.backend.remember_key(key).await
    }

    /// How many of the Fintoc `Idempotency-Key`s derived from the caller's idempotency `key`
    /// Fintoc has already answered: those must never be sent again (Fintoc would replay
    /// their stored answer for 24 h), so the next create for this caller key starts after
    /// them. 0 for a key never recorded.
    pub async fn fintoc_keys_spent(&self, key: String) -> StoreResult<u64> {
        self.backend.fintoc_keys_spent(key).await
    }

    /// Records that the first `spent` Fintoc keys derived from the caller's `key` have been
    /// answered (a smaller number than the one recorded changes nothing). Kept as long as
    /// idempotency keys are.
    pub async fn remember_fintoc_keys_spent(&self, key: String, spent: u64) -> StoreResult<()> {
        self.backend.remember_fintoc_keys_spent(key, spent).await
    }

    /// Gives every account of a pending intent still missing a result a TIMED_OUT one (no
    /// event id, its own sequence), which completes it. `None` if it was not pending.
    pub async fn complete_timed_out(&self, id: String) -> StoreResult<Option<IntentView>> {
        self.backend.complete_timed_out(id).await
    }

    /// Notes that the lost-webhook reconciliation ran for these intents.
    pub async fn mark_reconciled(&self, ids: Vec<String>) -> StoreResult<()> {
        self.backend.mark_reconciled(ids).await
    }

    /// Removes up to `limit` rows of each kind older than `cutoff_ms` (idempotency keys and
    /// their Fintoc key counts older than `key_cutoff_ms`), the log from its oldest end only.
    pub async fn prune(
        &self,
        cutoff_ms: Millis,
        key_cutoff_ms: Millis,
        limit: i64,
    ) -> StoreResult<Pruned> {
        self.backend.prune(cutoff_ms, key_cutoff_ms, limit).await
    }

    /// The intent's current state, or `None` if it is unknown.
    pub async fn get_intent(&self, id: String) -> StoreResult<Option<IntentView>> {
        self.backend.get_intent(id).await
    }

    /// Up to `limit` durable results of `target` after `after`, oldest first, with how far
    /// retention had pruned the log in the same snapshot (see [`LogPage`]).
    pub async fn results_after(
        &self,
        target: Target,
        after: i64,
        limit: i64,
    ) -> StoreResult<LogPage> {
        let failing = &self.hooks.failing_log_reads;
        let fail = failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(StoreError::TaskFailed(
                "a log read failed on purpose (test hook)".into(),
            ));
        }
        self.backend.results_after(target, after, limit).await
    }

    pub async fn log_bounds(&self) -> StoreResult<LogBounds> {
        self.backend.log_bounds().await
    }

    /// Where a feed seeking to `at_ms` starts: after the sequence before the first result
    /// stored at or after it, or refused when retention removed such a result.
    pub async fn seek(&self, at_ms: Millis) -> StoreResult<Seek> {
        let times = self.backend.log_times(at_ms).await?;
        Ok(decide::seek(at_ms, times))
    }

    /// The Link last resolved with this token (by its hash).
    pub async fn link_by_token(&self, token_sha256: String) -> StoreResult<Option<KnownLink>> {
        self.backend.link_by_token(token_sha256).await
    }

    pub async fn link_by_id(&self, link_id: String) -> StoreResult<Option<KnownLink>> {
        self.backend.link_by_id(link_id).await
    }

    /// The Link's pending intent and last success of `refresh_type`, read together.
    pub async fn link_state(
        &self,
        link_id: String,
        refresh_type: RefreshType,
    ) -> StoreResult<LinkState> {
        self.backend.link_state(link_id, refresh_type).await
    }

    /// The answer remembered for `key` and its intent's current state.
    pub async fn idempotency(
        &self,
        key: String,
    ) -> StoreResult<Option<(IdempotencyRecord, Option<IntentView>)>> {
        self.backend.idempotency(key).await
    }

    /// Up to `limit` Links (`from` one, or those after an id), each with its accounts'
    /// latest retained results, its pending intent and last successes, read in one snapshot.
    pub async fn link_snapshots(
        &self,
        from: LinksFrom,
        limit: i64,
    ) -> StoreResult<Vec<LinkSnapshot>> {
        self.backend.link_snapshots(from, limit).await
    }

    /// Pending intents created at or before `created_before_ms`, oldest first.
    pub async fn pending_intents_due(
        &self,
        created_before_ms: Millis,
    ) -> StoreResult<Vec<DueIntent>> {
        self.backend.pending_intents_due(created_before_ms).await
    }

    pub async fn counts(&self) -> StoreResult<Counts> {
        self.backend.counts().await
    }

    /// Keeps the Link's sealed token, given (again) at `given_at_ms`: retention counts from
    /// the last time a caller gave it.
    pub async fn keep_token(
        &self,
        link_id: String,
        sealed: SealedToken,
        given_at_ms: Millis,
    ) -> StoreResult<()> {
        self.backend.keep_token(link_id, sealed, given_at_ms).await
    }

    /// Replaces a token sealed under an older key (`from_key`) with `sealed`, unless it
    /// changed meanwhile.
    pub async fn reseal_token(
        &self,
        link_id: String,
        from_key: String,
        sealed: SealedToken,
    ) -> StoreResult<()> {
        self.backend.reseal_token(link_id, from_key, sealed).await
    }

    /// Drops the Link's token, its stored movements and the fetches it owes (each logged as
    /// TOKEN_NOT_KEPT, so a stream waiting for them ends); `false` for an unknown Link.
    pub async fn forget_link(&self, link_id: String) -> StoreResult<bool> {
        self.backend.forget_link(link_id).await
    }

    /// The keys kept tokens are sealed under, with how many each seals (start-up checks
    /// LINK_TOKEN_KEYS can open them all).
    pub async fn token_keys(&self) -> StoreResult<Vec<(String, i64)>> {
        self.backend.token_keys().await
    }

    /// Drops the tokens sealed under `key_id` (a demo key of an earlier run); how many.
    pub async fn drop_tokens_of_key(&self, key_id: String) -> StoreResult<usize> {
        self.backend.drop_tokens_of_key(key_id).await
    }

    /// Drops every token last given before `given_before_ms` (`--link-token-retention`).
    pub async fn drop_expired_tokens(&self, given_before_ms: Millis) -> StoreResult<usize> {
        self.backend.drop_expired_tokens(given_before_ms).await
    }

    /// Leases one Link's due fetches to `owner` (one Link at a time: a Link whose fetches
    /// another process holds is skipped until its lease ends).
    pub async fn claim_fetches(
        &self,
        owner: String,
        lease_ms: Millis,
    ) -> StoreResult<Option<FetchClaim>> {
        self.backend.claim_fetches(owner, lease_ms).await
    }

    /// Settles one account's leased fetches with their outcome, in one commit with the log
    /// entries it leads to.
    pub async fn finish_fetches(
        &self,
        owner: String,
        jobs: Vec<FetchJob>,
        outcome: FetchOutcome,
    ) -> StoreResult<FetchDone> {
        self.backend.finish_fetches(owner, jobs, outcome).await
    }

    /// A page of an account's stored movements, newest post_date first; `None` for an
    /// unknown account.
    pub async fn list_movements(
        &self,
        account_id: String,
        after: Option<(String, String)>,
        limit: i64,
    ) -> StoreResult<Option<MovementsPage>> {
        self.backend.list_movements(account_id, after, limit).await
    }

    /// `Some(newest movements sequence)` once every fetch owed for the intent's results is
    /// settled.
    pub async fn movements_settled(&self, intent_id: String) -> StoreResult<Option<i64>> {
        self.backend.movements_settled(intent_id).await
    }

    /// Whether the database answers a trivial query (readiness).
    pub async fn ping(&self) -> bool {
        self.backend.ping().await
    }

    /// Whether the last check found that this process can commit (on PostgreSQL, a probe
    /// that takes the log's lock every second; on SQLite, while the store is healthy).
    pub fn can_commit(&self) -> bool {
        self.backend.can_commit()
    }

    /// False for good once the store can no longer commit (see the module docs).
    pub fn is_healthy(&self) -> bool {
        self.backend.is_healthy()
    }

    /// Resolves once the store can no longer commit; never, while it can.
    pub async fn failed(&self) {
        self.backend.failed().await
    }

    /// Test hook: breaks the store for good, the way a bug in its machinery would (on SQLite
    /// the sync thread panics). Never called by the service.
    #[doc(hidden)]
    pub fn break_for_test(&self) {
        self.backend.break_for_test()
    }

    /// Test hook: the next `count` calls of [`Store::results_after`] fail, as a database that
    /// cannot be read would. Never called by the service.
    #[doc(hidden)]
    pub fn fail_log_reads_for_test(&self, count: usize) {
        self.hooks.failing_log_reads.store(count, Ordering::SeqCst);
    }

    /// Stops the writer after the work already queued is committed.
    pub async fn close(&self) {
        self.backend.close().await
    }

    /// Clears a create mark (Link, holder) without an intent and settles the events held
    /// for it.
    async fn abandon_create(&self, link_id: String, holder: String) -> StoreResult<usize> {
        self.backend.abandon_create(link_id, holder).await
    }
}

/// A create call in flight for one Link (see [`Store::begin_create`]).
pub struct CreateGuard {
    store: Store,
    link_id: String,
    /// This call's own id, which its mark carries.
    holder: String,
    armed: bool,
}

impl CreateGuard {
    /// The create call returned an intent: record it (clearing the mark in the same commit).
    pub async fn register(
        mut self,
        new: NewIntent,
        key: Option<KeyRecord>,
    ) -> StoreResult<IntentView> {
        let view = self
            .store
            .register(new, key, Some(self.holder.clone()))
            .await?;
        self.armed = false;
        Ok(view)
    }

    /// The create call failed: clear this call's mark (only its own: another call's may
    /// have replaced it) and settle the events held for it, now. Dropping the guard does the
    /// same in the background. How many held events were logged.
    pub async fn abandon(mut self) -> StoreResult<usize> {
        self.armed = false;
        let (link_id, holder) = (
            std::mem::take(&mut self.link_id),
            std::mem::take(&mut self.holder),
        );
        self.store.abandon_create(link_id, holder).await
    }
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The create failed (or its caller vanished): the events held for it are no
        // longer anyone's to wait for. Settled in the background; Drop cannot wait.
        let store = self.store.clone();
        let (link_id, holder) = (
            std::mem::take(&mut self.link_id),
            std::mem::take(&mut self.holder),
        );
        tokio::spawn(async move {
            if let Err(e) = store.abandon_create(link_id, holder).await {
                tracing::error!(error = %e, "could not settle events held for a failed create");
            }
        });
    }
}

/// One link token's turn (see [`Store::link_turn`]); the next caller's begins when it drops.
pub struct LinkTurn {
    /// The turn every replica respects (PostgreSQL's lease), given back first.
    _shared: Option<seam::SharedTurn>,
    /// This process's line for the token.
    _local: turns::LocalTurn,
}
