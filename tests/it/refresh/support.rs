//! The RequestRefresh tests' helpers: a server with the simulator, requests, a refresh
//! followed to its end, and what the simulator saw.

use std::time::Duration;

use crate::common::*;
use fintoc_refresh::pb::{self, RefreshStatus, RefreshType};
use fintoc_refresh::simulator::{Outcome, SimConfig, SimLinkInfo, Simulator};

pub const POST_INTENTS: (&str, &str) = ("POST", "/v1/refresh_intents");

pub fn sim_config() -> SimConfig {
    let mut c = SimConfig::new(API_KEY);
    c.delivery_delay = Duration::ZERO;
    c.mfa_delay = Duration::ZERO;
    c.retry_base = Duration::from_millis(20);
    c
}

pub async fn with_sim(backend: Backend, config: SimConfig) -> TestServer {
    TestServer::with(Options {
        backend,
        simulator: Some(config),
        tune: Some(Box::new(|c| c.fintoc_backoff = Duration::from_millis(10))),
        ..Options::default()
    })
    .await
}

pub fn sim(server: &TestServer) -> &Simulator {
    server.sim.as_ref().unwrap()
}

pub fn ok(n: u32) -> Outcome {
    Outcome::Succeed { new_movements: n }
}

pub async fn request(
    server: &TestServer,
    token: &str,
    key: &str,
) -> Result<pb::RequestRefreshResponse, tonic::Status> {
    request_typed(server, token, key, RefreshType::OnlyLast).await
}

pub async fn request_typed(
    server: &TestServer,
    token: &str,
    key: &str,
    kind: RefreshType,
) -> Result<pb::RequestRefreshResponse, tonic::Status> {
    server
        .client()
        .await
        .request_refresh(pb::RequestRefreshRequest {
            link_token: token.into(),
            refresh_type: kind.into(),
            idempotency_key: key.into(),
            keep_link_token: false,
        })
        .await
        .map(|r| r.into_inner())
}

/// Requests a refresh and follows it to its end: (results seen, final status).
pub async fn refresh_to_end(
    server: &TestServer,
    link: &SimLinkInfo,
) -> (Vec<Seen>, RefreshStatus, String) {
    let answer = request(server, &link.token, "").await.unwrap();
    let intent = answer.refresh_intent.unwrap();
    let mut watch = server.watch(intent_target(&intent.id), None).await;
    let mut results = Vec::new();
    loop {
        match watch.next_event().await {
            Seen::Completed { status, .. } => return (results, status, intent.id),
            result => results.push(result),
        }
    }
}

/// The ids of the refresh intents Fintoc (the simulator) holds for a Link, newest first.
pub async fn intents_at_fintoc(server: &TestServer, token: &str) -> Vec<String> {
    let list: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/refresh_intents", sim(server).url()))
        .query(&[("link_token", token)])
        .header("Authorization", API_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Someone else (another service, Fintoc's dashboard) creates a refresh intent at Fintoc.
pub async fn someone_else_refreshes(server: &TestServer, token: &str) -> String {
    let created: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/v1/refresh_intents", sim(server).url()))
        .header("Authorization", API_KEY)
        .json(&serde_json::json!({ "link_token": token }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["id"].as_str().expect("an intent").to_owned()
}
