//! The gRPC side: RefreshService (`service.rs`, behind the bearer-token check in `auth.rs`)
//! with one file per RPC that does more than a lookup — RequestRefresh in `refresh.rs` (the
//! edge of the `crate::refresh` use case), WatchRefresh in `watch.rs`, GetLink and ListLinks
//! in `links.rs` — and the conversions
//! to wire messages (`convert.rs`).

pub mod auth;
pub mod codec;
pub mod convert;
pub mod links;
pub mod refresh;
mod service;
pub mod watch;

pub use service::Service;

/// Largest request message accepted (tonic answers OUT_OF_RANGE above it). Every request is
/// a few ids; 4 MiB (tonic's default) would only let a caller make the server buffer more.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Longest id (intent, Link, account, idempotency key) accepted; Fintoc's are ~25 bytes and
/// its idempotency keys at most 255.
pub const MAX_ID_BYTES: usize = 255;

/// An id from a request: present, and of a sane length (it is not echoed when it is not).
pub fn check_id(field: &str, id: &str) -> Result<(), crate::error::AppError> {
    use crate::error::AppError;
    if id.trim().is_empty() {
        return Err(AppError::InvalidArgument(format!("{field} is empty")));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(AppError::InvalidArgument(format!(
            "{field} is {} bytes; at most {MAX_ID_BYTES} are accepted",
            id.len()
        )));
    }
    Ok(())
}
