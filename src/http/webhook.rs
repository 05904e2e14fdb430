//! `POST /webhooks/fintoc`: Fintoc's signed deliveries.
//!
//! The order is the contract: check the signature over the raw bytes (401 on any failure,
//! nothing stored), only then parse; hand the body to the writer; answer 2xx only once the
//! commit holding it is durable. Duplicates, unknown types and signed-but-unparseable bodies
//! are acknowledged too (Fintoc would otherwise retry for days) but never pushed twice or at
//! all. A storage failure is a 500, so Fintoc retries.
//!
//! With traces on, each delivery is a `webhook` span: event id and type (once verified),
//! outcome and the wait for durability; never the body.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde_json::json;
use tracing::Instrument;

use crate::app::App;
use crate::fintoc::event::{decode, type_label};
use crate::fintoc::signature;
use crate::store::IngestOutcome;
use crate::telemetry;

pub const SIGNATURE_HEADER: &str = "fintoc-signature";

pub async fn receive(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> (StatusCode, Json<serde_json::Value>) {
    // The writer's job inherits this span (`store/sqlite/writer.rs`), so the group commit
    // links back to it.
    let span = telemetry::webhook_span();
    intake(app, headers, body, &span)
        .instrument(span.clone())
        .await
}

async fn intake(
    app: Arc<App>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    span: &telemetry::Span,
) -> (StatusCode, Json<serde_json::Value>) {
    let started = Instant::now();
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let outcome = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "too_large"
            } else {
                "bad_request"
            };
            app.metrics.event("unverified", outcome);
            span.record("outcome", outcome);
            let limit = app.config.max_body_bytes;
            let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
                format!("body larger than {limit} bytes")
            } else {
                rejection.body_text()
            };
            return (status, Json(json!({ "error": message })));
        }
    };
    let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    let now_ms = app.config.clock.now_ms();
    if let Err(e) = signature::verify(
        header,
        &body,
        &app.config.webhook_secrets,
        now_ms.div_euclid(1000),
    ) {
        app.metrics.event("unverified", "rejected_signature");
        span.record("outcome", "rejected_signature");
        tracing::warn!(
            reason = e.label(),
            bytes = body.len(),
            "webhook refused: {e}"
        );
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid or missing Fintoc-Signature" })),
        );
    }
    let decoded = decode(&body);
    let label = type_label(decoded.event_type());
    // Only once the signature holds: an unverified body names nothing on a span.
    let event_id = (!span.is_none())
        .then(|| decoded.event_id().map(str::to_owned))
        .flatten();
    telemetry::webhook_event(span, event_id.as_deref(), label);
    let waiting = Instant::now();
    let result = app.store.ingest_webhook(body, decoded, now_ms).await;
    let durable_wait = waiting.elapsed();
    app.metrics
        .intake_seconds
        .observe(started.elapsed().as_secs_f64());
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(e) => {
            app.metrics.event(label, "error");
            telemetry::webhook_done(span, event_id.as_deref(), "error", durable_wait);
            // 503 when waiting helps (the database out of reach, read-only, conflicting past
            // the request's time), 500 otherwise; Fintoc retries either.
            let status = if e.is_unavailable() {
                tracing::warn!(error = %e, "webhook not stored: the database is unavailable; Fintoc will retry");
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                tracing::error!(error = %e, "webhook not stored; Fintoc will retry");
                StatusCode::INTERNAL_SERVER_ERROR
            };
            return (status, Json(json!({ "error": "not stored, retry later" })));
        }
    };
    let (name, sequence) = match outcome {
        IngestOutcome::Logged(seq) => ("stored", Some(seq)),
        IngestOutcome::Held => ("held", None),
        IngestOutcome::Ignored => ("ignored", None),
        IngestOutcome::Unparseable => ("unparseable", None),
        IngestOutcome::Duplicate => ("duplicate", None),
    };
    app.metrics.event(label, name);
    telemetry::webhook_done(span, event_id.as_deref(), name, durable_wait);
    let mut reply = json!({ "outcome": name });
    if let Some(seq) = sequence {
        reply["sequence"] = seq.into();
    }
    (StatusCode::OK, Json(reply))
}
