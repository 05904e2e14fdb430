//! The service's answers as errors a program can act on: the gRPC code and the
//! `google.rpc` details (ErrorInfo reason and metadata, RetryInfo) read into one enum.

use std::time::Duration;

use tonic::{Code, Status};
use tonic_types::StatusExt;

/// What went wrong with a call or a watch.
#[derive(Debug)]
pub enum Error {
    /// The Link was refreshed successfully too recently (`REFRESH_COOLDOWN`): retry after
    /// `retry_after`; `refresh_intent_id` is that last success (empty if unknown here).
    Cooldown {
        /// When a refresh may be asked for again.
        retry_after: Option<Duration>,
        /// The last successful refresh.
        refresh_intent_id: String,
        /// The service's words.
        message: String,
    },
    /// The bank rejected the Link's credentials (`CREDENTIALS_REJECTED`): reconnect it; the
    /// hold ends after `retry_after`, when known.
    CredentialsRejected {
        /// When the hold ends, if known.
        retry_after: Option<Duration>,
        /// The service's words.
        message: String,
    },
    /// Movements were asked of a server without `LINK_TOKEN_KEYS` (`MOVEMENTS_DISABLED`).
    MovementsDisabled(String),
    /// The cursor is older than what the server retains (`CURSOR_EXPIRED`); a [`crate::Watcher`]
    /// re-syncs on its own instead of returning this.
    CursorExpired {
        /// The oldest sequence still retained.
        oldest_sequence: u64,
        /// The service's words.
        message: String,
    },
    /// The intent, Link or account is not known to the service.
    NotFound(String),
    /// The request itself is wrong (the message says how).
    InvalidArgument(String),
    /// Another `FAILED_PRECONDITION` (the Link is inactive, has no accounts …), with its reason.
    FailedPrecondition {
        /// The ErrorInfo reason (`LINK_INACTIVE`, `LINK_WITHOUT_ACCOUNTS`, …).
        reason: String,
        /// The service's words.
        message: String,
    },
    /// No bearer token, or a wrong one.
    Unauthenticated(String),
    /// The caller may not do this.
    PermissionDenied(String),
    /// The service could not be reached or answered `UNAVAILABLE`.
    Unavailable(String),
    /// Any other status.
    Status(Status),
    /// The client's own settings (an address, TLS files, a token) cannot be used.
    Config(String),
    /// The service answered something this client does not understand.
    Protocol(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Cooldown { message, .. }
            | Error::CredentialsRejected { message, .. }
            | Error::CursorExpired { message, .. }
            | Error::FailedPrecondition { message, .. } => f.write_str(message),
            Error::MovementsDisabled(m)
            | Error::NotFound(m)
            | Error::InvalidArgument(m)
            | Error::Unauthenticated(m)
            | Error::PermissionDenied(m)
            | Error::Unavailable(m)
            | Error::Config(m)
            | Error::Protocol(m) => f.write_str(m),
            Error::Status(status) => write!(f, "{:?}: {}", status.code(), status.message()),
        }
    }
}

impl std::error::Error for Error {}

impl Error {
    /// As a status again: the original one where it was kept (its causes with it), else one
    /// made of the code and message.
    pub fn into_status(self) -> Status {
        match self {
            Error::Status(status) => status,
            other => Status::new(other.code(), other.to_string()),
        }
    }

    /// The gRPC code behind it (`UNKNOWN` for this client's own settings, `INTERNAL` for an
    /// answer it does not understand).
    pub fn code(&self) -> Code {
        match self {
            Error::Cooldown { .. } => Code::ResourceExhausted,
            Error::CredentialsRejected { .. }
            | Error::MovementsDisabled(_)
            | Error::FailedPrecondition { .. } => Code::FailedPrecondition,
            Error::CursorExpired { .. } => Code::OutOfRange,
            Error::NotFound(_) => Code::NotFound,
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Status(status) => status.code(),
            Error::Config(_) => Code::Unknown,
            Error::Protocol(_) => Code::Internal,
        }
    }
}

/// The ErrorInfo reason a status carries, if it is the service's.
pub(crate) fn reason_of(status: &Status) -> Option<String> {
    status
        .get_details_error_info()
        .filter(|info| info.domain == crate::ERROR_DOMAIN)
        .map(|info| info.reason)
}

fn retry_after(status: &Status) -> Option<Duration> {
    status.get_details_retry_info().and_then(|r| r.retry_delay)
}

