//! The seam between the store's callers and its backends, stated once: the vocabulary both
//! sides speak (what an ingest became, a page of the log, a Link's state, …) and the
//! [`Backend`] trait each backend (`sqlite/`, `postgres/`) implements. [`super::Store`]
//! holds one as `Arc<dyn Backend>` and adds what every backend shares (the in-process line
//! for a link token's turn, create guards, test hooks).
//!
//! A trait rather than an enum with a `match` per method: each backend states its whole
//! side in one `impl` block the compiler checks against this list, adding a method is one
//! line here and a compile error in each backend until it is written, and nothing above the
//! seam names a backend type. The cost — a boxed future per call — is noise beside a
//! database round trip.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use super::StoreResult;
use super::decide::LogTimes;
use crate::clock::Millis;
use crate::domain::{IntentView, NewIntent, RefreshType, ResultRow, Target};
use crate::fintoc::event::Decoded;

/// Where committed log entries go once durable (the hub, wired in `app.rs`): called from the
/// storage thread, in sequence order, and must not block.
pub type Publish = Arc<dyn Fn(&[Arc<ResultRow>]) + Send + Sync>;

/// What became of one delivered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Logged as a result with this sequence.
    Logged(i64),
    /// Kept; it will be logged once the intent being created for its Link is known.
    Held,
    /// Kept; a type we do not push.
    Ignored,
    /// Kept raw; not understood.
    Unparseable,
    /// Seen before: nothing changed.
    Duplicate,
}

/// What part of the log is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// The newest sequence ever assigned (0 when the log was always empty).
    pub newest: i64,
    /// The oldest sequence still retained; `newest + 1` when retention emptied the log.
    pub oldest: i64,
}

impl LogBounds {
    /// Every sequence up to this one has been pruned.
    pub fn pruned_through(&self) -> i64 {
        self.oldest - 1
    }
}

/// One page of the log for a target, and what retention had removed when it was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    /// Results of the target after the cursor, oldest first.
    pub rows: Vec<ResultRow>,
    /// Every sequence up to this one had been pruned, in the same snapshot as `rows`: if it
    /// is past the cursor, results after the cursor may be missing from `rows`.
    pub pruned_through: i64,
}

/// Row counts, for operators and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub webhook_events: i64,
    pub held_events: i64,
    pub results: i64,
}

/// A Link as this service knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownLink {
    pub link_id: String,
    pub rejected_at_ms: Option<Millis>,
}

/// What RequestRefresh needs to answer for a known Link without calling Fintoc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    /// Its pending intent, if any (the newest, should there be several).
    pub pending: Option<IntentView>,
    /// The most recent succeeded intent of the asked type: (id, completed at — when Fintoc
    /// completed it, see [`IntentView::completed_at_ms`]).
    pub last_success: Option<(String, Millis)>,
}

/// Which Links a [`Backend::link_snapshots`] read covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinksFrom {
    /// This one Link (none if unknown).
    One(String),
    /// The Links whose ids sort after this one (`""`: from the first), in id order.
    After(String),
}

/// What this service knows of one Link, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkSnapshot {
    pub link: KnownLink,
    /// Every account known for the Link, by id, with its latest retained result.
    pub accounts: Vec<(String, Option<ResultRow>)>,
    /// Its pending intent and last success of each refresh type (only-last, historical).
    pub only_last: LinkState,
    pub historical: LinkState,
    /// Whether its token is kept (sealed) here.
    pub token_kept: bool,
}

/// A RequestRefresh answer to remember under the caller's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub key: String,
    pub token_sha256: String,
    pub refresh_type: RefreshType,
    pub refresh_intent_id: String,
    pub joined_existing: bool,
}

/// A remembered answer, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub token_sha256: String,
    pub refresh_type: String,
    pub refresh_intent_id: String,
    pub joined_existing: bool,
    pub created_at_ms: Millis,
}

/// Rows removed by one [`super::Store::prune`] call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub results: usize,
    pub events: usize,
    pub intents: usize,
    pub keys: usize,
}

impl Pruned {
    pub fn total(&self) -> usize {
        self.results + self.events + self.intents + self.keys
    }
}

