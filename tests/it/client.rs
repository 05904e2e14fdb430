//! The Fintoc REST client on documented ground: what exactly it puts on the wire (checked
//! against a recording server), that it refuses an answer that is not what it asked for,
//! and that it works against the simulator, which refuses undocumented parameters.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use fintoc_refresh::config::Config;
use fintoc_refresh::domain::RefreshType;
use fintoc_refresh::fintoc::client::{Client, IdempotencyKeys};
use fintoc_refresh::metrics::Metrics;
use fintoc_refresh::secret::Secret;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::common::*;

/// One request as the recording server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    headers: HeaderMap,
    body: Bytes,
}

/// A server that records every request and answers each with `answer` (status, JSON).
struct Recorder {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    answer: Arc<Mutex<(u16, Value)>>,
}

impl Recorder {
    async fn start(status: u16, body: Value) -> Recorder {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(Mutex::new((status, body)));
        let (log, reply) = (seen.clone(), answer.clone());
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (log, reply) = (log.clone(), reply.clone());
                async move {
                    let query = uri
                        .query()
                        .map(|q| {
                            reqwest::Url::parse(&format!("http://x/?{q}"))
                                .unwrap()
                                .query_pairs()
                                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                                .collect()
                        })
                        .unwrap_or_default();
                    log.lock().unwrap().push(Seen {
                        method,
                        path: uri.path().to_owned(),
                        query,
                        headers,
                        body,
                    });
                    let (status, body) = reply.lock().unwrap().clone();
                    (StatusCode::from_u16(status).unwrap(), axum::Json(body))
                }
            },
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Recorder { url, seen, answer }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn client(url: &str) -> Client {
    let mut config = Config::new("unused.db", url);
    config.fintoc_secret_key = Secret::new(API_KEY);
    config.fintoc_backoff = Duration::from_millis(5);
    Client::new(&config, Arc::new(Metrics::new())).unwrap()
}

fn deadline() -> Instant {
    Instant::now() + PATIENCE
}

fn intent(kind: &str) -> Value {
    json!({"id": "ri_ml4K3O4RSvALRjnV", "requires_mfa": null, "object": "refresh_intent",
        "refreshed_object": "link", "refreshed_object_id": "link_000000000",
        "status": "created", "created_at": "2021-12-07T20:40:53.513Z", "type": kind})
}

const TOKEN: &str = "link_nMNejK7BT8oGbvO4_token_GLtktZX5SKphRtJFe_yJTDWT";

/// Proves the create call is the documented one: `link_token` and `refresh_type` as query
/// parameters, an empty body, the raw key and the idempotency key as headers.
#[tokio::test]
async fn the_create_call_sends_token_and_type_as_query_parameters_and_no_body() {
    let fintoc = Recorder::start(201, intent("historical")).await;
    let got = client(&fintoc.url)
        .create_refresh_intent(
            &Secret::new(TOKEN),
            RefreshType::Historical,
            &mut IdempotencyKeys::new("key-1", 0),
            deadline(),
        )
        .await
        .unwrap();
    assert_eq!(got.id, "ri_ml4K3O4RSvALRjnV");
    let seen = fintoc.seen();
    assert_eq!(seen.len(), 1);
    let call = &seen[0];
    assert_eq!(call.method, Method::POST);
    assert_eq!(call.path, "/v1/refresh_intents");
    assert_eq!(
        call.query,
        BTreeMap::from([
            ("link_token".to_owned(), TOKEN.to_owned()),
            ("refresh_type".to_owned(), "historical".to_owned()),
        ])
    );
    assert!(call.body.is_empty(), "{:?}", call.body);
    assert_eq!(call.headers["authorization"], API_KEY);
    assert_eq!(call.headers["idempotency-key"], "key-1");
}

/// Proves an intent of another type than asked is not taken as ours: the call fails with
/// an error that names both types, and is not retried (a retry would replay it).
#[tokio::test]
async fn an_intent_of_another_type_than_asked_is_an_error() {
    let fintoc = Recorder::start(201, intent("only_last")).await;
    let err = client(&fintoc.url)
        .create_refresh_intent(
            &Secret::new(TOKEN),
            RefreshType::Historical,
            &mut IdempotencyKeys::new("key-2", 0),
            deadline(),
        )
        .await
        .unwrap_err();
    let said = err.to_string();
    assert!(
        said.contains("historical") && said.contains("only_last"),
        "{said}"
    );
    assert_eq!(fintoc.seen().len(), 1, "not retried");

    // An answer without `type` is not "another type": Fintoc's documented object always has
    // it, and older objects that lack it are taken as asked.
    *fintoc.answer.lock().unwrap() = (201, {
        let mut v = intent("x");
        v.as_object_mut().unwrap().remove("type");
        v
    });
    client(&fintoc.url)
        .create_refresh_intent(
            &Secret::new(TOKEN),
            RefreshType::Historical,
            &mut IdempotencyKeys::new("key-3", 0),
            deadline(),
        )
        .await
        .unwrap();
}

/// Proves `/v2/events` is asked only with its documented cursor, never a page size.
#[tokio::test]
async fn the_events_list_is_called_with_documented_parameters_only() {
    let fintoc = Recorder::start(200, json!([])).await;
    let fintoc_client = client(&fintoc.url);
    fintoc_client.list_events(None, deadline()).await.unwrap();
    fintoc_client
        .list_events(Some("evt_9"), deadline())
        .await
        .unwrap();
    let seen = fintoc.seen();
    assert_eq!(seen[0].path, "/v2/events");
    assert_eq!(seen[0].query, BTreeMap::new());
    assert_eq!(
        seen[1].query,
        BTreeMap::from([("starting_after".to_owned(), "evt_9".to_owned())])
    );
}

/// A simulator (strict about parameters) on a manual clock, with no webhook targets.
async fn simulator() -> (
    fintoc_refresh::simulator::Simulator,
    std::sync::Arc<fintoc_refresh::clock::ManualClock>,
    tokio_util::sync::CancellationToken,
) {
    let (clock, hand) = fintoc_refresh::clock::Clock::manual(START_MS);
    let mut config = fintoc_refresh::simulator::SimConfig::new(API_KEY);
    config.delivery_delay = Duration::ZERO;
    config.clock = clock;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim =
        fintoc_refresh::simulator::Simulator::start(listener, config, shutdown.clone()).unwrap();
    (sim, hand, shutdown)
}

fn accounts(n: usize) -> fintoc_refresh::simulator::LinkSpec {
    fintoc_refresh::simulator::LinkSpec::new(
        (0..n)
            .map(|_| fintoc_refresh::simulator::Outcome::Succeed { new_movements: 0 })
            .collect(),
    )
}

/// Refreshes `link` through the client and waits until the simulator produced its events.
async fn refresh(
    fintoc: &Client,
    sim: &fintoc_refresh::simulator::Simulator,
    link: &fintoc_refresh::simulator::SimLinkInfo,
) {
    let before = sim.event_ids().len();
    fintoc
        .create_refresh_intent(
            &Secret::new(&link.token),
            RefreshType::OnlyLast,
            &mut IdempotencyKeys::new(uuid::Uuid::new_v4().to_string(), 0),
            deadline(),
        )
        .await
        .unwrap();
    let want = before + link.account_ids.len();
    eventually("the refresh's events exist", || async {
        sim.event_ids().len() == want
    })
    .await;
}

/// Proves reconciliation's walk is bounded by time: it reads back to `since` and stops at
/// the first page that reaches an older event, whatever the number of pages.
#[tokio::test]
async fn events_since_reads_back_to_a_point_in_time_and_no_further() {
    let (sim, clock, shutdown) = simulator().await;
    let fintoc = client(&sim.url());
    let old = sim.add_link(accounts(35));
    refresh(&fintoc, &sim, &old).await;
    let t0 = clock.now_ms();
    clock.advance(Duration::from_secs(600));
    let recent = sim.add_link(accounts(3));
    refresh(&fintoc, &sim, &recent).await;
    let t1 = clock.now_ms();

    let fintoc = &fintoc;
    let read = |since| async move {
        let mut pages = fintoc.events_since(since, deadline());
        let mut ids = Vec::new();
        let mut count = 0;
        while let Some(page) = pages.next_page().await.unwrap() {
            ids.extend(page.into_iter().map(|e| e.id));
            count += 1;
        }
        (ids, count)
    };
    let mut newest_first = sim.event_ids();
    newest_first.reverse();

    let calls = sim.requests("GET", "/v2/events");
    let (ids, pages) = read(t1).await;
    assert_eq!(ids, newest_first[..3], "only the recent refresh");
    assert_eq!(pages, 1, "the first page already reached older events");
    assert_eq!(sim.requests("GET", "/v2/events"), calls + 1);

    let (ids, pages) = read(t0).await;
    assert_eq!(ids, newest_first, "both refreshes, across two pages");
    assert_eq!(pages, 2);
    shutdown.cancel();
}

/// Proves `list_accounts` reads every page of `GET /v1/accounts` (30 per page).
#[tokio::test]
async fn list_accounts_reads_every_page() {
    let (sim, _clock, shutdown) = simulator().await;
    let link = sim.add_link(accounts(35));
    let got = client(&sim.url())
        .list_accounts(&Secret::new(&link.token), deadline())
        .await
        .unwrap();
    let mut ids: Vec<String> = got.into_iter().map(|a| a.id).collect();
    ids.sort();
    let mut expected = link.account_ids.clone();
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(sim.requests("GET", "/v1/accounts"), 2);
    shutdown.cancel();
}

/// A next page on another host is refused: the API key is never sent there.
#[tokio::test]
async fn list_accounts_refuses_a_next_page_on_another_host() {
    let elsewhere = Recorder::start(200, json!([])).await;
    let next = format!("<{}/v1/accounts?page=2>; rel=\"next\"", elsewhere.url);
    let app = axum::Router::new().fallback(move || {
        let next = next.clone();
        async move { ([("link", next)], axum::Json(json!([{"id": "acc_1"}]))) }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let err = client(&url)
        .list_accounts(&Secret::new(TOKEN), deadline())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another host"), "{err}");
    assert!(elsewhere.seen().is_empty(), "nothing was sent there");
}
