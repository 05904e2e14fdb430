//! The simulator's HTTP API: Fintoc's endpoints as Fintoc documents them, always answering
//! errors with Fintoc's envelope, behind three layers (`middleware.rs`). Here: the shared
//! state, the router, and the answers every resource builds (the error envelope, a page of
//! a v1 list, required and undocumented parameters). One file per resource beside it.

// Handlers return a ready `Response` as their error: it is the HTTP answer itself, built
// once per failed request; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod accounts;
mod events;
mod links;
mod middleware;
mod movements;
mod publish;
mod refresh_intents;
mod webhook_endpoints;

use accounts::{get_account, list_accounts};
use events::{get_event, list_events};
use links::get_link;
use middleware::{faults, guard, idempotency};
use movements::list_movements;
use refresh_intents::{create_intent, get_intent, list_intents};
use webhook_endpoints::{
    create_endpoint, delete_endpoint, get_endpoint, list_endpoints, update_endpoint,
};

use super::SimConfig;
use super::deliver::{Deliverer, Delivery};
use super::state::State as Model;

#[derive(Clone)]
pub struct Shared {
    config: Arc<SimConfig>,
    state: Arc<Mutex<Model>>,
    deliverer: Arc<Deliverer>,
    /// The runtime the simulator started on, to deliver events produced by calls from
    /// outside it (tests' blocking threads).
    runtime: tokio::runtime::Handle,
}

impl Shared {
    pub fn new(
        config: SimConfig,
        state: Arc<Mutex<Model>>,
        log: Arc<Mutex<Vec<Delivery>>>,
        shutdown: CancellationToken,
    ) -> Shared {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(config.insecure_webhook_tls)
            .build()
            .expect("the TLS backend initializes");
        let deliverer = Deliverer {
            http,
            clock: config.clock.clone(),
            retry_base: config.retry_base,
            max_retries: config.max_retries,
            log,
            shutdown,
        };
        Shared {
            config: Arc::new(config),
            state,
            deliverer: Arc::new(deliverer),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    pub(super) fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.state.lock().expect("simulator state")
    }
}

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/v1/refresh_intents", get(list_intents).post(create_intent))
        .route("/v1/refresh_intents/{id}", get(get_intent))
        .route("/v1/links/{token}", get(get_link))
        .route("/v1/accounts", get(list_accounts))
        .route("/v1/accounts/{id}", get(get_account))
        .route("/v1/accounts/{id}/movements", get(list_movements))
        .route("/v2/events", get(list_events))
        .route("/v2/events/{id}", get(get_event))
        .route(
            "/v1/webhook_endpoints",
            get(list_endpoints).post(create_endpoint),
        )
        .route(
            "/v1/webhook_endpoints/{id}",
            get(get_endpoint)
                .patch(update_endpoint)
                .delete(delete_endpoint),
        )
        .fallback(|| async {
            error(
                404,
                "invalid_request_error",
                "unrecognized_request",
                "Unrecognized request URL",
            )
        })
        // The last layer added runs first.
        .layer(from_fn_with_state(shared.clone(), faults))
        .layer(from_fn_with_state(shared.clone(), idempotency))
        .layer(from_fn_with_state(shared.clone(), guard))
        .with_state(shared)
}

/// Fintoc's error envelope.
fn error(status: u16, kind: &str, code: &str, message: &str) -> Response {
    error_about(status, kind, code, message, None)
}

/// Fintoc's error envelope naming the offending parameter.
fn error_about(
    status: u16,
    kind: &str,
    code: &str,
    message: &str,
    param: Option<&str>,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"type": kind, "code": code, "message": message, "param": param,
        "doc_url": "https://docs.fintoc.com/reference/errors"}});
    (status, axum::Json(body)).into_response()
}

/// The first parameter (in name order) that is not among `documented`, refused the way
/// Fintoc refuses a bad parameter. Fintoc's answer to an unknown parameter is undocumented;
/// the simulator is strict on purpose, so a client leaving the documented API fails in tests.
fn undocumented<'a>(
    names: impl IntoIterator<Item = &'a String>,
    documented: &[&str],
) -> Result<(), Response> {
    let mut unknown: Vec<&String> = names
        .into_iter()
        .filter(|n| !documented.contains(&n.as_str()))
        .collect();
    unknown.sort();
    match unknown.first() {
        None => Ok(()),
        Some(name) => Err(error_about(
            400,
            "invalid_request_error",
            "unrecognized_parameter",
            &format!("Unrecognized param: {name}"),
            Some(name),
        )),
    }
}

fn ok(status: u16, body: Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        axum::Json(body),
    )
        .into_response()
}

type Params = Query<HashMap<String, String>>;

fn required<'a>(params: &'a HashMap<String, String>, name: &str) -> Result<&'a str, Response> {
    params
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            error(
                400,
                "invalid_request_error",
                "missing_parameter",
                &format!("Missing required param: {name}"),
            )
        })
}

fn no_link() -> Response {
    error(
        404,
        "invalid_request_error",
        "invalid_link_token",
        "Invalid link token",
    )
}

/// A page of `items` with Fintoc's v1 `Link` header (offset pagination, full query kept).
fn page(s: &Shared, path: &str, query: &HashMap<String, String>, items: Vec<Value>) -> Response {
    let per_page = query
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(30usize)
        .clamp(1, 300);
    let page = query
        .get("page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1usize)
        .max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let base = s.model().base_url.clone();
    let url = |p: usize| {
        let mut q: Vec<(String, String)> = query
            .iter()
            .filter(|(k, _)| *k != "page")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        q.sort();
        q.push(("page".into(), p.to_string()));
        let mut u = reqwest::Url::parse(&format!("{base}{path}")).expect("simulator URL");
        u.query_pairs_mut().extend_pairs(q);
        u.to_string()
    };
    let mut links = vec![format!("<{}>; rel=\"first\"", url(1))];
    if page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", url(page - 1)));
    }
    if page < last {
        links.push(format!("<{}>; rel=\"next\"", url(page + 1)));
    }
    links.push(format!("<{}>; rel=\"last\"", url(last)));
    let slice: Vec<Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut response = ok(200, Value::Array(slice));
    if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
        response.headers_mut().insert(header::LINK, v);
    }
    response
}
