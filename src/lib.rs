//! fintoc-refresh: refresh bank Links through Fintoc and push each account's result to
//! internal watchers over gRPC the moment Fintoc's webhook lands.
//!
//! # Layout
//! - [`server`]: `serve(listeners, config, shutdown)`, the one entry `main` and tests share.
//! - [`config`], [`clock`], [`secret`], [`error`]: settings, injected time, redaction, and
//!   the one error type with its one mapping to gRPC statuses.
//! - [`domain`]: pure rules: statuses and completion, correlation, cooldown and hold.
//! - [`fintoc`]: the signature scheme, event payloads and the REST client.
//! - [`webhook`], [`http`]: the HTTP intake and operator endpoints.
//! - [`store`]: SQLite behind one seam; the single group-committing writer and the thread
//!   that fsyncs its commits before anyone is answered.
//! - [`hub`]: the wake-up fan-out to watchers.
//! - [`grpc`]: the RefreshService (RequestRefresh in [`refresh`], WatchRefresh in
//!   `grpc::watch`).
//! - [`tasks`]: deadlines (reconcile, timeout) and retention.
//! - [`tls`]: certificates and keys checked at start, the HTTPS listener of the intake;
//!   `grpc::auth` is the bearer-token check.
//! - [`simulator`]: a Fintoc look-alike for laptops and tests; [`cli`]: the human client.

pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
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
pub mod tls;
pub mod webhook;

pub use config::Config;
pub use server::{Listeners, serve};

/// Generated from `proto/fintoc/refresh/v1/refresh.proto` by build.rs.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("fintoc.refresh.v1");

    /// The encoded descriptors, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("refresh_descriptor");

    /// `google/rpc/error_details.proto` and `google/rpc/status.proto` with their imports,
    /// for server reflection: the detail messages (ErrorInfo, RetryInfo …) our statuses carry.
    pub const ERROR_DETAILS_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("error_details_descriptor");
}
