//! How a call to Fintoc fails, and what each failure means to a caller of this service: the
//! one mapping from Fintoc's answers to [`AppError`] (and so to gRPC codes).

use crate::error::AppError;

/// How a call to Fintoc failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FintocError {
    /// Fintoc answered with an error envelope (or a non-2xx without one).
    #[error("Fintoc answered HTTP {status} {code}: {message}")]
    Api {
        status: u16,
        error_type: String,
        code: String,
        message: String,
    },
    /// Fintoc could not be reached or did not answer in time (after retries).
    #[error("{0}")]
    Unreachable(String),
    /// A 2xx whose body is not what the API documents (after retries).
    #[error("Fintoc's answer could not be read: {0}")]
    Malformed(String),
    /// Fintoc created a refresh intent, but not of the type asked for. Not retried: the
    /// same idempotency key would replay the same answer. The intent exists at Fintoc.
    #[error(
        "Fintoc created refresh intent {intent_id} of type {answered} although {asked} was asked for"
    )]
    TypeMismatch {
        intent_id: String,
        asked: String,
        answered: String,
    },
}

impl FintocError {
    pub fn code(&self) -> Option<&str> {
        match self {
            FintocError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    pub(super) fn retryable(&self) -> bool {
        match self {
            // The refresh cooldown is an answer, not congestion; everything else under 429
            // and every 5xx is worth another try.
            FintocError::Api { status, code, .. } => {
                (*status == 429 && code != "rate_limit_exceeded") || *status >= 500
            }
            FintocError::Unreachable(_) | FintocError::Malformed(_) => true,
            FintocError::TypeMismatch { .. } => false,
        }
    }

    /// Whether Fintoc (or something in its place) answered the request: Fintoc stored that
    /// answer under the request's idempotency key, so repeating the key would only replay
    /// it. A timeout or a lost connection leaves the outcome unknown.
    pub(super) fn answered(&self) -> bool {
        match self {
            FintocError::Api { .. }
            | FintocError::Malformed(_)
            | FintocError::TypeMismatch { .. } => true,
            FintocError::Unreachable(_) => false,
        }
    }

    pub(super) fn metric_outcome(&self) -> &'static str {
        match self {
            FintocError::Api { status: 429, .. } => "status_429",
            FintocError::Api { status, .. } if *status >= 500 => "status_5xx",
            FintocError::Api { .. } => "status_4xx",
            FintocError::Unreachable(m) if m.contains("time") => "timeout",
            FintocError::Unreachable(_) => "unreachable",
            FintocError::Malformed(_) => "malformed",
            FintocError::TypeMismatch { .. } => "type_mismatch",
        }
    }

    /// This failure as a status a caller can act on, `doing` saying what was being done.
    /// Fintoc's own message is not passed on (it may quote the request); the code is.
    pub fn into_app_error(self, doing: &str) -> AppError {
        match &self {
        FintocError::Api { status, error_type, code, .. } => match (code.as_str(), *status) {
            ("rejected_refresh_intent", _) => AppError::CredentialsRejected(
                "the bank rejected this Link's credentials (Fintoc: rejected_refresh_intent); the Link must be \
                 reconnected through the Fintoc widget before it can be refreshed"
                    .into(),
            ),
            ("invalid_link_token" | "missing_resource" | "link_not_found", _) | (_, 404) => AppError::NotFound(
                format!("Fintoc does not know this link token ({code}); it may have been deleted, or belong to the other mode (live vs test)"),
            ),
            ("invalid_api_key", _) | (_, 401) => {
                tracing::error!(status, code, "Fintoc refused this service's API key while {doing}: check FINTOC_SECRET_KEY");
                AppError::Upstream(
                    "Fintoc refused this service's API key; an operator must check FINTOC_SECRET_KEY".into(),
                )
            }
            _ if error_type == "authentication_error" => {
                tracing::error!(status, code, "Fintoc refused this service's credentials while {doing}");
                AppError::Upstream(
                    "Fintoc refused this service's API key; an operator must check FINTOC_SECRET_KEY".into(),
                )
            }
            (_, 402 | 403) => {
                tracing::error!(status, code, "Fintoc refused the request while {doing}");
                AppError::Upstream(format!(
                    "Fintoc refused the request while {doing} (HTTP {status} {code}); the organization may lack the on-demand refresh policy"
                ))
            }
            (_, 429) | (_, 500..) => AppError::Unavailable(format!(
                "Fintoc kept failing while {doing} (HTTP {status}{}); try again later",
                if code.is_empty() { String::new() } else { format!(" {code}") }
            )),
            _ => {
                tracing::error!(status, code, error_type, "Fintoc rejected our request while {doing}");
                AppError::Upstream(format!("Fintoc rejected the request while {doing} (HTTP {status} {code})"))
            }
        },
        FintocError::Unreachable(why) => AppError::Unavailable(format!("Fintoc is unavailable while {doing}: {why}")),
        FintocError::Malformed(why) => {
            AppError::Unavailable(format!("Fintoc's answer while {doing} could not be read: {why}; try again later"))
        }
        FintocError::TypeMismatch { .. } => {
            tracing::error!(error = %self, "Fintoc's answer does not match the request while {doing}");
            AppError::Upstream(format!("{self}"))
        }
    }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: &str) -> FintocError {
        FintocError::Api {
            status,
            error_type: "invalid_request_error".into(),
            code: code.into(),
            message: "secret-bearing text".into(),
        }
    }

    #[test]
    fn upstream_failures_map_to_precise_codes() {
        use tonic::Code;
        let table = [
            (
                api(400, "rejected_refresh_intent"),
                Code::FailedPrecondition,
            ),
            (api(404, "invalid_link_token"), Code::NotFound),
            (api(400, "invalid_link_token"), Code::NotFound),
            (api(401, "invalid_api_key"), Code::Internal),
            (api(403, "forbidden"), Code::Internal),
            (api(503, ""), Code::Unavailable),
            (api(429, "too_many_requests"), Code::Unavailable),
            (api(400, "missing_parameter"), Code::Internal),
            (
                FintocError::Unreachable("connection refused".into()),
                Code::Unavailable,
            ),
            (
                FintocError::Malformed("not valid JSON".into()),
                Code::Unavailable,
            ),
        ];
        for (err, code) in table {
            let mapped = err.clone().into_app_error("testing");
            assert_eq!(mapped.code(), code, "{err:?}");
            assert!(!mapped.to_string().contains("secret-bearing"), "{mapped}");
        }
    }
}