impl From<Status> for Error {
    fn from(status: Status) -> Error {
        let message = status.message().to_owned();
        let info = status
            .get_details_error_info()
            .filter(|info| info.domain == crate::ERROR_DOMAIN);
        let reason = info.as_ref().map(|i| i.reason.as_str()).unwrap_or_default();
        match (status.code(), reason) {
            (Code::ResourceExhausted, "REFRESH_COOLDOWN") => Error::Cooldown {
                retry_after: retry_after(&status),
                refresh_intent_id: info
                    .as_ref()
                    .and_then(|i| i.metadata.get("refresh_intent_id").cloned())
                    .unwrap_or_default(),
                message,
            },
            (Code::FailedPrecondition, "CREDENTIALS_REJECTED") => Error::CredentialsRejected {
                retry_after: retry_after(&status),
                message,
            },
            (Code::FailedPrecondition, "MOVEMENTS_DISABLED") => Error::MovementsDisabled(message),
            (Code::FailedPrecondition, _) => Error::FailedPrecondition {
                reason: reason.to_owned(),
                message,
            },
            (Code::OutOfRange, "CURSOR_EXPIRED") => Error::CursorExpired {
                oldest_sequence: info
                    .as_ref()
                    .and_then(|i| i.metadata.get("oldest_sequence")?.parse().ok())
                    .unwrap_or(0),
                message,
            },
            (Code::NotFound, _) => Error::NotFound(message),
            (Code::InvalidArgument, _) => Error::InvalidArgument(message),
            (Code::Unauthenticated, _) => Error::Unauthenticated(message),
            (Code::PermissionDenied, _) => Error::PermissionDenied(message),
            (Code::Unavailable, _) => Error::Unavailable(message),
            _ => Error::Status(status),
        }
    }
}

/// Whether a TLS handshake failed (a certificate refused or required): retrying cannot fix
/// the settings.
#[cfg(not(feature = "tls"))]
fn tls_refused(_: &Status) -> bool {
    false
}

/// Whether a TLS handshake failed (a certificate refused or required): retrying cannot fix
/// the settings.
#[cfg(feature = "tls")]
fn tls_refused(status: &Status) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = cause {
        if error.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // hyper hands rustls' error over inside an io::Error.
        if let Some(io) = error.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Whether a watch gives up on this status: only a definitive answer about the request
/// itself. Anything else (`UNAVAILABLE`, transport errors, the `INTERNAL`/`UNKNOWN` a proxy
/// reports when it loses a backend mid-stream, a server out of streams) is worth resuming.
pub(crate) fn definitive(status: &Status) -> bool {
    tls_refused(status)
        || matches!(
            status.code(),
            Code::InvalidArgument
                | Code::NotFound
                | Code::Unauthenticated
                | Code::PermissionDenied
                | Code::FailedPrecondition
        )
        || (status.code() == Code::OutOfRange
            && reason_of(status).is_some_and(|r| r != "CURSOR_EXPIRED"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::{ErrorDetails, StatusExt};

    fn with(code: Code, reason: &str, metadata: &[(&str, &str)]) -> Status {
        let mut details = ErrorDetails::with_error_info(
            reason,
            crate::ERROR_DOMAIN,
            metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<std::collections::HashMap<_, _>>(),
        );
        details.set_retry_info(Some(Duration::from_secs(42)));
        Status::with_error_details(code, "why", details)
    }

    #[test]
    fn the_services_details_become_typed_errors() {
        let cooldown = with(
            Code::ResourceExhausted,
            "REFRESH_COOLDOWN",
            &[("refresh_intent_id", "ri_1")],
        );
        assert!(matches!(
            Error::from(cooldown),
            Error::Cooldown { retry_after: Some(d), refresh_intent_id, .. }
                if d == Duration::from_secs(42) && refresh_intent_id == "ri_1"
        ));
        let expired = with(
            Code::OutOfRange,
            "CURSOR_EXPIRED",
            &[("oldest_sequence", "17")],
        );
        assert!(!definitive(&expired));
        assert!(matches!(
            Error::from(expired),
            Error::CursorExpired {
                oldest_sequence: 17,
                ..
            }
        ));
        let held = with(Code::FailedPrecondition, "CREDENTIALS_REJECTED", &[]);
        assert!(definitive(&held));
        assert!(matches!(
            Error::from(held),
            Error::CredentialsRejected { .. }
        ));
        assert!(matches!(
            Error::from(Status::not_found("x")),
            Error::NotFound(_)
        ));
        for resumable in [
            Code::Unavailable,
            Code::Internal,
            Code::Unknown,
            Code::ResourceExhausted,
        ] {
            assert!(!definitive(&Status::new(resumable, "x")), "{resumable:?}");
        }
        assert!(definitive(&with(Code::OutOfRange, "CURSOR_AHEAD", &[])));
    }
}
