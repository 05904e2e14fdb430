//! The unit tests of `movements.rs`, against a small Fintoc look-alike started on port 0: an
//! offset-paginated movements list whose `Link` header carries the full query (and a marker
//! only it knows, to prove the next URL is followed verbatim), with scripted failures and a
//! hook that changes the list between pages.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap as AxumHeaders, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::macros::date;

use super::*;
use crate::config::Config;
use crate::metrics::Metrics;

const TOKEN: &str = "link_fakeid_token_S3CRETvalue";

/// Changes the list after a given page was served.
type Hook = Box<dyn FnMut(u32, &mut Vec<Value>) + Send>;

#[derive(Default)]
struct Fake {
    /// The account's movements, newest first.
    list: Vec<Value>,
    /// The server's page size (small, so a few movements make several pages).
    page_size: usize,
    /// Answers given before serving normally: (status, body).
    script: VecDeque<(u16, Value)>,
    /// The query of each request received, in order.
    queries: Vec<String>,
    hook: Option<Hook>,
    /// Where next links point (the server's own address unless a test changes it).
    origin: String,
}

type Shared = Arc<Mutex<Fake>>;

fn movement(id: &str) -> Value {
    json!({"id": id, "object": "movement", "amount": 100, "currency": "CLP",
           "description": format!("movement {id}"), "post_date": "2026-12-01T00:00:00Z",
           "pending": false, "status": "confirmed"})
}

fn list(ids: &[&str]) -> Vec<Value> {
    ids.iter().map(|id| movement(id)).collect()
}

async fn serve_movements(
    State(s): State<Shared>,
    Path(account): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let raw = raw.unwrap_or_default();
    let mut fake = s.lock().unwrap();
    fake.queries.push(raw.clone());
    if let Some((status, body)) = fake.script.pop_front() {
        let status = StatusCode::from_u16(status).unwrap();
        return (status, axum::Json(body)).into_response();
    }
    let url = Url::parse(&format!("http://x/?{raw}")).unwrap();
    let param = |name: &str| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    if param("link_token").as_deref() != Some(TOKEN) {
        let body = json!({"error": {"type": "invalid_request_error", "code": "invalid_link_token",
                                    "message": "Invalid link token", "param": "link_token"}});
        return (StatusCode::NOT_FOUND, axum::Json(body)).into_response();
    }
    let page: u32 = param("page").map_or(1, |p| p.parse().unwrap());
    let size = fake.page_size;
    let start = (page as usize - 1) * size;
    let items: Vec<Value> = fake.list.iter().skip(start).take(size).cloned().collect();
    let more = fake.list.len() > start + size;
    let mut headers = AxumHeaders::new();
    if more {
        // The whole query again, the page moved on, and a marker the client cannot guess.
        let mut next =
            Url::parse(&format!("{}/v1/accounts/{account}/movements", fake.origin)).unwrap();
        next.query_pairs_mut()
            .extend_pairs(
                url.query_pairs()
                    .filter(|(k, _)| k != "page" && k != "marker"),
            )
            .append_pair("page", &(page + 1).to_string())
            .append_pair("marker", &format!("m{}", page + 1));
        let link = format!(r#"<{next}>; rel="next""#);
        headers.insert(reqwest::header::LINK, link.parse().unwrap());
    }
    if let Some(mut hook) = fake.hook.take() {
        hook(page, &mut fake.list);
        fake.hook = Some(hook);
    }
    (headers, axum::Json(Value::Array(items))).into_response()
}

/// The server, and a client of it whose backoff unit is `unit`.
async fn start(list: Vec<Value>, page_size: usize, unit: Duration) -> (Shared, Client) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shared = Arc::new(Mutex::new(Fake {
        list,
        page_size,
        origin: format!("http://{addr}"),
        ..Fake::default()
    }));
    let app = axum::Router::new()
        .route(
            "/v1/accounts/{id}/movements",
            axum::routing::get(serve_movements),
        )
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut config = Config::new("sqlite::memory:", format!("http://{addr}/"));
    config.fintoc_secret_key = Secret::new("sk_test_key");
    config.fintoc_backoff = unit;
    let client = Client::new(&config, Arc::new(Metrics::default())).unwrap();
    (shared, client)
}

async fn list_all(client: &Client) -> Result<Listing, FintocError> {
    list_with(client, TOKEN).await
}