/// A pending intent whose deadlines the background work checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueIntent {
    pub id: String,
    pub created_at_ms: Millis,
    pub reconciled_at_ms: Option<Millis>,
}

/// A Link token as kept: sealed under the key `key_id` of LINK_TOKEN_KEYS (`custody.rs`).
#[derive(Clone, PartialEq, Eq)]
pub struct SealedToken {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedToken({})", self.key_id)
    }
}

/// A fetch owed for one result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchJob {
    pub result_sequence: i64,
    pub account_id: String,
    pub link_id: String,
    pub event_id: String,
    pub new_movements: i64,
    /// When Fintoc produced the result: the listing window reaches back from here.
    pub occurred_at_ms: Millis,
    /// Attempts made before this one.
    pub attempts: i32,
}

/// One Link's due fetches, leased to this process (`owner`) for a while.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchClaim {
    pub owner: String,
    pub link_id: String,
    /// `None` when the token is no longer kept (forgotten, expired, refused by Fintoc).
    pub token: Option<SealedToken>,
    /// Oldest first.
    pub jobs: Vec<FetchJob>,
}

/// How one account's fetch went (for the jobs of that account in a claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// Fintoc listed these movements since `since` (a date).
    Listed {
        movements: Vec<crate::domain::Movement>,
        since: String,
    },
    /// Fintoc refused the Link's token: it is dropped.
    TokenInvalid,
    /// The token is not kept (any more).
    TokenGone,
    /// Fintoc kept failing; why, for a person.
    Failed(String),
}

/// What [`Backend::finish_fetches`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchDone {
    /// Logged what it found (or that it failed); the jobs are gone.
    Written,
    /// The jobs wait for another attempt.
    Retrying,
    /// Another process holds the jobs now (this one's lease ran out): nothing written.
    LeaseLost,
}

/// A page of an account's stored movements, and the log position it reflects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementsPage {
    /// Newest post_date first.
    pub movements: Vec<crate::domain::Movement>,
    /// Whether more follow.
    pub more: bool,
    pub as_of_sequence: i64,
}

/// A link token's turn held across replicas (PostgreSQL's lease); given back when dropped.
pub type SharedTurn = Box<dyn Send + Sync>;

