//! The Fintoc simulator on its own, through its HTTP API: idempotency replays the first
//! answer (injected faults and refusals included) and forgets keys after 24 hours, faults
//! can target one endpoint, `/v2/events` takes only the documented cursors, the create call
//! only its documented parameters, the "wait an hour" credentials refusal, and movements:
//! their listing and pages, revoked tokens, throttles and page shifts on that path, the
//! movement events and recurring refreshes. What the simulator does here is what the
//! service's tests rely on Fintoc doing.

use std::sync::Arc;
use std::time::Duration;

use fintoc_refresh::clock::{Clock, ManualClock};
use fintoc_refresh::simulator::{Fault, LinkSpec, Outcome, SimConfig, SimLinkInfo, Simulator};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::common::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A simulator with no webhook targets, events produced at once, on a manual clock.
struct Sim {
    sim: Simulator,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
    shutdown: CancellationToken,
}

/// What one HTTP call answered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    body: String,
    link: Option<String>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Sim {
    async fn start() -> Sim {
        Sim::with(|_| {}).await
    }

    async fn with(tune: impl FnOnce(&mut SimConfig)) -> Sim {
        let (clock, hand) = Clock::manual(START_MS);
        let mut config = SimConfig::new(API_KEY);
        config.delivery_delay = Duration::ZERO;
        config.mfa_delay = Duration::ZERO;
        config.clock = clock;
        tune(&mut config);
        let shutdown = CancellationToken::new();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = Simulator::start(listener, config, shutdown.clone()).unwrap();
        Sim {
            sim,
            clock: hand,
            http: reqwest::Client::new(),
            shutdown,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let link = response
            .headers()
            .get("link")
            .map(|v| v.to_str().unwrap().to_owned());
        Answer {
            status,
            body: response.text().await.unwrap(),
            link,
        }
    }

    /// POST `path_and_query` with the right key, an optional idempotency key and JSON body.
    async fn post(&self, path_and_query: &str, key: Option<&str>, body: Option<Value>) -> Answer {
        self.post_as(API_KEY, path_and_query, key, body).await
    }

    async fn post_as(
        &self,
        api_key: &str,
        path_and_query: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = self
            .http
            .post(format!("{}{path_and_query}", self.sim.url()))
            .header("Authorization", api_key);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    async fn get(&self, path_and_query: &str) -> Answer {
        self.send(
            self.http
                .get(format!("{}{path_and_query}", self.sim.url()))
                .header("Authorization", API_KEY),
        )
        .await
    }

    /// `POST /v1/refresh_intents?link_token=…` as Fintoc documents it (query, empty body).
    async fn create(&self, token: &str, key: Option<&str>) -> Answer {
        self.post(
            &format!("/v1/refresh_intents?link_token={token}"),
            key,
            None,
        )
        .await
    }

    /// Waits until the simulator has produced the intent's events and settled it.
    async fn settle(&self, link: &SimLinkInfo, intent_id: &str) {
        eventually("the simulated refresh settles", || async {
            let got = self
                .get(&format!(
                    "/v1/refresh_intents/{intent_id}?link_token={}",
                    link.token
                ))
                .await;
            got.json()["status"] != "created"
        })
        .await;
    }

    /// How many intents the simulator holds for the Link.
    async fn intents(&self, link: &SimLinkInfo) -> usize {
        let listed = self
            .get(&format!("/v1/refresh_intents?link_token={}", link.token))
            .await;
        listed.json().as_array().unwrap().len()
    }
}

fn ok(n: u32) -> Outcome {
    Outcome::Succeed { new_movements: n }
}

// ---------------------------------------------------------------- idempotency

/// Proves an injected 5xx is the stored first answer of its key: the repeat gets the same
/// status and bytes and creates nothing, while a new key goes through.
#[tokio::test]
async fn an_injected_fault_is_the_answer_replayed_for_its_key() {
    let s = Sim::start().await;
    let link = s.sim.add_link(LinkSpec::new(vec![ok(1)]));
    s.sim.inject(Fault::Status(503), 1);
    let first = s.create(&link.token, Some("k-503")).await;
    assert_eq!(first.status, 503, "{first:?}");
    let again = s.create(&link.token, Some("k-503")).await;
    assert_eq!(again, first, "the stored answer, byte for byte");
    assert_eq!(s.intents(&link).await, 0, "a replay creates nothing");

    let fresh = s.create(&link.token, Some("k-new")).await;
    assert_eq!(fresh.status, 201, "{fresh:?}");
    assert_eq!(s.intents(&link).await, 1);
}

/// The same for a 429 and for a 200 whose body is not JSON: whatever was answered first.
#[tokio::test]
async fn a_throttle_and_a_malformed_answer_are_replayed_too() {
    let s = Sim::start().await;
    let link = s.sim.add_link(LinkSpec::new(vec![ok(1)]));
    s.sim.inject(Fault::Status(429), 1);
    let throttled = s.create(&link.token, Some("k-429")).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(s.create(&link.token, Some("k-429")).await, throttled);

    s.sim.inject(Fault::Malformed, 1);
    let broken = s.create(&link.token, Some("k-bad")).await;
    assert_eq!(broken.status, 200);
    assert!(serde_json::from_str::<Value>(&broken.body).is_err());
    assert_eq!(s.create(&link.token, Some("k-bad")).await, broken);
    assert_eq!(s.intents(&link).await, 0);
}

/// Refusals are first answers like any other: a key refused for the cooldown keeps that
/// answer after the cooldown is over, while a new key sees today's state; a key refused
/// "in progress" keeps that too. (The success itself is replayed as first answered.)
#[tokio::test]
async fn refusals_are_replayed_for_their_key() {
    let s = Sim::start().await;
    let link = s.sim.add_link(LinkSpec::new(vec![ok(1)]));
    let created = s.create(&link.token, Some("k-1")).await;
    assert_eq!(created.status, 201);
    s.settle(&link, created.json()["id"].as_str().unwrap())
        .await;
    let cooling = s.create(&link.token, Some("k-2")).await;
    assert_eq!(cooling.code(), "rate_limit_exceeded", "{cooling:?}");
    s.clock.advance(Duration::from_secs(5 * 60));
    assert_eq!(s.create(&link.token, Some("k-2")).await, cooling);
    assert_eq!(s.create(&link.token, Some("k-1")).await, created);
    assert_eq!(s.create(&link.token, Some("k-3")).await.status, 201);

    // A refresh that stays in progress for the whole test.
    let s = Sim::with(|c| c.delivery_delay = Duration::from_secs(3600)).await;
    let link = s.sim.add_link(LinkSpec::new(vec![ok(1)]));
    assert_eq!(s.create(&link.token, Some("k-1")).await.status, 201);
    let busy = s.create(&link.token, Some("k-2")).await;
    assert_eq!(busy.code(), "refresh_intent_in_progress", "{busy:?}");
    assert_eq!(s.create(&link.token, Some("k-2")).await, busy);
}

/// Keys are forgotten once 24 hours old on the simulator's clock: until then the stored
/// answer, afterwards the request is processed as new.
#[tokio::test]
async fn keys_are_forgotten_after_24_hours_of_the_simulator_clock() {
    let s = Sim::start().await;
    let token = "link_late_token_abc";
    let unknown = s.create(token, Some("k-day")).await;
    assert_eq!(unknown.code(), "invalid_link_token", "{unknown:?}");
    let link = s.sim.add_link(LinkSpec {
        token: Some(token.into()),
        ..LinkSpec::new(vec![ok(1)])
    });
    s.clock.advance(DAY - Duration::from_millis(1));
    assert_eq!(
        s.create(token, Some("k-day")).await,
        unknown,
        "still remembered"
    );
    s.clock.advance(Duration::from_millis(1));
    let fresh = s.create(token, Some("k-day")).await;
    assert_eq!(fresh.status, 201, "forgotten after 24 h: {fresh:?}");
    assert_eq!(s.intents(&link).await, 1);
}

/// A key reused with other parameters is an error (and not stored); the same parameters
/// in the JSON body instead of the query are the same request.
#[tokio::test]
async fn a_key_reused_with_other_parameters_is_refused() {
    let s = Sim::start().await;
    let a = s.sim.add_link(LinkSpec::new(vec![ok(1)]));
    let b = s.sim.add_link(LinkSpec::new(vec![ok(1)]));
    let first = s.create(&a.token, Some("k-p")).await;
    assert_eq!(first.status, 201);
    let other_link = s.create(&b.token, Some("k-p")).await;
    assert_eq!(other_link.status, 400, "{other_link:?}");
    assert_eq!(other_link.code(), "idempotency_key_reused");
    let other_type = s
        .post(
            &format!(
                "/v1/refresh_intents?link_token={}&refresh_type=historical",
                a.token
            ),
            Some("k-p"),
            None,
        )
        .await;
    assert_eq!(other_type.code(), "idempotency_key_reused");
    let in_body = s
        .post(
            "/v1/refresh_intents",
            Some("k-p"),
            Some(json!({ "link_token": a.token })),
        )
        .await;
    assert_eq!(in_body, first, "same parameters, other placement");
    assert_eq!(s.intents(&b).await, 0);
}

/// Fintoc does not record requests that fail authentication.
#[tokio::test]
async fn an_unauthenticated_request_is_not_recorded() {
    let s = Sim::start().await;
    let link = s.sim.add_link(LinkSpec::new(vec![ok(1)]));
    let refused = s
        .post_as(
            "sk_test_wrong",
            &format!("/v1/refresh_intents?link_token={}", link.token),
            Some("k-auth"),
            None,
        )
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(s.create(&link.token, Some("k-auth")).await.status, 201);
}

// ---------------------------------------------------------------- documented parameters

/// The create call takes `link_token` and `refresh_type` only (query or JSON body).
#[tokio::test]
async fn the_create_call_refuses_undocumented_parameters() {
    let s = Sim::start().await;
    let link = s.sim.add_link(LinkSpec::new(vec![ok(1)]));
    let query = s
        .post(
            &format!("/v1/refresh_intents?link_token={}&limit=5", link.token),
            None,
            None,
        )
        .await;
    assert_eq!(query.status, 400, "{query:?}");
    assert_eq!(query.json()["error"]["param"], "limit");
    let body = s
        .post(
            "/v1/refresh_intents",
            None,
            Some(json!({ "link_token": link.token, "accounts": ["x"] })),
        )
        .await;
    assert_eq!(body.status, 400, "{body:?}");
    assert_eq!(body.json()["error"]["param"], "accounts");
    assert_eq!(s.intents(&link).await, 0);
    let documented = s
        .post(
            &format!(
                "/v1/refresh_intents?link_token={}&refresh_type=historical",
                link.token
            ),
            None,
            None,
        )
        .await;
    assert_eq!(documented.status, 201, "{documented:?}");
    assert_eq!(documented.json()["type"], "historical");
}

/// `/v2/events` takes only its documented cursors: an undocumented `limit` is refused, and
/// so is asking for both directions at once.
#[tokio::test]
async fn the_events_list_refuses_undocumented_parameters() {
    let s = Sim::start().await;
    let limit = s.get("/v2/events?limit=5").await;
    assert_eq!(limit.status, 400, "{limit:?}");
    assert_eq!(limit.json()["error"]["param"], "limit");
    assert_eq!(s.get("/v2/events").await.status, 200);
}

/// Thirty-five events from one refresh of a 35-account Link, listed newest first.
async fn many_events(s: &Sim) -> Vec<String> {
    let link = s
        .sim
        .add_link(LinkSpec::new((0..35).map(|_| ok(0)).collect()));
    let created = s.create(&link.token, None).await;
    s.settle(&link, created.json()["id"].as_str().unwrap())
        .await;
    let mut newest_first = s.sim.event_ids();
    newest_first.reverse();
    assert_eq!(newest_first.len(), 35);
    newest_first
}

fn ids(answer: &Answer) -> Vec<String> {
    answer
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

/// `starting_after` walks to older events, `ending_before` back to newer ones; each page's
/// `Link: rel="next"` carries only the cursor, so following it stays on documented ground.
#[tokio::test]
async fn events_page_both_ways_with_starting_after_and_ending_before() {
    let s = Sim::start().await;
    let all = many_events(&s).await;

    let first = s.get("/v2/events").await;
    assert_eq!(ids(&first), all[..30]);
    let next = first.link.clone().expect("a next page");
    assert!(
        next.contains(&format!("starting_after={}", all[29])) && !next.contains("limit"),
        "{next}"
    );
    let older = s
        .get(&format!("/v2/events?starting_after={}", all[29]))
        .await;
    assert_eq!(ids(&older), all[30..]);
    assert_eq!(older.link, None, "the last page has no next");

    // From the oldest event back toward the newest: the 30 just before it, newest first.
    let newer = s
        .get(&format!("/v2/events?ending_before={}", all[34]))
        .await;
    assert_eq!(newer.status, 200, "{newer:?}");
    assert_eq!(ids(&newer), all[4..34]);
    let next = newer.link.clone().expect("more newer events");
    assert!(
        next.contains(&format!("ending_before={}", all[4])),
        "{next}"
    );
    let newest = s.get(&format!("/v2/events?ending_before={}", all[4])).await;
    assert_eq!(ids(&newest), all[..4]);
    assert_eq!(newest.link, None);

    let both = s
        .get(&format!(
            "/v2/events?starting_after={}&ending_before={}",
            all[1], all[3]
        ))
        .await;
    assert_eq!(both.status, 400, "{both:?}");
    let unknown = s.get("/v2/events?ending_before=evt_nope").await;
    assert_eq!(unknown.status, 400, "{unknown:?}");
}

// ---------------------------------------------------------------- targeted faults

/// Proves a fault can target the create call alone: the Link lookup before it is
/// untouched, the next two POSTs answer 503 (each stored under its key), the third works.
#[tokio::test]
async fn faults_can_target_the_create_call() {
    let s = Sim::start().await;
    let link = s.sim.add_link(LinkSpec::new(vec![ok(1)]));
    s.sim
        .inject_on("POST", "/v1/refresh_intents", Fault::Status(503), 2);
    assert_eq!(
        s.get(&format!("/v1/links/{}", link.token)).await.status,
        200
    );
    assert_eq!(s.create(&link.token, Some("k-1")).await.status, 503);
    assert_eq!(s.create(&link.token, Some("k-2")).await.status, 503);
    assert_eq!(
        s.create(&link.token, Some("k-1")).await.status,
        503,
        "k-1 keeps its fault"
    );
    assert_eq!(s.create(&link.token, Some("k-3")).await.status, 201);
    assert_eq!(s.sim.requests("POST", "/v1/refresh_intents"), 4);
}

// ---------------------------------------------------------------- rejected credentials

/// Proves the unconfirmed variant of `rejected_refresh_intent`: after the bank rejects the
/// credentials, new refreshes are refused for an hour with Fintoc's "wait at least an
/// hour" message, then allowed again; the confirmed variant asks to reconnect instead.
#[tokio::test]
async fn unconfirmed_rejected_credentials_refuse_refreshes_for_an_hour() {
    let s = Sim::start().await;
    let link = s
        .sim
        .add_link(LinkSpec::new(vec![Outcome::RejectUnconfirmed, ok(1)]));
    let created = s.create(&link.token, None).await;
    s.settle(&link, created.json()["id"].as_str().unwrap())
        .await;
    let refused = s.create(&link.token, None).await;
    assert_eq!(refused.status, 400);
    let error = &refused.json()["error"];
    assert_eq!(error["type"], "link_error");
    assert_eq!(error["code"], "rejected_refresh_intent");
    assert_eq!(
        error["message"],
        "The institution indicated that the credentials are invalid. You have to wait at least an hour to avoid locking your credentials"
    );
    s.clock
        .advance(Duration::from_secs(3600) - Duration::from_millis(1));
    assert_eq!(
        s.create(&link.token, None).await.code(),
        "rejected_refresh_intent"
    );
    s.clock.advance(Duration::from_millis(1));
    assert_eq!(s.create(&link.token, None).await.status, 201);

    let confirmed = s.sim.add_link(LinkSpec::new(vec![Outcome::Reject]));
    let created = s.create(&confirmed.token, None).await;
    s.settle(&confirmed, created.json()["id"].as_str().unwrap())
        .await;
    s.clock.advance(DAY);
    let refused = s.create(&confirmed.token, None).await;
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("reconnect the account"),
        "{refused:?}"
    );
}

// ---------------------------------------------------------------- movements

/// The URL of the `rel` link in a `Link` header.
fn rel(link: &Option<String>, rel: &str) -> Option<String> {
    link.as_deref()?.split(", ").find_map(|part| {
        let (url, r) = part.split_once(">; rel=")?;
        (r.trim_matches('"') == rel).then(|| url.trim_start_matches('<').to_owned())
    })
}

fn days(answer: &Answer) -> Vec<String> {
    answer
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["post_date"].as_str().unwrap()[..10].to_owned())
        .collect()
}

/// since (inclusive) / until (exclusive) on the post date, newest first; every page link
/// carries the whole query, defaults spelled out, so following `next` verbatim (as Fintoc's
/// SDKs do) stays on the same listing; per_page is 30 by default and at most 300; malformed
/// dates and undocumented parameters are refused with Fintoc's envelope.
#[tokio::test]
async fn movements_filter_on_the_post_date_and_page_with_the_whole_query() {
    let s = Sim::start().await;
    let link = s.sim.add_link(LinkSpec::new(vec![ok(0)]));
    let path = format!("/v1/accounts/{}/movements", link.account_ids[0]);
    let all = s.get(&format!("{path}?link_token={}", link.token)).await;
    assert_eq!(
        all.json().as_array().unwrap().len(),
        30,
        "30 a page by default"
    );
    let every_day = days(
        &s.get(&format!("{path}?link_token={}&per_page=1000", link.token))
            .await,
    );
    assert_eq!(every_day.len(), 45);
    let (since, until) = (every_day[30].clone(), every_day[4].clone());

    let query = format!(
        "{path}?link_token={}&since={since}&until={until}&per_page=10&confirmed_only=false",
        link.token
    );
    let first = s.get(&query).await;
    assert_eq!(first.status, 200, "{first:?}");
    let next = rel(&first.link, "next").expect("a second page");
    for part in [
        format!("link_token={}", link.token),
        format!("since={since}"),
        format!("until={until}"),
        "per_page=10".into(),
        "confirmed_only=false".into(),
        "page=2".into(),
    ] {
        assert!(next.contains(&part), "{part} missing in {next}");
    }
    let mut seen = days(&first);
    let mut url = Some(next);
    while let Some(next) = url {
        let page = s
            .send(s.http.get(&next).header("Authorization", API_KEY))
            .await;
        seen.extend(days(&page));
        url = rel(&page.link, "next");
    }
    let expected: Vec<String> = every_day
        .iter()
        .filter(|d| **d >= since && **d < until)
        .cloned()
        .collect();
    assert_eq!(seen, expected);
    assert!(!seen.contains(&until), "until is exclusive");

    let capped = s
        .get(&format!("{path}?link_token={}&per_page=1000", link.token))
        .await;
    assert!(rel(&capped.link, "first").unwrap().contains("per_page=300"));
    assert!(
        rel(&capped.link, "first")
            .unwrap()
            .contains("confirmed_only=true")
    );
    let bad = s
        .get(&format!(
            "{path}?link_token={}&since=15/01/2027",
            link.token
        ))
        .await;
    assert_eq!(
        (bad.status, bad.code()),
        (400, "invalid_date".into()),
        "{bad:?}"
    );
    let odd = s
        .get(&format!("{path}?link_token={}&limit=5", link.token))
        .await;
    assert_eq!(odd.code(), "unrecognized_parameter", "{odd:?}");
}

/// A revoked token is Fintoc's invalid-token error on every endpoint that takes it.
#[tokio::test]
async fn a_revoked_token_is_an_invalid_link_token_everywhere() {
    let s = Sim::start().await;
    let link = s.sim.add_link(LinkSpec::new(vec![ok(1)]));
    let movements = format!(
        "/v1/accounts/{}/movements?link_token={}",
        link.account_ids[0], link.token
    );
    assert_eq!(s.get(&movements).await.status, 200);
    s.sim.revoke_token(&link.link_id);
    for answer in [
        s.get(&movements).await,
        s.get(&format!("/v1/links/{}", link.token)).await,
        s.get(&format!("/v1/accounts?link_token={}", link.token))
            .await,
        s.create(&link.token, None).await,
    ] {
        assert_eq!(answer.status, 404, "{answer:?}");
        assert_eq!(answer.json()["error"]["type"], "invalid_request_error");
        assert_eq!(answer.code(), "invalid_link_token");
    }
}

/// A 429 injected on one account's movements answers Fintoc's JSON envelope; the retry
/// works; both calls are counted.
#[tokio::test]
async fn a_throttle_on_the_movements_path_answers_fintoc_s_envelope() {
    let s = Sim::start().await;
    let link = s.sim.add_link(LinkSpec::new(vec![ok(1), ok(1)]));
    let (a, b) = (&link.account_ids[0], &link.account_ids[1]);
    s.sim.inject_on(
        "GET",
        &format!("/v1/accounts/{a}/movements"),
        Fault::Status(429),
        1,
    );
    let other = s
        .get(&format!(
            "/v1/accounts/{b}/movements?link_token={}",
            link.token
        ))
        .await;
    assert_eq!(other.status, 200, "another account is untouched");
    let path = format!("/v1/accounts/{a}/movements?link_token={}", link.token);
    let throttled = s.get(&path).await;
    assert_eq!(throttled.status, 429);
    assert!(
        throttled.json()["error"]["code"].is_string(),
        "{throttled:?}"
    );
    assert_eq!(s.get(&path).await.status, 200);
    assert_eq!(s.sim.movements_requests(a), 2);
}

/// A shift armed for page 2 lands just before it is read: page 2 starts with the movement
/// page 1 ended with, as when a movement arrives mid-read at Fintoc. Once.
#[tokio::test]
async fn a_page_shift_repeats_the_previous_page_s_last_movement() {
    let s = Sim::start().await;
    let link = s.sim.add_link(LinkSpec::new(vec![ok(0)]));
    let account = &link.account_ids[0];
    let page = |n: u32| {
        format!(
            "/v1/accounts/{account}/movements?link_token={}&per_page=10&page={n}",
            link.token
        )
    };
    let first = ids(&s.get(&page(1)).await);
    s.sim.shift_on_page(account, 2);
    let second = ids(&s.get(&page(2)).await);
    assert_eq!(second[0], first[9]);
    let again = ids(&s.get(&page(2)).await);
    assert_eq!(again, second, "one-shot");
    assert_eq!(s.sim.movements(account).len(), 46);
}

/// Records every webhook delivered to it: (Fintoc-Signature, body).
async fn capture() -> (String, Arc<std::sync::Mutex<Vec<(String, String)>>>) {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let store = store.clone();
            async move {
                let signature = headers["fintoc-signature"].to_str().unwrap().to_owned();
                store.lock().unwrap().push((signature, body));
                "ok"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// Confirmed pending movements, removed movements and a recurring refresh each reach the
/// webhook signed, like refresh results, and are listed by `/v2/events`.
#[tokio::test]
async fn movement_changes_and_scheduled_refreshes_are_delivered_and_listed() {
    let (hook, seen) = capture().await;
    let s = Sim::with(|c| c.webhooks = vec![(hook, SECRET.into())]).await;
    let link = s
        .sim
        .add_link(LinkSpec::new(vec![Outcome::SucceedWithPending {
            new_movements: 3,
            pending: 2,
        }]));
    let account = link.account_ids[0].clone();
    let created = s.create(&link.token, None).await;
    s.settle(&link, created.json()["id"].as_str().unwrap())
        .await;
    assert_eq!(s.sim.confirm_pending(&account), 2);
    assert_eq!(s.sim.confirm_pending(&account), 0, "nothing left, no event");
    let gone = s.sim.movements(&account)[5]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        s.sim
            .remove_movements(&account, std::slice::from_ref(&gone)),
        1
    );
    let scheduled = s.sim.scheduled_refresh(&link.link_id, 2);
    assert_eq!(scheduled.len(), 1);

    eventually("four webhooks delivered", || async {
        seen.lock().unwrap().len() >= 4
    })
    .await;
    let delivered = seen.lock().unwrap().clone();
    let mut by_type = std::collections::HashMap::new();
    for (header, body) in &delivered {
        let t: i64 = header[2..header.find(',').unwrap()].parse().unwrap();
        assert_eq!(
            *header,
            fintoc_refresh::fintoc::signature::header(SECRET, t, body.as_bytes())
        );
        let event: Value = serde_json::from_str(body).unwrap();
        by_type.insert(event["type"].as_str().unwrap().to_owned(), event);
    }
    let modified = &by_type["account.refresh_intent.movements_modified"];
    assert_eq!(modified["data"]["account_id"], account.as_str());
    let changed = modified["data"]["movements_changed"].as_array().unwrap();
    assert_eq!(changed.len(), 2);
    assert!(
        changed
            .iter()
            .all(|m| m["status"] == "confirmed" && m["pending"] == false)
    );
    let removed = &by_type["account.refresh_intent.movements_removed"];
    assert_eq!(removed["data"]["movements_removed"][0]["id"], gone.as_str());
    let listing = s
        .get(&format!(
            "/v1/accounts/{account}/movements?link_token={}&per_page=300",
            link.token
        ))
        .await;
    assert!(!ids(&listing).contains(&gone));
    assert_eq!(ids(&listing).len(), 45 + 3 - 1 + 2);

    let listed = ids(&s.get("/v2/events").await);
    assert_eq!(listed.len(), 4);
    assert_eq!(listed[0], scheduled[0], "newest first");
    let recurring = s.get(&format!("/v2/events/{}", scheduled[0])).await.json();
    assert_eq!(recurring["type"], "account.refresh_intent.succeeded");
    assert_eq!(recurring["data"]["type"], "only_last");
    assert_eq!(recurring["data"]["new_movements"], 2);
    assert_eq!(s.intents(&link).await, 1, "no refresh intent behind it");
}

/// `scheduled_every` refreshes every Link on the simulator's clock, 1–3 movements per
/// account each time, and stops with the simulator.
#[tokio::test]
async fn scheduled_every_refreshes_links_until_the_simulator_stops() {
    let s = Sim::with(|c| c.scheduled_every = Some(Duration::from_secs(600))).await;
    let link = s.sim.add_link(LinkSpec::new(vec![ok(0), ok(0)]));
    let inactive = s.sim.add_link(LinkSpec::new(vec![ok(0)]));
    s.sim.set_active(&inactive.link_id, false);
    s.clock.advance(Duration::from_secs(599));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(s.sim.event_ids().is_empty(), "not before its time");
    s.clock.advance(Duration::from_secs(1));
    eventually("a recurring refresh", || async {
        s.sim.event_ids().len() == 2
    })
    .await;
    for account in &link.account_ids {
        let added = s.sim.movements(account).len() - 45;
        assert!((1..=3).contains(&added), "{added}");
    }
    assert_eq!(s.sim.movements(&inactive.account_ids[0]).len(), 45);

    s.shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    s.clock.advance(Duration::from_secs(600));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.sim.event_ids().len(), 2, "stopped");
}