async fn list_with(client: &Client, token: &str) -> Result<Listing, FintocError> {
    client
        .list_movements(
            &Secret::new(token),
            "acc_1",
            date!(2026 - 11 - 01),
            None,
            Instant::now() + Duration::from_secs(30),
        )
        .await
}

fn ids(listing: &Listing) -> Vec<&str> {
    listing.movements.iter().map(|m| m.id.as_str()).collect()
}

fn queries(s: &Shared) -> Vec<String> {
    s.lock().unwrap().queries.clone()
}

const UNIT: Duration = Duration::from_millis(1);

#[tokio::test]
async fn follows_the_next_links_verbatim() {
    let (s, client) = start(list(&["m5", "m4", "m3", "m2", "m1"]), 2, UNIT).await;
    let listing = list_all(&client).await.unwrap();
    assert_eq!(ids(&listing), ["m5", "m4", "m3", "m2", "m1"]);
    assert_eq!(listing.movements[0].description, "movement m5");
    assert_eq!((listing.requests, listing.passes), (3, 1));
    assert!(listing.settled);
    let q = queries(&s);
    assert_eq!(q.len(), 3);
    // Pages 2 and 3 are the server's next URLs as given: the marker only it knows is there,
    // and nothing was added or dropped.
    assert!(q[1].ends_with("&page=2&marker=m2"), "{}", q[1]);
    assert!(q[2].ends_with("&page=3&marker=m3"), "{}", q[2]);
    assert!(q[1].starts_with(&q[0]), "{} / {}", q[0], q[1]);
}

#[tokio::test]
async fn sends_since_until_and_confirmed_only_as_documented() {
    let (s, client) = start(list(&["m1"]), 2, UNIT).await;
    client
        .list_movements(
            &Secret::new(TOKEN),
            "acc_1",
            date!(2026 - 11 - 01),
            Some(date!(2026 - 12 - 04)),
            Instant::now() + Duration::from_secs(30),
        )
        .await
        .unwrap();
    list_all(&client).await.unwrap();
    let q = queries(&s);
    assert_eq!(
        q[0],
        format!(
            "link_token={TOKEN}&since=2026-11-01&until=2026-12-04&per_page=300&confirmed_only=false"
        )
    );
    assert_eq!(
        q[1],
        format!("link_token={TOKEN}&since=2026-11-01&per_page=300&confirmed_only=false")
    );
}

#[tokio::test]
async fn an_insertion_between_pages_reads_the_list_again() {
    let (s, client) = start(list(&["m5", "m4", "m3", "m2", "m1"]), 2, UNIT).await;
    // A movement lands at the top once page 1 has been read: m4 moves onto page 2.
    s.lock().unwrap().hook = Some(Box::new(|page, list| {
        if page == 1 && list.len() == 5 {
            list.insert(0, movement("m6"));
        }
    }));
    let listing = list_all(&client).await.unwrap();
    assert_eq!(ids(&listing), ["m5", "m4", "m3", "m2", "m1", "m6"]);
    assert_eq!((listing.passes, listing.requests), (2, 6));
    assert!(listing.settled);
}

#[tokio::test]
async fn a_movement_skipped_by_a_shift_is_found_by_the_next_pass() {
    let (s, client) = start(list(&["a", "b", "c", "d", "e", "f"]), 2, UNIT).await;
    // After page 1, x lands at the top (page 2 reads b again); after page 2, x is gone again,
    // which pulls d back onto page 2, already read: pass 1 never sees d.
    let mut step = 0;
    s.lock().unwrap().hook = Some(Box::new(move |page, list| {
        match (step, page) {
            (0, 1) => list.insert(0, movement("x")),
            (1, 2) => {
                list.remove(0);
            }
            _ => return,
        }
        step += 1;
    }));
    let listing = list_all(&client).await.unwrap();
    assert_eq!(listing.passes, 2);
    let mut got = ids(&listing);
    got.sort_unstable();
    assert_eq!(
        got,
        ["a", "b", "c", "d", "e", "f"],
        "d found, x (gone) not kept"
    );
}

