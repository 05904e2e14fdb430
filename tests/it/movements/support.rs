//! The movements tests' helpers: a server with the simulator and LINK_TOKEN_KEYS, streams
//! that ask for movements, and what a stream showed, gathered.

use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use fintoc_refresh::config::Config;
use fintoc_refresh::custody::LinkTokenKeys;
use fintoc_refresh::pb::{
    self, refresh_service_client::RefreshServiceClient, watch_refresh_request::Target,
};
use fintoc_refresh::simulator::{Outcome, SimConfig, Simulator};
use tonic::transport::Channel;

/// Two keys (32 bytes of 1s and of 2s), as LINK_TOKEN_KEYS spells them.
pub const KEY_ONE: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
pub const KEY_TWO: &str = "k2:AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

pub fn sim_config() -> SimConfig {
    let mut c = SimConfig::new(API_KEY);
    c.delivery_delay = Duration::ZERO;
    c.mfa_delay = Duration::ZERO;
    c.retry_base = Duration::from_millis(20);
    c
}

/// Movements on with `keys` (LINK_TOKEN_KEYS), Fintoc's schedule in milliseconds.
pub fn with_keys(keys: &str) -> Tune {
    let keys = Arc::new(LinkTokenKeys::parse(keys).unwrap());
    Box::new(move |c: &mut Config| {
        c.link_token_keys = Some(keys);
        c.fintoc_backoff = Duration::from_millis(5);
    })
}

pub async fn server(backend: Backend) -> TestServer {
    server_with(backend, sim_config(), KEY_ONE).await
}

pub async fn server_with(backend: Backend, sim: SimConfig, keys: &str) -> TestServer {
    TestServer::with(Options {
        backend,
        simulator: Some(sim),
        tune: Some(with_keys(keys)),
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

/// RequestRefresh, keeping the token when `keep`.
pub async fn refresh(
    client: &mut RefreshServiceClient<Channel>,
    token: &str,
    keep: bool,
) -> Result<pb::RefreshIntent, tonic::Status> {
    client
        .request_refresh(pb::RequestRefreshRequest {
            link_token: token.into(),
            keep_link_token: keep,
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().refresh_intent.unwrap())
}

/// A stream of `target` with movements.
pub async fn watch_movements(server: &TestServer, target: Target, after: Option<u64>) -> Watch {
    let stream = server
        .client()
        .await
        .watch_refresh(pb::WatchRefreshRequest {
            target: Some(target),
            after_sequence: after,
            include_movements: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    Watch { stream }
}

/// Follows an intent's stream (with movements) to its end: every message but heartbeats,
/// the refresh_completed last.
pub async fn intent_to_end(server: &TestServer, intent: &str) -> Vec<Seen> {
    let mut watch = watch_movements(server, intent_target(intent), None).await;
    let mut seen = Vec::new();
    loop {
        let next = watch.next_event().await;
        let done = matches!(next, Seen::Completed { .. });
        seen.push(next);
        if done {
            assert_eq!(watch.end().await.code(), tonic::Code::Ok);
            return seen;
        }
    }
}

/// The ids added over `seen`'s movements messages, in order.
pub fn added(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .flat_map(|s| match s {
            Seen::Movements { added, .. } => added.clone(),
            _ => Vec::new(),
        })
        .collect()
}

pub fn modified(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .flat_map(|s| match s {
            Seen::Movements { modified, .. } => modified.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// The reasons of `seen`'s movements_unavailable messages.
pub fn unavailable(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Unavailable { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .collect()
}

/// Reads messages until `done` says the gathered ones are enough (heartbeats skipped).
pub async fn gather(watch: &mut Watch, done: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
    let mut seen = Vec::new();
    while !done(&seen) {
        seen.push(watch.next_event().await);
    }
    seen
}

/// Every movement id the simulator lists for the account (pending ones too), newest first.
pub fn listed_at_fintoc(server: &TestServer, account: &str) -> Vec<String> {
    sim(server)
        .movements(account)
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// ListMovements, every page.
pub async fn stored(server: &TestServer, account: &str) -> Result<Vec<String>, tonic::Status> {
    let mut client = server.client().await;
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_movements(pb::ListMovementsRequest {
                account_id: account.into(),
                page_size: 2,
                page_token: token,
            })
            .await?
            .into_inner();
        ids.extend(page.movements.into_iter().map(|m| m.id));
        if page.next_page_token.is_empty() {
            return Ok(ids);
        }
        token = page.next_page_token;
    }
}

pub async fn token_kept(server: &TestServer, link: &str) -> bool {
    server
        .client()
        .await
        .get_link(pb::GetLinkRequest {
            link_id: link.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .link
        .unwrap()
        .link_token_kept
}

/// Asserts nothing but heartbeats comes on `feed` within `wait` (a redelivery or a second
/// fetcher pushing again would show here).
pub async fn nothing_more(feed: &mut Watch, wait: Duration, why: &str) {
    match feed.try_next(wait).await {
        None | Some(Ok(Seen::Heartbeat { .. })) => {}
        other => panic!("{why}: {other:?}"),
    }
}
