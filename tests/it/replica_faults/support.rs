//! The replica fault tests' helpers: database URLs and a plain SQL client, signed posts,
//! readiness, sessions as `pg_stat_activity` shows them, and a store kept committing.

use std::time::Duration;

use bytes::Bytes;
use fintoc_refresh::clock::system_now_ms;
use fintoc_refresh::fintoc::event::decode;
use fintoc_refresh::fintoc::signature;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::common::*;
use crate::replicas::{Replica, eventually, health_at};

/// `url` with one more query parameter.
pub fn with_param(url: &str, key: &str, value: &str) -> String {
    let mut parsed = reqwest::Url::parse(url).unwrap();
    parsed.query_pairs_mut().append_pair(key, value);
    parsed.to_string()
}

/// A plain client of the test's database (as the role the replicas use).
pub async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// The database's name in `url`.
pub fn database_of(url: &str) -> String {
    reqwest::Url::parse(url).unwrap().path()[1..].to_owned()
}

/// Posts a signed webhook to the HTTP address `addr`: the status, or None if unreachable.
pub async fn post(http: &reqwest::Client, addr: &str, id: &str, account: &str) -> Option<u16> {
    let body = event(id, account, "succeeded", system_now_ms());
    let header = signature::header(SECRET, system_now_ms() / 1000, body.as_bytes());
    let response = http
        .post(format!("http://{addr}/webhooks/fintoc"))
        .header("Fintoc-Signature", header)
        .body(body)
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

pub async fn readyz(http: &reqwest::Client, replica: &Replica) -> Option<u16> {
    readyz_at(http, &replica.http).await
}

pub async fn readyz_at(http: &reqwest::Client, addr: &str) -> Option<u16> {
    let response = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

/// How many of `application`'s sessions match `condition` (SQL over pg_stat_activity `a`).
pub async fn sessions(db: &tokio_postgres::Client, application: &str, condition: &str) -> i64 {
    db.query_one(
        &format!(
            "SELECT count(*) FROM pg_stat_activity a WHERE a.application_name = $1 AND {condition}"
        ),
        &[&application],
    )
    .await
    .unwrap()
    .get(0)
}

/// Waits until `replica`'s /readyz says 503.
pub async fn not_ready(http: &reqwest::Client, replica: &Replica) {
    eventually("/readyz to say not ready", || async {
        readyz(http, replica).await == Some(503)
    })
    .await;
}

/// Waits until `replica`'s /readyz says 200 again.
pub async fn ready_again(http: &reqwest::Client, replica: &Replica) {
    eventually("ready again", || async {
        readyz(http, replica).await == Some(200)
    })
    .await;
}

/// `replica`'s readiness, looked at every 100 ms until `watching` is cancelled: whether its
/// /readyz ever said 503, and whether its gRPC health ever said NOT_SERVING.
pub fn watch_readiness(
    http: &reqwest::Client,
    replica: &Replica,
    watching: CancellationToken,
) -> JoinHandle<(bool, bool)> {
    let http = http.clone();
    let (addr, grpc) = (replica.http.clone(), replica.grpc.clone());
    tokio::spawn(async move {
        let (mut unready, mut not_serving) = (false, false);
        while !watching.is_cancelled() {
            unready |= readyz_at(&http, &addr).await == Some(503);
            not_serving |= health_at(&grpc).await == Some(ServingStatus::NotServing as i32);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (unready, not_serving)
    })
}

/// `writers` tasks committing webhooks to `store` one after another until `stop`.
pub fn commit_continuously(
    store: &fintoc_refresh::store::Store,
    writers: usize,
    stop: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    (0..writers)
        .map(|w| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.is_cancelled() {
                    let body = event(&format!("evt_start_{w}_{i}"), "acc_start", "succeeded", 0);
                    let decoded = decode(body.as_bytes());
                    store
                        .ingest_webhook(Bytes::from(body), decoded, 0)
                        .await
                        .unwrap();
                    i += 1;
                }
            })
        })
        .collect()
}
