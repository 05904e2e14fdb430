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
        /// The envelope's `param`: the parameter the error is about, empty when absent.
        param: String,
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

    /// The HTTP status Fintoc answered with, if it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            FintocError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether Fintoc refused the link token itself (the Link was deleted, the token
    /// revoked, or it belongs to the other mode), so a kept token should be dropped:
    /// - code `invalid_link_token` or `link_not_found`, under any 4xx but 429;
    /// - 404 `missing_resource` whose `param` is `link_token` (without that `param` a 404
    ///   `missing_resource` may be about the account or the movement in the path, and
    ///   dropping a good token on a guess would be worse than one failed fetch);
    /// - 401/403 of type `link_error` (a refusal of the Link, not of our API key, which is
    ///   `authentication_error`), except `rejected_refresh_intent`: the bank refused the
    ///   credentials, the token itself is still valid.
    ///
    /// Never a 5xx, a 429, or a transport failure: those say nothing about the token.
    pub fn is_invalid_link_token(&self) -> bool {
        let FintocError::Api {
            status,
            error_type,
            code,
            param,
            ..
        } = self
        else {
            return false;
        };
        match (*status, code.as_str()) {
            (429 | 500.., _) => false,
            (400.., "invalid_link_token" | "link_not_found") => true,
            (404, "missing_resource") => param == "link_token",
            (401 | 403, code) => error_type == "link_error" && code != "rejected_refresh_intent",
            _ => false,
        }
    }

    /// Replaces every occurrence of `secret` in this error's text by `[redacted]`: Fintoc's
    /// messages are free text that could quote a request's parameters.
    pub(super) fn redact(&mut self, secret: &str) {
        if secret.is_empty() {
            return;
        }
        let scrub = |text: &mut String| {
            if text.contains(secret) {
                *text = text.replace(secret, "[redacted]");
            }
        };
        match self {
            FintocError::Api {
                error_type,
                code,
                message,
                param,
                ..
            } => {
                for text in [error_type, code, message, param] {
                    scrub(text);
                }
            }
            FintocError::Unreachable(text) | FintocError::Malformed(text) => scrub(text),
            FintocError::TypeMismatch {
                intent_id,
                asked,
                answered,
            } => {
                for text in [intent_id, asked, answered] {
                    scrub(text);
                }
            }
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
            param: String::new(),
        }
    }

    #[test]
    fn invalid_link_tokens_are_told_apart() {
        let with = |status: u16, error_type: &str, code: &str, param: &str| FintocError::Api {
            status,
            error_type: error_type.into(),
            code: code.into(),
            message: String::new(),
            param: param.into(),
        };
        let invalid = [
            with(404, "invalid_request_error", "invalid_link_token", ""),
            with(
                400,
                "invalid_request_error",
                "invalid_link_token",
                "link_token",
            ),
            with(404, "invalid_request_error", "link_not_found", ""),
            with(
                404,
                "invalid_request_error",
                "missing_resource",
                "link_token",
            ),
            with(401, "link_error", "invalid_link", ""),
            with(403, "link_error", "link_revoked", ""),
        ];
        for e in invalid {
            assert!(e.is_invalid_link_token(), "{e:?}");
        }
        let not = [
            // The account in the path, not the token.
            with(404, "invalid_request_error", "missing_resource", ""),
            with(404, "invalid_request_error", "missing_resource", "id"),
            // Our API key, not the Link.
            with(401, "authentication_error", "invalid_api_key", ""),
            with(403, "invalid_request_error", "forbidden", ""),
            // The bank refused the credentials: the token is fine.
            with(403, "link_error", "rejected_refresh_intent", ""),
            with(400, "link_error", "rejected_refresh_intent", ""),
            with(429, "invalid_request_error", "invalid_link_token", ""),
            with(500, "api_error", "invalid_link_token", ""),
            with(
                400,
                "invalid_request_error",
                "missing_parameter",
                "link_token",
            ),
            FintocError::Unreachable("invalid_link_token".into()),
            FintocError::Malformed("invalid_link_token".into()),
        ];
        for e in not {
            assert!(!e.is_invalid_link_token(), "{e:?}");
        }
    }

    #[test]
    fn redacts_a_secret_from_every_text() {
        let mut e = FintocError::Api {
            status: 404,
            error_type: "invalid_request_error".into(),
            code: "invalid_link_token".into(),
            message: "Invalid link token: link_SECRET (link_SECRET)".into(),
            param: "link_token".into(),
        };
        e.redact("link_SECRET");
        assert_eq!(
            e.to_string(),
            "Fintoc answered HTTP 404 invalid_link_token: Invalid link token: [redacted] ([redacted])"
        );
        let mut e = FintocError::Malformed("near link_SECRET".into());
        e.redact("link_SECRET");
        assert!(!format!("{e} {e:?}").contains("link_SECRET"));
        e.redact("");
        assert_eq!(e, FintocError::Malformed("near [redacted]".into()));
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
