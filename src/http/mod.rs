//! The HTTP side: Fintoc's webhook intake (`webhook.rs`) plus the operator endpoints.
//!
//! `GET /healthz` answers while the process runs; `GET /readyz` only while the database
//! answers, storage can commit, and the server is not draining; `GET /metrics` is the Prometheus text format.
//! Every request is bounded: `--max-body-bytes` (413) and `--request-timeout` (408).

pub mod webhook;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tower_http::timeout::TimeoutLayer;

use crate::app::App;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/webhooks/fintoc", post(webhook::receive))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        // The intake reads the whole body (the signature covers all of it): cap it. A body
        // of exactly the limit is accepted.
        .layer(DefaultBodyLimit::max(app.config.max_body_bytes))
        // A sender that trickles its body (or a stalled disk) gets 408, not a connection held
        // for ever; an event whose commit was still under way is a duplicate on Fintoc's retry.
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            app.config.request_timeout,
        ))
        .with_state(app)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    if app.draining.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if !app.store.is_healthy() {
        (StatusCode::SERVICE_UNAVAILABLE, "storage stopped\n")
    } else if app.store.ping().await {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
    }
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    app.metrics.leader.set(i64::from(app.store.leads()));
    app.metrics
        .can_commit
        .set(i64::from(app.store.can_commit()));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(app.hub.open_streams()),
    )
}