#[tokio::test]
async fn a_list_that_keeps_shifting_stops_after_three_passes() {
    let (s, client) = start(list(&["m3", "m2", "m1"]), 2, UNIT).await;
    let mut n = 10;
    s.lock().unwrap().hook = Some(Box::new(move |page, list| {
        if page == 1 {
            n += 1;
            list.insert(0, movement(&format!("m{n}")));
        }
    }));
    let listing = list_all(&client).await.unwrap();
    assert_eq!(listing.passes, MAX_PASSES);
    assert!(!listing.settled);
    let mut got = ids(&listing);
    got.sort_unstable();
    got.dedup();
    assert_eq!(got.len(), listing.movements.len(), "no duplicates");
    assert!(
        ["m1", "m2", "m3", "m11", "m12"]
            .iter()
            .all(|id| got.contains(id))
    );
}

fn too_many(code: &str) -> (u16, Value) {
    (
        429,
        json!({"error": {"type": "invalid_request_error", "code": code, "message": "slow down"}}),
    )
}

#[tokio::test]
async fn retries_429_on_fintocs_schedule() {
    let (s, client) = start(list(&["m1"]), 2, UNIT).await;
    // rate_limit_exceeded too: on this endpoint it cannot be the refresh cooldown.
    s.lock().unwrap().script = [
        too_many("too_many_requests"),
        too_many("rate_limit_exceeded"),
    ]
    .into();
    let listing = list_all(&client).await.unwrap();
    assert_eq!(ids(&listing), ["m1"]);
    assert_eq!((listing.requests, listing.passes), (3, 1));
    assert_eq!(queries(&s).len(), 3);
}

#[tokio::test]
async fn gives_up_after_five_retries_of_429() {
    let unit = Duration::from_millis(5);
    let (s, client) = start(list(&["m1"]), 2, unit).await;
    s.lock().unwrap().script = std::iter::repeat_with(|| too_many("too_many_requests"))
        .take(6)
        .collect();
    let started = std::time::Instant::now();
    let err = list_all(&client).await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert_eq!(queries(&s).len(), 6, "one request and five retries");
    // The waits were unit × (1 + 2 + 4 + 8 + 16), each plus less than a unit of jitter.
    assert!(started.elapsed() >= unit * 31, "{:?}", started.elapsed());
}

#[tokio::test]
async fn an_invalid_token_is_told_apart_and_not_retried() {
    let (s, client) = start(list(&["m1"]), 2, UNIT).await;
    let err = list_with(&client, "link_other_token_revoked")
        .await
        .unwrap_err();
    assert!(err.is_invalid_link_token(), "{err:?}");
    assert_eq!(queries(&s).len(), 1);
    // A 500 is not a refusal of the token.
    s.lock().unwrap().script = std::iter::repeat_n((500, json!({})), 6).collect();
    let err = list_all(&client).await.unwrap_err();
    assert!(!err.is_invalid_link_token(), "{err:?}");
}

#[tokio::test]
async fn errors_never_carry_the_token() {
    let (s, client) = start(list(&["m2", "m1"]), 1, UNIT).await;
    // 500s whose error quotes the request, token included (retried, then returned).
    let quoting = json!({"error": {"type": "api_error", "code": "internal_server_error",
        "message": format!("failed on /v1/accounts/acc_1/movements?link_token={TOKEN}&page=1"),
        "param": TOKEN}});
    s.lock().unwrap().script = std::iter::repeat_n((500, quoting), 6).collect();
    let err = list_all(&client).await.unwrap_err();
    assert_eq!(err.status(), Some(500));
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(TOKEN), "{shown}");
    assert!(!shown.contains("S3CRET"), "{shown}");

    // A page whose movement has no id: malformed, and said without the page's text.
    let (s, client) = start(vec![json!({"amount": 1, "description": TOKEN})], 2, UNIT).await;
    let err = list_all(&client).await.unwrap_err();
    assert!(matches!(err, FintocError::Malformed(_)), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("S3CRET"), "{shown}");
    assert_eq!(
        queries(&s).len(),
        6,
        "an unreadable 2xx is retried like a 5xx"
    );
}

#[tokio::test]
async fn a_next_page_on_another_host_is_not_followed() {
    let (s, client) = start(list(&["m2", "m1"]), 1, UNIT).await;
    s.lock().unwrap().origin = "http://127.0.0.2:9".into();
    let err = list_all(&client).await.unwrap_err();
    assert!(matches!(err, FintocError::Malformed(_)), "{err:?}");
    assert_eq!(queries(&s).len(), 1);
}
