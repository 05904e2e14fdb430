//! fintoc-refresh: refresh bank Links through Fintoc and push each account's result to
//! internal watchers over gRPC the moment Fintoc's webhook lands.
//!
//! # The data path
//!
//! A webhook in, to a watcher:
//! 1. **In**: `POST /webhooks/fintoc` reaches [`http::webhook::receive`].
//! 2. **Verify**: [`fintoc::signature::verify`] checks the HMAC over the raw bytes (401 and
//!    nothing stored on any failure); only then [`fintoc::event::decode`] reads the body.
//! 3. **Commit**: [`store::Store::ingest_webhook`] queues it for the SQLite writer, which
//!    stores the raw event (dedupe on its id), correlates an account result with the intent
//!    waiting for it ([`domain::correlate`]) and appends it to the result log, many webhooks
//!    per group commit (`store/sqlite/writer.rs`).
//! 4. **Fsync**: the sync thread makes the group durable (`store/sqlite/durable.rs`); only
//!    then is the webhook answered 2xx and the durable high water moved. On PostgreSQL the
//!    replica's writer (`store/postgres/writer.rs`) commits the group under the log
//!    counter's lock with `synchronous_commit` on, and every replica's tail
//!    (`store/postgres/tail.rs`) reads what any replica committed and publishes it.
//! 5. **Publish**: the store hands the new log entries to the sink wired in [`app::App::start`]:
//!    [`hub::Hub::publish`] queues each entry for the watchers of its intent, Link and account.
//! 6. **Stream**: each WatchRefresh stream ([`grpc::watch`]) replays from the log
//!    ([`store::Store::results_after`]), then takes live entries from its hub mailbox, with
//!    heartbeats that are safe resume cursors, until its intent completes.
//!
//! A refresh out, and back:
//! 1. [`grpc::refresh::request`] validates the call and hands it to [`refresh::run`], the
//!    use case; a repeated idempotency key, a pending intent (joined), a rejected-credentials
//!    hold or a cooldown ([`refresh::local`], [`domain::policy`]) is answered from the store
//!    without calling Fintoc.
//! 2. Otherwise, in the link token's turn ([`store::Store::link_turn`]), the Link is resolved
//!    with [`fintoc::client::Client::get_link`], the create marked in flight
//!    ([`store::Store::begin_create`]) so early results are held, and the intent created with
//!    [`fintoc::client::Client::create_refresh_intent`].
//! 3. [`store::CreateGuard::register`] records it with its expected accounts and logs the
//!    results held meanwhile; its results then arrive as webhooks (above), and the result that
//!    completes it ends its watchers' streams with `refresh_completed`.
//! 4. [`tasks`] reconciles intents whose webhooks went missing through Fintoc's events
//!    endpoint, times out what never arrives, and prunes past `--retention`.
//! 5. With `LINK_TOKEN_KEYS`, a succeeded result of a Link whose token is kept (sealed,
//!    [`custody`]) leaves a fetch job in its own commit; [`fetch`] lists the account's
//!    movements at Fintoc once and the store logs what changed after the result.
//!
//! # Layers
//!
//! Each module uses only modules of lower layers (`tests/it/layers.rs` keeps it so):
//! `clock`, `secret`, `metrics`, `telemetry` → `tls`, `custody` → `config` → `domain` →
//! `error` → `fintoc` → `store`, `simulator` → `hub` → `app` → `refresh` → `fetch` → `http`,
//! `grpc`, `tasks` → `server` → `cli`.
//!
//! - [`clock`], [`secret`], [`metrics`], [`telemetry`], [`tls`], [`custody`], [`config`]:
//!   injected time, redaction, Prometheus metrics, OpenTelemetry traces, certificates and
//!   keys, sealed link tokens, settings.
//! - [`domain`]: pure rules and plain data: statuses and completion, correlation, cooldown
//!   and hold, log entries and intents.
//! - [`error`]: the one error type and its one mapping to gRPC statuses.
//! - [`fintoc`]: the signature scheme, event payloads, the REST client and what its
//!   failures mean to callers.
//! - [`store`]: storage behind one seam that speaks in intentions (`store/seam.rs`: the
//!   vocabulary and the `Backend` trait each backend implements). Every decision about a
//!   result, a registration, a timeout and a completion is made once, without IO, in
//!   `store/decide/`; the backends only load the facts and write the plan: SQLite
//!   (`store/sqlite/`: the group-committing writer, the fsync thread, reads that answer only
//!   with what is durable, checkpoints and the WAL's bound, the one-process lock) and
//!   PostgreSQL (`store/postgres/`: one ordered log for several replicas, leases, the
//!   pooler). Below both: the shared row types (`store/rows.rs`), the reads both make alike
//!   (`store/queries.rs`), an intent's view (`store/view.rs`); [`store::copy`] moves a
//!   SQLite store into PostgreSQL.
//! - [`hub`]: the wake-up fan-out to watchers.
//! - [`app`]: the state every handler shares, and what builds it.
//! - [`refresh`]: the RequestRefresh use case (replay, join, hold, cooldown, create at
//!   Fintoc), in domain types, so an edge only translates.
//! - [`http`], [`grpc`]: the two surfaces — the webhook intake and probes; RefreshService.
//! - [`tasks`]: deadlines (reconcile, timeout) and retention; [`fetch`]: the movements
//!   fetcher every replica runs.
//! - [`server`]: `serve(listeners, config, shutdown)`, the one entry `main` and tests share.
//! - [`simulator`]: a Fintoc look-alike for laptops and tests; [`cli`]: the commands.

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod custody;
pub mod domain;
pub mod error;
pub mod fetch;
pub mod fintoc;
pub mod grpc;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod refresh;
pub mod secret;
pub mod server;
pub mod simulator;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod tls;

pub use config::Config;
pub use server::{Listeners, serve};

/// Generated from `proto/fintoc/refresh/v1/refresh.proto` by build.rs.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    // The wire types and the client stub, from the client library; the server stub, here.
    pub use fintoc_refresh_client::pb::*;
    tonic::include_proto!("fintoc.refresh.v1");

    /// The encoded descriptors, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("refresh_descriptor");

    /// `google/rpc/error_details.proto` and `google/rpc/status.proto` with their imports,
    /// for server reflection: the detail messages (ErrorInfo, RetryInfo …) our statuses carry.
    pub const ERROR_DETAILS_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("error_details_descriptor");
}
