//! A client for fintoc-refresh: ask for refreshes of bank Links and follow every result,
//! never missing one and never seeing one twice.
//!
//! - [`pb`]: the wire types and the raw gRPC stub, generated from the service's proto.
//! - [`Client`]: one connection setup (plaintext, TLS, mutual TLS, a bearer token) over one
//!   or several addresses of the service (its replicas: each call goes to the current one and
//!   moves on to the next when it cannot be reached); the unary calls, with typed [`Error`]s
//!   read from the `google.rpc` details the service sends (a cooldown's retry time, …).
//! - [`Watcher`]: a [`futures_util::Stream`] of [`WatchEvent`]s that keeps its cursor (every
//!   message's, heartbeats included), resumes after it on anything but a definitive answer
//!   (`UNAVAILABLE`, transport errors, the `INTERNAL`/`UNKNOWN` a proxy reports when it loses
//!   a backend, a stream the server ends on purpose), re-syncs through `GetLink`/`ListLinks`
//!   when the cursor has expired, and ends after `refresh_completed` when it follows one
//!   refresh intent.
//!
//! ```no_run
//! use fintoc_refresh_client::{Client, Options, Target, WatchEvent};
//! use futures_util::StreamExt;
//!
//! # async fn run() -> Result<(), fintoc_refresh_client::Error> {
//! let client = Client::connect(["http://127.0.0.1:50051"], Options::default())?;
//! let stored: Option<u64> = None; // the cursor your service kept, if any
//! let mut watcher = client.watch(Target::links(["link_1", "link_2"])).after(stored);
//! while let Some(event) = watcher.next().await {
//!     if let WatchEvent::Message(message) = event? {
//!         println!("#{} {:?}", message.sequence, message.event);
//!     }
//!     let _keep = watcher.cursor(); // store it: a new watcher starts after it
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod connect;
mod error;
mod watch;

pub use connect::{Client, Options, Tls};
pub use error::Error;
pub use watch::{Target, WatchEvent, Watcher};

/// The wire types and the raw client stub (`refresh_service_client`), generated from
/// `proto/fintoc/refresh/v1/refresh.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("fintoc.refresh.v1");
}

/// The `domain` of the service's `google.rpc.ErrorInfo` details.
pub const ERROR_DOMAIN: &str = "fintoc-refresh";
