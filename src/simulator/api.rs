//! The simulator's HTTP API: Fintoc's endpoints as Fintoc documents them, always answering
//! errors with Fintoc's envelope, behind three layers, outermost first: authentication and
//! the request log (a request that fails authentication is not recorded anywhere), the
//! `Idempotency-Key` store (replays a POST's first answer), and fault injection (so an
//! injected fault is the answer the key stores, as a real failure at Fintoc would be).

// Handlers return a ready `Response` as their error: it is the HTTP answer itself, built
// once per failed request; boxing it would only add noise.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::SimConfig;
use super::deliver::{Deliverer, Delivery};
use super::state::{Endpoint, Fault, Intent, Link, State as Model, StoredAnswer, new_id};
use crate::clock::format_rfc3339_ms;
use crate::domain::RefreshType;

#[derive(Clone)]
pub struct Shared {
    config: Arc<SimConfig>,
    state: Arc<Mutex<Model>>,
    deliverer: Arc<Deliverer>,
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
        }
    }

    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
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
        .layer(middleware::from_fn_with_state(shared.clone(), faults))
        .layer(middleware::from_fn_with_state(shared.clone(), idempotency))
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
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

/// Authentication and the request log, before anything else.
async fn guard(State(s): State<Shared>, request: Request, next: Next) -> Response {
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
async fn idempotency(State(s): State<Shared>, request: Request, next: Next) -> Response {
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
async fn faults(State(s): State<Shared>, request: Request, next: Next) -> Response {
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

/// `POST /v1/refresh_intents`: `link_token` and `refresh_type`, documented as query
/// parameters; Fintoc's SDKs send them as a JSON body, which Fintoc accepts too. Nothing else.
async fn create_intent(State(s): State<Shared>, Query(query): Params, body: Bytes) -> Response {
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
    let (events, targets) = {
        let mut model = s.model();
        let events = model.run_intent(&intent.id, s.config.clock.now_ms(), s.config.reorder);
        let mut targets: Vec<(String, String, Vec<String>)> = s
            .config
            .webhooks
            .iter()
            .map(|(url, secret)| (url.clone(), secret.clone(), vec!["*".into()]))
            .collect();
        targets.extend(
            model
                .endpoints
                .iter()
                .filter(|e| !e.disabled)
                .map(|e| (e.url.clone(), e.secret.clone(), e.enabled_events.clone())),
        );
        (events, targets)
    };
    // Every (event, target) pair, in the order the events were produced (reversed by
    // `reorder`, which also stored them that way).
    let mut round = Vec::new();
    for event in events.into_iter().filter(|e| e.deliver) {
        for (url, secret, wanted) in &targets {
            if wanted.iter().any(|w| w == "*" || *w == event.event_type) {
                round.push((event.clone(), url.clone(), secret.clone()));
            }
        }
    }
    let rounds = if s.config.duplicate { 2 } else { 1 };
    for _ in 0..rounds {
        if s.config.reorder {
            // One after another, so the receiver sees exactly this order.
            for (event, url, secret) in &round {
                s.deliverer
                    .deliver(&event.id, url, secret, &event.body)
                    .await;
            }
        } else {
            let all = round.iter().map(|(event, url, secret)| {
                let (d, id, url, secret, body) = (
                    s.deliverer.clone(),
                    event.id.clone(),
                    url.clone(),
                    secret.clone(),
                    event.body.clone(),
                );
                tokio::spawn(async move { d.deliver(&id, &url, &secret, &body).await })
            });
            for delivery in all.collect::<Vec<_>>() {
                let _ = delivery.await;
            }
        }
    }
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

async fn list_intents(State(s): State<Shared>, Query(q): Params) -> Response {
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

async fn get_intent(State(s): State<Shared>, Path(id): Path<String>, Query(q): Params) -> Response {
    let token = match required(&q, "link_token") {
        Ok(t) => t,
        Err(e) => return e,
    };
    let model = s.model();
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

fn account_json(model: &Model, link: &Link, index: usize) -> Value {
    let account = &link.accounts[index];
    let balance = 1_000_000 + 250_000 * index as i64;
    json!({
        "id": account.id, "object": "account", "name": account.name, "official_name": account.name.to_uppercase(),
        "number": account.number, "holder_id": "111111111", "holder_name": "Ana Demo", "type": "checking_account",
        "currency": "CLP", "balance": {"available": balance, "current": balance, "limit": balance},
        "refreshed_at": format_rfc3339_ms(link.created_at_ms), "refresh_status": "idle", "removed_from_link": false,
        "next_refresh": null, "movements_count": model.movements.get(&account.id).map_or(0, Vec::len),
    })
}

async fn get_link(State(s): State<Shared>, Path(token): Path<String>) -> Response {
    let model = s.model();
    let Some(link) = model.link_by_token(&token) else {
        return no_link();
    };
    let accounts: Option<Vec<Value>> = link.accounts_inline.then(|| {
        (0..link.accounts.len())
            .map(|i| account_json(&model, link, i))
            .collect()
    });
    let status = if link.active { "active" } else { "inactive" };
    ok(
        200,
        json!({
            "id": link.id, "object": "link", "accounts": accounts, "active": link.active, "status": status,
            "created_at": format_rfc3339_ms(link.created_at_ms), "holder_id": "111111111", "holder_type": "individual",
            "institution": {"id": "cl_banco_de_chile", "country": "cl", "name": "Banco de Chile"},
            "last_time_refreshed": null, "link_token": null, "mode": model.mode,
            "refresh_status": if link.in_progress.is_some() { "refreshing" } else { "idle" }, "username": "12345678-9",
        }),
    )
}

async fn list_accounts(State(s): State<Shared>, Query(q): Params) -> Response {
    let token = match required(&q, "link_token") {
        Ok(t) => t.to_owned(),
        Err(e) => return e,
    };
    let items = {
        let model = s.model();
        let Some(link) = model.link_by_token(&token) else {
            return no_link();
        };
        (0..link.accounts.len())
            .map(|i| account_json(&model, link, i))
            .collect()
    };
    page(&s, "/v1/accounts", &q, items)
}

/// The account, if `link_token` is its Link's token.
fn owned_account(model: &Model, q: &HashMap<String, String>, id: &str) -> Result<Value, Response> {
    let token = required(q, "link_token")?;
    let link = model.link_by_token(token).ok_or_else(no_link)?;
    let index = link
        .accounts
        .iter()
        .position(|a| a.id == id)
        .ok_or_else(|| {
            error(
                404,
                "invalid_request_error",
                "missing_resource",
                "No such account",
            )
        })?;
    Ok(account_json(model, link, index))
}

async fn get_account(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    match owned_account(&s.model(), &q, &id) {
        Ok(account) => ok(200, account),
        Err(e) => e,
    }
}

async fn list_movements(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    let items: Vec<Value> = {
        let model = s.model();
        if let Err(e) = owned_account(&model, &q, &id) {
            return e;
        }
        let day = |key: &str| q.get(key).map(|v| v.chars().take(10).collect::<String>());
        let (since, until) = (day("since"), day("until"));
        let mut items: Vec<Value> = model
            .movements
            .get(&id)
            .into_iter()
            .flatten()
            .filter(|m| {
                let posted = m["post_date"]
                    .as_str()
                    .unwrap_or_default()
                    .get(..10)
                    .unwrap_or_default()
                    .to_owned();
                since.as_ref().is_none_or(|s| posted >= *s)
                    && until.as_ref().is_none_or(|u| posted < *u)
            })
            .cloned()
            .collect();
        items.reverse();
        items
    };
    page(&s, &format!("/v1/accounts/{id}/movements"), &q, items)
}

/// Events per `/v2/events` page. Fintoc documents no page size (nor a parameter to set
/// one); this is its v1 lists' default.
const EVENTS_PAGE: usize = 30;

/// `GET /v2/events`: newest first, cursor pagination. `starting_after=<id>` gives the page
/// of older events right after that one; `ending_before=<id>` the page of newer events
/// right before it (still newest first). Only those two are documented, and not together.
/// `Link: <…>; rel="next"` carries just the cursor to keep going the same way.
async fn list_events(State(s): State<Shared>, Query(q): Params) -> Response {
    if let Err(refused) = undocumented(q.keys(), &["starting_after", "ending_before"]) {
        return refused;
    }
    let bad_cursor = |name: &str| {
        error_about(
            400,
            "invalid_request_error",
            "invalid_cursor",
            &format!("Unknown {name}"),
            Some(name),
        )
    };
    let (items, next, base) = {
        let model = s.model();
        let newest_first: Vec<_> = model.events.iter().rev().collect();
        let position = |id: &str| newest_first.iter().position(|e| e.id == id);
        let len = newest_first.len();
        let (range, next) = match (q.get("starting_after"), q.get("ending_before")) {
            (Some(_), Some(_)) => {
                return error_about(
                    400,
                    "invalid_request_error",
                    "invalid_parameter",
                    "starting_after and ending_before cannot be used together",
                    Some("ending_before"),
                );
            }
            (None, Some(before)) => {
                let Some(end) = position(before) else {
                    return bad_cursor("ending_before");
                };
                let start = end.saturating_sub(EVENTS_PAGE);
                let next = (start > 0).then(|| ("ending_before", newest_first[start].id.clone()));
                (start..end, next)
            }
            (after, None) => {
                let start = match after {
                    None => 0,
                    Some(after) => match position(after) {
                        Some(i) => i + 1,
                        None => return bad_cursor("starting_after"),
                    },
                };
                let end = (start + EVENTS_PAGE).min(len);
                let next =
                    (end < len).then(|| ("starting_after", newest_first[end - 1].id.clone()));
                (start..end, next)
            }
        };
        let items: Vec<Value> = newest_first[range]
            .iter()
            .filter_map(|e| serde_json::from_str(&e.body).ok())
            .collect();
        (items, next, model.base_url.clone())
    };
    let mut response = ok(200, Value::Array(items));
    if let Some((cursor, id)) = next {
        let link = format!("<{base}/v2/events?{cursor}={id}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, v);
        }
    }
    response
}

async fn get_event(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let model = s.model();
    match model
        .events
        .iter()
        .find(|e| e.id == id)
        .and_then(|e| serde_json::from_str(&e.body).ok())
    {
        Some(body) => ok(200, body),
        None => error(
            404,
            "invalid_request_error",
            "missing_resource",
            "No such event",
        ),
    }
}

async fn list_endpoints(State(s): State<Shared>, Query(q): Params) -> Response {
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

async fn create_endpoint(State(s): State<Shared>, body: Bytes) -> Response {
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

async fn get_endpoint(State(s): State<Shared>, Path(id): Path<String>) -> Response {
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

async fn update_endpoint(State(s): State<Shared>, Path(id): Path<String>, body: Bytes) -> Response {
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

async fn delete_endpoint(
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
