//! Prometheus metrics, one registry per server (no globals, so several servers can run in
//! one test process). Label values come from closed sets only: an attacker posting made-up
//! event types cannot grow the label space, and no secret is ever a label.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// A known Fintoc event type, "other" or "unparseable".
    pub event_type: &'static str,
    /// stored, duplicate, held, ignored, unparseable, rejected_signature, too_large, error.
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    pub rpc: &'static str,
    /// The gRPC code name, e.g. "Ok", "NotFound".
    pub code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// missing, not_bearer or wrong_token.
    pub reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub endpoint: &'static str,
    /// ok, or the failure class (timeout, connect, status_5xx, status_429, …).
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub webhook_events: Family<EventLabels, Counter>,
    pub intake_seconds: Histogram,
    pub commit_batch_size: Histogram,
    pub commit_seconds: Histogram,
    pub wal_syncs: Counter,
    pub wal_sync_seconds: Histogram,
    /// SQLite only: the WAL file's size, and its frames (and those copied into the database)
    /// at the last checkpoint.
    pub wal_bytes: Gauge,
    pub wal_frames: Gauge,
    pub wal_checkpointed_frames: Gauge,
    /// SQLite only: `--sqlite-wal-limit-bytes` (0 without a WAL file), so an alert can compare
    /// `wal_bytes` with the limit the operator chose instead of a copy of it in the rules.
    pub wal_limit_bytes: Gauge,
    /// SQLite only: WAL restarts the writer tried (restarted, busy, failed), and its pause.
    pub wal_restarts: Family<OutcomeLabels, Counter>,
    pub wal_restart_seconds: Histogram,
    pub watch_streams: Gauge,
    pub watch_lagged: Counter,
    pub rpcs: Family<RpcLabels, Counter>,
    pub unauthenticated: Family<RefusalLabels, Counter>,
    pub upstream: Family<UpstreamLabels, Counter>,
    pub timed_out_intents: Counter,
    /// 1 while this process runs the background work (always on SQLite; on PostgreSQL, the
    /// replica holding the leader lock).
    pub leader: Gauge,
    pub reconciled_events: Counter,
    pub pruned_rows: Counter,
    /// PostgreSQL: group commits run again (conflict: the counter's lock not granted in time,
    /// a deadlock or a serialization failure; reconnect: on a fresh connection).
    pub commit_retries: Family<OutcomeLabels, Counter>,
    /// 1 while this process can commit (its last check took the log's lock and committed).
    pub can_commit: Gauge,
    /// Movement fetches settled, by what Fintoc answered and what the store did with it.
    pub movement_fetches: Family<FetchLabels, Counter>,
    /// Requests one account's listing sent to Fintoc (pages, passes and retries).
    pub movement_requests: Counter,
    pub movement_listing_seconds: Histogram,
    /// Kept tokens moved to the sealing key as they were used (key rotation).
    pub link_tokens_resealed: Counter,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    /// listed, token_invalid, token_gone or failed.
    pub outcome: &'static str,
    /// written, retrying or lease_lost.
    pub settled: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("fintoc_refresh");
        let webhook_events = Family::<EventLabels, Counter>::default();
        registry.register(
            "webhook_events",
            "Webhook deliveries received, by event type and what became of them",
            webhook_events.clone(),
        );
        // 50 µs .. ~1.6 s: an intake answer is a signature check plus one group commit.
        let intake_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "webhook_intake_seconds",
            "Time from receiving a webhook body to answering it (durable commit included)",
            intake_seconds.clone(),
        );
        let commit_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        registry.register(
            "commit_batch_size",
            "Writes (webhook events and others) made durable together by one group commit",
            commit_batch_size.clone(),
        );
        // 50 µs .. ~1.6 s: the statements of every job in the group plus one fsync.
        let commit_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "commit_seconds",
            "Time from a group commit's start until it is durable and answered",
            commit_seconds.clone(),
        );
        let wal_syncs = Counter::default();
        registry.register(
            "wal_syncs",
            "fsyncs of the WAL; each covers every group committed since the previous one",
            wal_syncs.clone(),
        );
        let wal_sync_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "wal_sync_seconds",
            "Time one fsync of the WAL takes",
            wal_sync_seconds.clone(),
        );
        let wal_bytes = Gauge::default();
        registry.register(
            "wal_bytes",
            "SQLite: size of the WAL file, as the writer last saw it",
            wal_bytes.clone(),
        );
        let wal_frames = Gauge::default();
        registry.register(
            "wal_frames",
            "SQLite: frames in the WAL at the last checkpoint",
            wal_frames.clone(),
        );
        let wal_checkpointed_frames = Gauge::default();
        registry.register(
            "wal_checkpointed_frames",
            "SQLite: of the WAL's frames, those the last checkpoint found copied into the database",
            wal_checkpointed_frames.clone(),
        );
        let wal_limit_bytes = Gauge::default();
        registry.register(
            "wal_limit_bytes",
            "SQLite: the WAL's configured limit (--sqlite-wal-limit-bytes); 0 without a WAL file",
            wal_limit_bytes.clone(),
        );
        let wal_restarts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "wal_restarts",
            "SQLite: WAL restarts the writer tried between group commits, by outcome \
             (restarted; busy: readers still on old frames, tried again later; failed)",
            wal_restarts.clone(),
        );
        let wal_restart_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        registry.register(
            "wal_restart_seconds",
            "SQLite: time the writer paused between two group commits to restart the WAL",
            wal_restart_seconds.clone(),
        );
        let watch_streams = Gauge::default();
        registry.register(
            "watch_streams",
            "Open WatchRefresh streams",
            watch_streams.clone(),
        );
        let watch_lagged = Counter::default();
        registry.register(
            "watch_lagged",
            "Times a watcher fell behind its buffer and caught up from the database",
            watch_lagged.clone(),
        );
        let rpcs = Family::<RpcLabels, Counter>::default();
        registry.register(
            "rpcs",
            "gRPC calls answered, by method and status code",
            rpcs.clone(),
        );
        let unauthenticated = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "unauthenticated",
            "RefreshService calls refused before reaching it: bearer token missing or wrong",
            unauthenticated.clone(),
        );
        let upstream = Family::<UpstreamLabels, Counter>::default();
        registry.register(
            "fintoc_requests",
            "Calls to Fintoc's API, by endpoint and outcome",
            upstream.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process runs the background work (reconciliation, timeouts, retention)",
            leader.clone(),
        );
        let timed_out_intents = Counter::default();
        registry.register(
            "intents_timed_out",
            "Intents completed with TIMED_OUT results after the refresh timeout",
            timed_out_intents.clone(),
        );
        let reconciled_events = Counter::default();
        registry.register(
            "reconciled_events",
            "Events recovered through Fintoc's events endpoint instead of a webhook",
            reconciled_events.clone(),
        );
        let pruned_rows = Counter::default();
        registry.register(
            "pruned_rows",
            "Rows removed by retention",
            pruned_rows.clone(),
        );
        let commit_retries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "commit_retries",
            "PostgreSQL: group commits run again, by reason (conflict, reconnect)",
            commit_retries.clone(),
        );
        let movement_fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "movement_fetches",
            "Movement fetches settled, by Fintoc's answer and what became of the owed results",
            movement_fetches.clone(),
        );
        let movement_requests = Counter::default();
        registry.register(
            "movement_requests",
            "Requests sent to Fintoc to list movements (pages, passes and retries)",
            movement_requests.clone(),
        );
        // 10 ms .. ~80 s: a listing is a few pages, or a 429 schedule (~36 s).
        let movement_listing_seconds = Histogram::new(exponential_buckets(0.01, 2.0, 14));
        registry.register(
            "movement_listing_seconds",
            "Time to list one account's movements at Fintoc",
            movement_listing_seconds.clone(),
        );
        let link_tokens_resealed = Counter::default();
        registry.register(
            "link_tokens_resealed",
            "Kept link tokens resealed under the first key of LINK_TOKEN_KEYS (rotation)",
            link_tokens_resealed.clone(),
        );
        let can_commit = Gauge::default();
        registry.register(
            "can_commit",
            "1 while this process can commit to its database (readiness), else 0",
            can_commit.clone(),
        );
        Metrics {
            registry,
            webhook_events,
            intake_seconds,
            commit_batch_size,
            commit_seconds,
            wal_syncs,
            wal_sync_seconds,
            wal_bytes,
            wal_frames,
            wal_checkpointed_frames,
            wal_limit_bytes,
            wal_restarts,
            wal_restart_seconds,
            watch_streams,
            watch_lagged,
            rpcs,
            unauthenticated,
            upstream,
            timed_out_intents,
            leader,
            reconciled_events,
            pruned_rows,
            commit_retries,
            can_commit,
            movement_fetches,
            movement_requests,
            movement_listing_seconds,
            link_tokens_resealed,
        }
    }

    pub fn movement_fetch(&self, outcome: &'static str, settled: &'static str) {
        self.movement_fetches
            .get_or_create(&FetchLabels { outcome, settled })
            .inc();
    }

    pub fn event(&self, event_type: &'static str, outcome: &'static str) {
        self.webhook_events
            .get_or_create(&EventLabels {
                event_type,
                outcome,
            })
            .inc();
    }

    pub fn rpc(&self, rpc: &'static str, code: tonic::Code) {
        self.rpcs
            .get_or_create(&RpcLabels {
                rpc,
                code: code_name(code),
            })
            .inc();
    }

    pub fn wal_restart(&self, outcome: &'static str) {
        self.wal_restarts
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn commit_retry(&self, reason: &'static str) {
        self.commit_retries
            .get_or_create(&OutcomeLabels { outcome: reason })
            .inc();
    }

    pub fn unauthenticated(&self, reason: &'static str) {
        self.unauthenticated
            .get_or_create(&RefusalLabels { reason })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self, open_streams: u64) -> String {
        self.watch_streams.set(open_streams as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}
