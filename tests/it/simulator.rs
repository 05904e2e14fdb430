//! The Fintoc simulator on its own, through its HTTP API: idempotency replays the first
//! answer (injected faults and refusals included) and forgets keys after 24 hours, faults
//! can target one endpoint, `/v2/events` takes only the documented cursors, the create call
//! only its documented parameters, and the "wait an hour" credentials refusal. What the
//! simulator does here is what the service's tests rely on Fintoc doing.

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
