//! The one error type of the service and its one mapping to gRPC statuses.
//!
//! Client-facing variants carry a message a person can act on and the precise code (plus
//! `google.rpc` details where the contract asks for them). Internal failures are logged in
//! full where they happen and answered with a generic message: callers never see database
//! or upstream internals, and secrets never reach a message.

use std::collections::HashMap;
use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::config::format_duration;

/// ErrorInfo domain for every reason below.
pub const DOMAIN: &str = "fintoc-refresh";

/// ErrorInfo reasons (and GetLink's eligibility reasons), named once: the server sets
/// them, the CLI and GetLink read or repeat them.
pub mod reason {
    pub const CURSOR_EXPIRED: &str = "CURSOR_EXPIRED";
    pub const CURSOR_AHEAD: &str = "CURSOR_AHEAD";
    pub const STREAM_MAX_AGE: &str = "STREAM_MAX_AGE";
    pub const REFRESH_COOLDOWN: &str = "REFRESH_COOLDOWN";
    pub const CREDENTIALS_REJECTED: &str = "CREDENTIALS_REJECTED";
    /// Not an error: GetLink's answer when RequestRefresh would join the pending intent.
    pub const IN_PROGRESS: &str = "IN_PROGRESS";
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    /// The resume cursor is older than what is retained.
    #[error(
        "after_sequence {after} is older than the retained log; the oldest available sequence is {oldest}: resume with after_sequence = 0 to read everything retained"
    )]
    CursorExpired { after: u64, oldest: u64 },
    /// A seek by time (`start_time`) to where retention already removed results: the same
    /// answer as an expired cursor (OUT_OF_RANGE, `CURSOR_EXPIRED`), worded for the time.
    #[error(
        "start_time {start} is older than the retained log: results stored at or after it were removed by retention; the oldest available sequence is {oldest}: re-sync (GetLink/ListLinks) and watch after their as_of_sequence, or resume with after_sequence = 0 to read everything retained"
    )]
    SeekExpired { start: String, oldest: u64 },
    /// A watch stream reached `--max-stream-age`: it ends so the client reconnects (perhaps to
    /// another replica) and resumes after `after`, the heartbeat it was just sent.
    #[error(
        "this stream reached its age limit (--max-stream-age), so clients spread over the servers; reconnect and resume with after_sequence = {after}"
    )]
    StreamMaxAge { after: u64 },
    /// The resume cursor is past the end of the log (a cursor from another database?).
    #[error("after_sequence {after} is ahead of the log, whose newest sequence is {newest}")]
    CursorAhead { after: u64, newest: u64 },
    /// A successful refresh of this Link happened too recently.
    #[error("{message}")]
    Cooldown {
        message: String,
        retry_after: Duration,
        /// The intent that started the cooldown, when known.
        refresh_intent_id: String,
    },
    /// The bank rejected the Link's credentials.
    #[error("{0}")]
    CredentialsRejected(String),
    /// The Link has nothing Fintoc would refresh (inactive, or without accounts); `reason`
    /// is the ErrorInfo reason.
    #[error("{message}")]
    NothingToRefresh {
        reason: &'static str,
        message: String,
    },
    /// Movements (kept tokens, include_movements) were asked of a server without
    /// LINK_TOKEN_KEYS.
    #[error(
        "movements are off on this server: its operator enables them by setting LINK_TOKEN_KEYS \
         (\"<key id>:<base64 of 32 random bytes>\"; see the README, Movements) to {0}"
    )]
    MovementsDisabled(&'static str),
    /// The call lacks the credentials the server requires (a bearer token).
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Unavailable(String),
    /// A server-wide limit is reached (too many open streams): retry later.
    #[error("{0}")]
    Exhausted(String),
    /// Fintoc refused our own API key or answered something we cannot use: an operator must act.
    #[error("{0}")]
    Upstream(String),
    /// A failure inside the service (storage, a task): logged in full, answered generically.
    #[error("{what} failure: {detail}")]
    Internal { what: &'static str, detail: String },
}

impl AppError {
    pub fn code(&self) -> Code {
        match self {
            AppError::InvalidArgument(_) => Code::InvalidArgument,
            AppError::NotFound(_) => Code::NotFound,
            AppError::CursorExpired { .. }
            | AppError::SeekExpired { .. }
            | AppError::CursorAhead { .. } => Code::OutOfRange,
            AppError::Cooldown { .. } => Code::ResourceExhausted,
            AppError::CredentialsRejected(_)
            | AppError::NothingToRefresh { .. }
            | AppError::MovementsDisabled(_) => Code::FailedPrecondition,
            AppError::Unauthenticated(_) => Code::Unauthenticated,
            AppError::Unavailable(_) | AppError::StreamMaxAge { .. } => Code::Unavailable,
            AppError::Exhausted(_) => Code::ResourceExhausted,
            AppError::Upstream(_) | AppError::Internal { .. } => Code::Internal,
        }
    }
}

fn info(reason: &str, metadata: &[(&str, String)]) -> ErrorDetails {
    let metadata: HashMap<String, String> = metadata
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    ErrorDetails::with_error_info(reason, DOMAIN, metadata)
}

impl From<AppError> for Status {
    fn from(err: AppError) -> Status {
        let code = err.code();
        match &err {
            AppError::CursorExpired { oldest, .. } | AppError::SeekExpired { oldest, .. } => {
                Status::with_error_details(
                    code,
                    err.to_string(),
                    info(
                        reason::CURSOR_EXPIRED,
                        &[("oldest_sequence", oldest.to_string())],
                    ),
                )
            }
            AppError::StreamMaxAge { after } => Status::with_error_details(
                code,
                err.to_string(),
                info(
                    reason::STREAM_MAX_AGE,
                    &[("after_sequence", after.to_string())],
                ),
            ),
            AppError::CursorAhead { newest, .. } => Status::with_error_details(
                code,
                err.to_string(),
                info(
                    reason::CURSOR_AHEAD,
                    &[("newest_sequence", newest.to_string())],
                ),
            ),
            AppError::Cooldown {
                retry_after,
                refresh_intent_id,
                ..
            } => {
                let mut details = info(
                    reason::REFRESH_COOLDOWN,
                    &[("refresh_intent_id", refresh_intent_id.clone())],
                );
                details.set_retry_info(Some(*retry_after));
                Status::with_error_details(code, err.to_string(), details)
            }
            AppError::CredentialsRejected(_) => Status::with_error_details(
                code,
                err.to_string(),
                info(reason::CREDENTIALS_REJECTED, &[]),
            ),
            AppError::NothingToRefresh { reason, .. } => {
                Status::with_error_details(code, err.to_string(), info(reason, &[]))
            }
            AppError::MovementsDisabled(_) => {
                Status::with_error_details(code, err.to_string(), info("MOVEMENTS_DISABLED", &[]))
            }
            AppError::Internal { what, detail } => {
                tracing::error!(error = %detail, "{what} failure");
                Status::internal(format!(
                    "internal {what} error; the server log has the details"
                ))
            }
            _ => Status::new(code, err.to_string()),
        }
    }
}

/// A cooldown answer: `left` is rounded up to whole seconds ("retry in 0s" helps nobody).
pub fn cooldown(
    kind: crate::domain::RefreshType,
    left: Duration,
    refresh_intent_id: String,
) -> AppError {
    let what = format!("this Link was refreshed successfully by {refresh_intent_id} too recently");
    cooldown_because(kind, left, refresh_intent_id, what)
}

/// The cooldown answer when Fintoc refused with `rate_limit_exceeded`: `refresh_intent_id`
/// is the last success known here (empty if none).
pub fn fintoc_cooldown(
    kind: crate::domain::RefreshType,
    left: Duration,
    refresh_intent_id: String,
) -> AppError {
    let what = if refresh_intent_id.is_empty() {
        "Fintoc says this Link was refreshed successfully too recently".to_owned()
    } else {
        format!(
            "Fintoc says this Link was refreshed successfully too recently (the last success \
             known here is {refresh_intent_id})"
        )
    };
    cooldown_because(kind, left, refresh_intent_id, what)
}

fn cooldown_because(
    kind: crate::domain::RefreshType,
    left: Duration,
    refresh_intent_id: String,
    what: String,
) -> AppError {
    let left = Duration::from_secs(left.as_millis().div_ceil(1000) as u64);
    AppError::Cooldown {
        message: format!(
            "{what}: a new {kind} refresh is allowed in {} (Fintoc allows one every {})",
            format_duration(left),
            format_duration(crate::domain::policy::cooldown_for(kind)),
        ),
        retry_after: left,
        refresh_intent_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_details() {
        let s: Status = AppError::CursorExpired {
            after: 3,
            oldest: 10,
        }
        .into();
        assert_eq!(s.code(), Code::OutOfRange);
        assert!(
            s.message().contains("oldest available sequence is 10"),
            "{}",
            s.message()
        );
        let info = s.get_details_error_info().unwrap();
        assert_eq!(info.reason, "CURSOR_EXPIRED");
        assert_eq!(info.domain, DOMAIN);
        assert_eq!(info.metadata["oldest_sequence"], "10");

        let s: Status = cooldown(
            crate::domain::RefreshType::OnlyLast,
            Duration::from_millis(239_001),
            "ri_1".into(),
        )
        .into();
        assert_eq!(s.code(), Code::ResourceExhausted);
        assert_eq!(
            s.get_details_retry_info().unwrap().retry_delay,
            Some(Duration::from_secs(240))
        );
        assert_eq!(
            s.get_details_error_info().unwrap().metadata["refresh_intent_id"],
            "ri_1"
        );
        assert!(s.message().contains("4m"), "{}", s.message());

        let s: Status = AppError::CredentialsRejected("reconnect".into()).into();
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert_eq!(
            s.get_details_error_info().unwrap().reason,
            "CREDENTIALS_REJECTED"
        );

        let s: Status = AppError::Internal {
            what: "storage",
            detail: "the database writer has stopped".into(),
        }
        .into();
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("writer"), "internals stay in the log");
    }
}
