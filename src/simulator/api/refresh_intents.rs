//! `/v1/refresh_intents`: creating an intent (the parameters Fintoc takes, the refusals it
//! answers), running its refresh and publishing its events, listing and getting intents.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Params, Shared, error, no_link, ok, page, required, undocumented};
use crate::domain::RefreshType;
use crate::simulator::state::{Intent, State as Model};

/// `POST /v1/refresh_intents`: `link_token` and `refresh_type`, documented as query
/// parameters; Fintoc's SDKs send them as a JSON body, which Fintoc accepts too. Nothing else.
pub(super) async fn create_intent(
    State(s): State<Shared>,
    Query(query): Params,
    body: Bytes,
) -> Response {
    let body: HashMap<String, Value> = if body.is_empty() {
        HashMap::new()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(_) => {
                return error(
                    400,
                    "invalid_request_error",
                    "invalid_json",
                    "The request body is not valid JSON",
                );
            }
        }
    };
    if let Err(refused) = undocumented(query.keys().chain(body.keys()), &CREATE_PARAMS) {
        return refused;
    }
    let param = |name: &str| {
        query
            .get(name)
            .cloned()
            .or_else(|| body.get(name).and_then(Value::as_str).map(str::to_owned))
            .filter(|v| !v.is_empty())
    };
    let Some(token) = param("link_token") else {
        return error(
            400,
            "invalid_request_error",
            "missing_parameter",
            "Missing required param: link_token",
        );
    };
    let kind = param("refresh_type").unwrap_or_else(|| "only_last".into());
    let now = s.config.clock.now_ms();
    let (status, answer, intent) =
        decide(&mut s.model(), &token, &kind, now, s.config.cooldown_status);
    if let Some(intent) = intent {
        let run = run_refresh(s.clone(), intent);
        if s.config.deliver_before_response {
            run.await;
        } else {
            tokio::spawn(run);
        }
    }
    ok(status, answer)
}

/// The create call's documented parameters.
const CREATE_PARAMS: [&str; 2] = ["link_token", "refresh_type"];

/// The create call's answer, and the intent to run if one was created.
fn decide(
    model: &mut Model,
    token: &str,
    kind: &str,
    now: i64,
    cooldown_status: u16,
) -> (u16, Value, Option<Intent>) {
    let envelope = |status: u16, kind: &str, code: &str, message: String| {
        (
            status,
            json!({"error": {"type": kind, "code": code, "message": message, "param": null,
            "doc_url": "https://docs.fintoc.com/reference/errors"}}),
            None,
        )
    };
    let Ok(refresh_type) = RefreshType::parse(kind) else {
        return envelope(
            400,
            "invalid_request_error",
            "invalid_refresh_type",
            format!("Invalid refresh_type: {kind}"),
        );
    };
    let Some(link) = model.link_by_token(token) else {
        return envelope(
            404,
            "invalid_request_error",
            "invalid_link_token",
            "Invalid link token".into(),
        );
    };
    if let Some((status, kind, code, message)) =
        model.refusal(link, refresh_type, now, cooldown_status)
    {
        return envelope(status, kind, code, message);
    }
    let intent = model.create_intent(token, refresh_type, now);
    (201, intent.to_json(), Some(intent))
}

/// After the (MFA and) refresh delay: produce the events and deliver them.
async fn run_refresh(s: Shared, intent: Intent) {
    let mut wait = s.config.delivery_delay;
    if intent.widget_token.is_some() {
        wait += s.config.mfa_delay;
    }
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    let events = s
        .model()
        .run_intent(&intent.id, s.config.clock.now_ms(), s.config.reorder);
    s.publish(events).await;
}

pub(super) async fn list_intents(State(s): State<Shared>, Query(q): Params) -> Response {
    let token = match required(&q, "link_token") {
        Ok(t) => t.to_owned(),
        Err(e) => return e,
    };
    let items: Vec<Value> = {
        let model = s.model();
        if model.link_by_token(&token).is_none() {
            return no_link();
        }
        model
            .intents
            .iter()
            .rev()
            .filter(|i| i.link_token == token)
            .map(Intent::to_json)
            .collect()
    };
    page(&s, "/v1/refresh_intents", &q, items)
}

pub(super) async fn get_intent(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let token = match required(&q, "link_token") {
        Ok(t) => t,
        Err(e) => return e,
    };
    let model = s.model();
    if model.link_by_token(token).is_none() {
        return no_link();
    }
    match model
        .intents
        .iter()
        .find(|i| i.id == id && i.link_token == token)
    {
        Some(intent) => ok(200, intent.to_json()),
        None => error(
            404,
            "invalid_request_error",
            "missing_resource",
            "No such refresh intent",
        ),
    }
}
