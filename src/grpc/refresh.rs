//! RequestRefresh at the gRPC edge: check the wire request, work out the caller's deadline
//! from `grpc-timeout`, run the use case (`refresh::run`, which owns the flow and speaks
//! domain types only) and put its outcome on the wire.
//!
//! What is checked here is what only the wire can get wrong: lengths, and a refresh type
//! number the proto does not define.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Request;

use super::convert;
use crate::app::App;
use crate::error::AppError;
use crate::pb;
use crate::refresh::{self, Ask, Outcome};
use crate::secret::Secret;

/// Kept back from the caller's deadline so the answer (an UNAVAILABLE that says why, say)
/// reaches the caller before its own timer gives up: a tenth of it, at most this much.
const ANSWER_MARGIN: Duration = Duration::from_millis(250);
/// Fintoc's limit on idempotency keys.
const MAX_KEY_LEN: usize = 255;
/// Link tokens are ~50 bytes; anything this long is not one (and is never echoed).
const MAX_TOKEN_LEN: usize = 1024;

/// How long the work may take: the caller's `grpc-timeout`, at most `limit`
/// (`--request-timeout`, also the budget when the caller sets none), minus a margin to answer
/// in.
pub fn deadline_of<T>(request: &Request<T>, limit: Duration) -> Instant {
    let budget = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(limit, |asked| asked.min(limit));
    Instant::now() + budget - (budget / 10).min(ANSWER_MARGIN)
}

/// `grpc-timeout` is an integer of at most 8 digits and a unit: H, M, S, m, u or n.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// RequestRefresh: the wire request in, the wire answer out, the use case in between.
pub async fn request(
    app: &Arc<App>,
    request: pb::RequestRefreshRequest,
    deadline: Instant,
) -> Result<pb::RequestRefreshResponse, AppError> {
    if request.keep_link_token && app.config.link_token_keys.is_none() {
        return Err(AppError::MovementsDisabled(
            "keep Link tokens (keep_link_token)",
        ));
    }
    let ask = validate(request)?;
    let outcome = refresh::run(app, ask, deadline).await?;
    Ok(answer(outcome))
}

/// A link token as the wire gave it, checked (never echoed).
pub fn checked_token(link_token: String) -> Result<Secret, AppError> {
    if link_token.trim().is_empty() {
        return Err(AppError::InvalidArgument("link_token is empty".into()));
    }
    if link_token.len() > MAX_TOKEN_LEN {
        return Err(AppError::InvalidArgument(format!(
            "link_token is {} bytes; a Fintoc link token is far shorter (at most {MAX_TOKEN_LEN} are accepted)",
            link_token.len()
        )));
    }
    Ok(Secret::new(link_token))
}

/// The wire request as an [`Ask`], or INVALID_ARGUMENT saying what is wrong (the token
/// itself is never echoed).
fn validate(request: pb::RequestRefreshRequest) -> Result<Ask, AppError> {
    let token = checked_token(request.link_token)?;
    let refresh_type = convert::refresh_type_from_pb(request.refresh_type).ok_or_else(|| {
        AppError::InvalidArgument(format!(
            "refresh_type {} is not a RefreshType (use REFRESH_TYPE_ONLY_LAST or REFRESH_TYPE_HISTORICAL)",
            request.refresh_type
        ))
    })?;
    if request.idempotency_key.len() > MAX_KEY_LEN {
        return Err(AppError::InvalidArgument(format!(
            "idempotency_key is {} bytes; at most {MAX_KEY_LEN} are allowed",
            request.idempotency_key.len()
        )));
    }
    Ok(Ask::new(
        token,
        refresh_type,
        Some(request.idempotency_key).filter(|k| !k.is_empty()),
    )
    .keeping_token(request.keep_link_token))
}

fn answer(outcome: Outcome) -> pb::RequestRefreshResponse {
    pb::RequestRefreshResponse {
        refresh_intent: Some(convert::refresh_intent(&outcome.intent)),
        joined_existing: outcome.joined_existing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

    #[test]
    fn wire_mistakes_are_invalid_arguments() {
        let asked = |link_token: &str, refresh_type: i32, key: &str| {
            validate(pb::RequestRefreshRequest {
                link_token: link_token.to_owned(),
                refresh_type,
                idempotency_key: key.to_owned(),
                keep_link_token: false,
            })
            .err()
            .map(|e| e.to_string())
        };
        assert_eq!(asked("tok", 0, ""), None);
        assert_eq!(asked("tok", 2, &"k".repeat(MAX_KEY_LEN)), None);
        assert_eq!(asked("  ", 1, ""), Some("link_token is empty".into()));
        let long = "t".repeat(MAX_TOKEN_LEN + 1);
        assert!(!asked(&long, 1, "").unwrap().contains(&long));
        assert!(
            asked("tok", 99, "")
                .unwrap()
                .starts_with("refresh_type 99 ")
        );
        assert!(
            asked("tok", 1, &"k".repeat(MAX_KEY_LEN + 1))
                .unwrap()
                .starts_with("idempotency_key is 256 bytes")
        );
    }
}
