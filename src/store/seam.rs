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
    async fn ping(&self) -> bool;
    fn can_commit(&self) -> bool;
    fn is_healthy(&self) -> bool;
    async fn failed(&self);
    fn break_for_test(&self);
    async fn close(&self);
}
