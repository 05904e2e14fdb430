//! `/v1/webhook_endpoints`: the endpoints events are delivered to, created, listed, updated
//! and deleted through the API.

// Handlers return a ready `Response` as their error (see `api/mod.rs`).
#![allow(clippy::result_large_err)]

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use serde_json::{Value, json};

use super::{Params, Shared, error, ok, page};
use crate::simulator::state::{Endpoint, new_id};

pub(super) async fn list_endpoints(State(s): State<Shared>, Query(q): Params) -> Response {
    let items = {
        let model = s.model();
        model
            .endpoints
            .iter()
            .rev()
            .map(|e| e.to_json(model.mode, false))
            .collect()
    };
    page(&s, "/v1/webhook_endpoints", &q, items)
}

fn endpoint_fields(body: &Value) -> Result<(Option<String>, Option<Vec<String>>), Response> {
    let url = body.get("url").and_then(Value::as_str).map(str::to_owned);
    let events = match body.get("enabled_events") {
        None => None,
        Some(Value::Array(list)) => Some(
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
        ),
        Some(_) => {
            return Err(error(
                400,
                "invalid_request_error",
                "invalid_parameter",
                "enabled_events must be an array",
            ));
        }
    };
    Ok((url, events))
}

pub(super) async fn create_endpoint(State(s): State<Shared>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (url, events) = match endpoint_fields(&body) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let (Some(url), Some(enabled_events)) = (url, events) else {
        return error(
            400,
            "invalid_request_error",
            "missing_parameter",
            "Missing required param: url, enabled_events",
        );
    };
    let mut model = s.model();
    let endpoint = Endpoint {
        id: new_id("we"),
        url,
        secret: new_id("whsec"),
        enabled_events,
        description: body
            .get("description")
            .and_then(Value::as_str)
            .map(str::to_owned),
        disabled: false,
        created_at_ms: s.config.clock.now_ms(),
    };
    let answer = endpoint.to_json(model.mode, true);
    model.endpoints.push(endpoint);
    ok(201, answer)
}

pub(super) async fn get_endpoint(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let model = s.model();
    match model.endpoints.iter().find(|e| e.id == id) {
        Some(e) => ok(200, e.to_json(model.mode, false)),
        None => error(
            404,
            "invalid_request_error",
            "missing_resource",
            "No such webhook endpoint",
        ),
    }
}

pub(super) async fn update_endpoint(
    State(s): State<Shared>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (url, events) = match endpoint_fields(&body) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let mut model = s.model();
    let mode = model.mode;
    let Some(endpoint) = model.endpoints.iter_mut().find(|e| e.id == id) else {
        return error(
            404,
            "invalid_request_error",
            "missing_resource",
            "No such webhook endpoint",
        );
    };
    if let Some(url) = url {
        endpoint.url = url;
    }
    if let Some(events) = events {
        endpoint.enabled_events = events;
    }
    if let Some(disabled) = body.get("disabled").and_then(Value::as_bool) {
        endpoint.disabled = disabled;
    }
    if let Some(d) = body.get("description").and_then(Value::as_str) {
        endpoint.description = Some(d.to_owned());
    }
    ok(200, endpoint.to_json(mode, false))
}

pub(super) async fn delete_endpoint(
    State(s): State<Shared>,
    Path(id): Path<String>,
    method: Method,
) -> Response {
    let mut model = s.model();
    let before = model.endpoints.len();
    model.endpoints.retain(|e| e.id != id);
    if model.endpoints.len() == before {
        return error(
            404,
            "invalid_request_error",
            "missing_resource",
            "No such webhook endpoint",
        );
    }
    debug_assert_eq!(method, Method::DELETE);
    ok(
        200,
        json!({"id": id, "object": "webhook_endpoint", "deleted": true}),
    )
}