/// What a backend does; each method is documented on the [`super::Store`] method of the same
/// name, which forwards to it.
#[async_trait]
pub trait Backend: Send + Sync {
    async fn ingest_webhook(
        &self,
        body: Bytes,
        decoded: Decoded,
        received_at_ms: Millis,
    ) -> StoreResult<IngestOutcome>;
    async fn ingest_reconciled(
        &self,
        bodies: Vec<Bytes>,
        received_at_ms: Millis,
    ) -> StoreResult<Vec<IngestOutcome>>;
    /// Marks a create call for `link_id` in flight, owned by `holder`.
    async fn mark_create(&self, link_id: &str, holder: &str) -> StoreResult<()>;
    /// Clears `holder`'s create mark of `link_id` (only its own) and settles the events held
    /// for it; how many were logged.
    async fn abandon_create(&self, link_id: String, holder: String) -> StoreResult<usize>;
    /// Registers `new` (not empty), remembers `key`, clears the create mark `mark` (its
    /// holder) and logs the events held for the Link, in one commit.
    async fn register_intent(
        &self,
        new: NewIntent,
        key: Option<KeyRecord>,
        mark: Option<String>,
    ) -> StoreResult<IntentView>;
    async fn upsert_link(
        &self,
        link_id: String,
        token_sha256: String,
        accounts: Vec<String>,
    ) -> StoreResult<()>;
    async fn remember_key(&self, key: KeyRecord) -> StoreResult<()>;
    async fn fintoc_keys_spent(&self, key: String) -> StoreResult<u64>;
    async fn remember_fintoc_keys_spent(&self, key: String, spent: u64) -> StoreResult<()>;
    async fn complete_timed_out(&self, id: String) -> StoreResult<Option<IntentView>>;
    async fn mark_reconciled(&self, ids: Vec<String>) -> StoreResult<()>;
    async fn prune(
        &self,
        cutoff_ms: Millis,
        key_cutoff_ms: Millis,
        limit: i64,
    ) -> StoreResult<Pruned>;
    async fn get_intent(&self, id: String) -> StoreResult<Option<IntentView>>;
    async fn results_after(&self, target: Target, after: i64, limit: i64) -> StoreResult<LogPage>;
    async fn log_bounds(&self) -> StoreResult<LogBounds>;
    /// The log's bounds, then what a seek to `at_ms` needs ([`decide::seek`]).
    async fn log_times(&self, at_ms: Millis) -> StoreResult<LogTimes>;
    async fn published_through(&self) -> StoreResult<i64>;
    async fn link_by_token(&self, token_sha256: String) -> StoreResult<Option<KnownLink>>;
    async fn link_by_id(&self, link_id: String) -> StoreResult<Option<KnownLink>>;
    async fn link_state(
        &self,
        link_id: String,
        refresh_type: RefreshType,
    ) -> StoreResult<LinkState>;
    async fn idempotency(
        &self,
        key: String,
    ) -> StoreResult<Option<(IdempotencyRecord, Option<IntentView>)>>;
    async fn link_snapshots(&self, from: LinksFrom, limit: i64) -> StoreResult<Vec<LinkSnapshot>>;
    async fn pending_intents_due(&self, created_before_ms: Millis) -> StoreResult<Vec<DueIntent>>;
    async fn counts(&self) -> StoreResult<Counts>;
    /// The turn every replica respects, taken once this process's own line is through;
    /// `None` where one process is all there is.
    async fn link_turn(
        &self,
        token_sha256: &str,
        deadline: Instant,
    ) -> StoreResult<Option<SharedTurn>>;
    fn leads(&self) -> bool;
    async fn leadership_lost(&self);
    async fn settle_abandoned_creates(&self) -> StoreResult<usize>;
    /// Keeps `link_id`'s sealed token, given (again) at `given_at_ms`.
    async fn keep_token(
        &self,
        link_id: String,
        sealed: SealedToken,
        given_at_ms: Millis,
    ) -> StoreResult<()>;
    /// Replaces the token sealed under `from_key` by `sealed` (key rotation); nothing if it
    /// changed meanwhile.
    async fn reseal_token(
        &self,
        link_id: String,
        from_key: String,
        sealed: SealedToken,
    ) -> StoreResult<()>;
    /// Drops the Link's token, its accounts' stored movements and its owed fetches (each
    /// then logged TOKEN_NOT_KEPT); `false` when the Link is unknown.
    async fn forget_link(&self, link_id: String) -> StoreResult<bool>;
    /// The keys kept tokens are sealed under, with how many each seals.
    async fn token_keys(&self) -> StoreResult<Vec<(String, i64)>>;
    /// Drops the tokens sealed under `key_id`; how many.
    async fn drop_tokens_of_key(&self, key_id: String) -> StoreResult<usize>;
    /// Drops tokens last given before `given_before_ms`; how many.
    async fn drop_expired_tokens(&self, given_before_ms: Millis) -> StoreResult<usize>;
    /// Leases the due fetches of one Link (one whose fetches nobody holds) to `owner` for
    /// `lease_ms`.
    async fn claim_fetches(
        &self,
        owner: String,
        lease_ms: Millis,
    ) -> StoreResult<Option<FetchClaim>>;
    /// Settles `jobs` (one account's, leased to `owner`) with what their fetch found, as
    /// `decide::movements` rules, in one commit.
    async fn finish_fetches(
        &self,
        owner: String,
        jobs: Vec<FetchJob>,
        outcome: FetchOutcome,
    ) -> StoreResult<FetchDone>;
    /// A page of the account's stored movements after `after` ((post_date, id) of the last
    /// one of the previous page); `None` for an unknown account.
    async fn list_movements(
        &self,
        account_id: String,
        after: Option<(String, String)>,
        limit: i64,
    ) -> StoreResult<Option<MovementsPage>>;
    /// Whether every fetch owed for the intent's results is settled: then the newest
    /// sequence of its movements entries (0 if none); `None` while one is owed.
    async fn movements_settled(&self, intent_id: String) -> StoreResult<Option<i64>>;
    async fn ping(&self) -> bool;
    fn can_commit(&self) -> bool;
    fn is_healthy(&self) -> bool;
    async fn failed(&self);
    fn break_for_test(&self);
    async fn close(&self);
}
