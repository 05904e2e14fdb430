//! The three layers every request passes, outermost first: authentication and the request
//! log (a request that fails authentication is not recorded anywhere), the `Idempotency-Key`
//! store (replays a POST's first answer), and fault injection (so an injected fault is the
//! answer the key stores, as a real failure at Fintoc would be).

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::{Shared, error, error_about};
use crate::simulator::state::{Fault, StoredAnswer};

/// Authentication and the request log, before anything else.
pub(super) async fn guard(State(s): State<Shared>, request: Request, next: Next) -> Response {
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|key| key == s.config.api_key);
    if !authorized {
        return error(
            401,
            "authentication_error",
            "invalid_api_key",
            "Invalid API Key provided",
        );
    }
    s.model()
        .record_request(request.method().as_str(), request.uri().path());
    next.run(request).await
}

/// Largest request body the simulator reads (its endpoints take a few small fields).
const MAX_BODY: usize = 1 << 20;

/// Fintoc's limit on an `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// `Idempotency-Key` on a POST: the first answer for the key (whatever it was: a success,
/// a refusal, an injected fault) is stored and replayed byte for byte to every repeat with
/// the same parameters for 24 hours; a repeat with other parameters is refused (and that
/// refusal is not stored). Two first requests racing with one key both run; the first to
/// finish is what the key keeps (Fintoc documents nothing for that case).
pub(super) async fn idempotency(State(s): State<Shared>, request: Request, next: Next) -> Response {
    let key = request
        .headers()
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_owned));
    let key = match key {
        Some(Ok(key)) if request.method() == Method::POST => key,
        Some(Err(_)) if request.method() == Method::POST => String::new(),
        _ => return next.run(request).await,
    };
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY {
        return error_about(
            400,
            "invalid_request_error",
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 visible characters",
            None,
        );
    }
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return error(
            400,
            "invalid_request_error",
            "invalid_body",
            "The request body could not be read",
        );
    };
    let fingerprint = fingerprint(&parts.method, &parts.uri, &body);
    let now = s.config.clock.now_ms();
    let stored = s.model().recall(&key, now);
    if let Some(stored) = stored {
        if stored.fingerprint != fingerprint {
            return error(
                400,
                "invalid_request_error",
                "idempotency_key_reused",
                "Keys for idempotent requests can only be used with the same parameters they were first used with",
            );
        }
        return replay(&stored);
    }
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    let (parts, body) = response.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let answer = StoredAnswer {
        fingerprint,
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: body.clone(),
        at_ms: now,
    };
    s.model().remember(key, answer);
    Response::from_parts(parts, Body::from(body))
}

/// A stored answer, as first given.
fn replay(stored: &StoredAnswer) -> Response {
    let mut response = Response::new(Body::from(stored.body.clone()));
    *response.status_mut() =
        StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(v) = stored
        .content_type
        .as_deref()
        .and_then(|t| HeaderValue::from_str(t).ok())
    {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

/// What makes two requests "the same" for an idempotency key: method, path, and the
/// parameters wherever they travel (query or JSON body: the create call accepts both).
fn fingerprint(method: &Method, uri: &axum::http::Uri, body: &[u8]) -> String {
    let mut params: BTreeMap<String, String> = Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|Query(pairs)| pairs.into_iter().collect())
        .unwrap_or_default();
    if !body.is_empty() {
        match serde_json::from_slice::<serde_json::Map<String, Value>>(body) {
            Ok(fields) => params.extend(fields.into_iter().map(|(k, v)| {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                (k, v)
            })),
            Err(_) => {
                params.insert(String::new(), String::from_utf8_lossy(body).into_owned());
            }
        }
    }
    let params = serde_json::to_string(&params).unwrap_or_default();
    format!("{method} {}\n{params}", uri.path())
}

/// Injected faults, inside the idempotency layer so a POST's fault is what its key stores.
pub(super) async fn faults(State(s): State<Shared>, request: Request, next: Next) -> Response {
    let fault = s
        .model()
        .next_fault(request.method().as_str(), request.uri().path());
    match fault {
        None => next.run(request).await,
        Some(Fault::Slow(wait)) => {
            tokio::time::sleep(wait).await;
            next.run(request).await
        }
        Some(Fault::Malformed) => (StatusCode::OK, "{\"id\": \"ri_trunc").into_response(),
        Some(Fault::Status(429)) => {
            error(429, "api_error", "too_many_requests", "Too many requests")
        }
        Some(Fault::Status(code)) => error(
            code,
            "api_error",
            "internal_server_error",
            "Something went wrong on our end",
        ),
    }
}
