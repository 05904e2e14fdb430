//! The replicas tests' fixtures: a replica (one `serve` process), a round-robin webhook
//! front door, the simulator on its own port, a cluster of replicas behind both, and the
//! waits and health checks the tests (and `replica_faults`, `pooler`, `pg_tls`) share.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fintoc_refresh::clock::system_now_ms;
use fintoc_refresh::fintoc::signature;
use fintoc_refresh::pb::{self, refresh_service_client::RefreshServiceClient};
use fintoc_refresh::simulator::{LinkSpec, Outcome, SimConfig, SimLinkInfo, Simulator};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::binary::{Running, Serve};
use crate::common::*;

/// One `serve` process; killed when dropped, so a failing test leaves nothing running.
pub struct Replica {
    process: Running,
    pub grpc: String,
    pub http: String,
}

impl Replica {
    /// Starts `serve` on `database_url` (Fintoc at `fintoc_url`) and waits for its
    /// listening line, which comes once the database is open.
    pub fn start(database_url: &str, fintoc_url: &str, extra: &[&str]) -> Replica {
        Self::start_with(database_url, fintoc_url, extra, &[])
    }

    /// [`Replica::start`] with more environment (LINK_TOKEN_KEYS, …).
    pub fn start_with(
        database_url: &str,
        fintoc_url: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Replica {
        let mut serve = Serve::new();
        for (key, value) in env {
            serve = serve.env(key, value);
        }
        let process = serve
            .args(["--database-url", database_url])
            .args(["--fintoc-api-url", fintoc_url])
            .args(["--heartbeat-interval", "200ms", "--shutdown-grace", "5s"])
            .args(extra)
            .env("FINTOC_SECRET_KEY", API_KEY)
            .env("FINTOC_WEBHOOK_SECRET", SECRET)
            .env("RUST_LOG", "warn")
            .stderr_log()
            .start();
        Replica {
            grpc: process.grpc.clone(),
            http: process.http.clone(),
            process,
        }
    }

    pub fn sigkill(&mut self) {
        self.process.sigkill();
    }

    /// Freezes the process (a paused VM, a stalled host): its sockets stay open.
    pub fn sigstop(&self) {
        self.process.signal("STOP");
    }

    pub fn sigcont(&self) {
        self.process.signal("CONT");
    }

    /// Waits up to `within` for the process to exit; its status, if it did.
    pub fn exited_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        self.process.exited_within(within)
    }

    pub async fn client(&self) -> RefreshServiceClient<tonic::transport::Channel> {
        RefreshServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    /// A client that reads slowly as far as the server can tell: HTTP/2 windows of 4 KiB, so
    /// the server can send only a few dozen messages the test has not read yet.
    pub async fn slow_client(&self) -> RefreshServiceClient<tonic::transport::Channel> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .initial_stream_window_size(Some(4096))
            .initial_connection_window_size(Some(4096))
            .connect()
            .await
            .unwrap();
        RefreshServiceClient::new(channel)
    }

    /// A watch stream on this replica.
    pub async fn watch(
        &self,
        target: pb::watch_refresh_request::Target,
        after: Option<u64>,
    ) -> Watch {
        Watch::over(self.client().await, target, after).await
    }

    /// Posts a signed webhook body; the HTTP status, or None if the replica is unreachable.
    pub async fn post(&self, http: &reqwest::Client, body: &str) -> Option<(u16, String)> {
        let header = signature::header(SECRET, system_now_ms() / 1000, body.as_bytes());
        let response = http
            .post(format!("http://{}/webhooks/fintoc", self.http))
            .header("Fintoc-Signature", header)
            .body(body.to_owned())
            .send()
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.text().await.unwrap_or_default()))
    }

    /// A sample of this replica's `/metrics`.
    pub async fn metric(&self, http: &reqwest::Client, name: &str) -> Option<f64> {
        let text = http
            .get(format!("http://{}/metrics", self.http))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// What this replica wrote to stderr so far (for failure messages).
    pub fn stderr(&self) -> String {
        self.process.stderr()
    }
}

/// Waits for `cond` (checked every 20 ms) until [`PATIENCE`] has passed.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + PATIENCE;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A webhook front door for the simulator's deliveries: each one goes to the next replica in
/// turn, as a load balancer would send them. Replicas are added once they listen.
pub struct Balancer {
    pub url: String,
    replicas: Arc<Mutex<Vec<String>>>,
}

impl Balancer {
    pub async fn start(stop: CancellationToken) -> Balancer {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, StatusCode};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhooks/fintoc", listener.local_addr().unwrap());
        let replicas: Arc<Mutex<Vec<String>>> = Arc::default();
        let turn = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let http = reqwest::Client::new();
        let targets = replicas.clone();
        let forward = move |headers: HeaderMap, body: Bytes| {
            let (targets, turn, http) = (targets.clone(), turn.clone(), http.clone());
            async move {
                let target = {
                    let targets = targets.lock().unwrap();
                    let n = turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    targets[n % targets.len()].clone()
                };
                let mut request = http.post(format!("http://{target}/webhooks/fintoc"));
                if let Some(sig) = headers.get("fintoc-signature") {
                    request = request.header("Fintoc-Signature", sig.as_bytes());
                }
                match request.body(body).send().await {
                    Ok(r) => StatusCode::from_u16(r.status().as_u16()).unwrap(),
                    Err(_) => StatusCode::BAD_GATEWAY,
                }
            }
        };
        let app = axum::Router::new().route("/webhooks/fintoc", axum::routing::post(forward));
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .unwrap();
        });
        Balancer { url, replicas }
    }

    pub fn add(&self, replica: &Replica) {
        self.replicas.lock().unwrap().push(replica.http.clone());
    }
}

pub fn account(id: &str) -> pb::watch_refresh_request::Target {
    pb::watch_refresh_request::Target::AccountId(id.into())
}

/// The simulator on its own port with the test's key, its deliveries going to `webhook`
/// `delivery_delay` after each create.
pub fn simulator(webhook: &str, delivery_delay: Duration, stop: &CancellationToken) -> Simulator {
    let mut config = SimConfig::new(API_KEY);
    config.webhooks = vec![(webhook.to_owned(), SECRET.to_owned())];
    config.delivery_delay = delivery_delay;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    Simulator::start(
        TcpListener::from_std(listener).unwrap(),
        config,
        stop.clone(),
    )
    .unwrap()
}

/// `n` replicas on a fresh database, and the simulator with one Link whose refreshes succeed
/// with `new_movements`, its deliveries going through a balancer `delivery` after each create. Replicas
/// receive webhooks once the test adds them to the balancer.
pub struct Cluster {
    stop: CancellationToken,
    balancer: Balancer,
    sim: Simulator,
    link: SimLinkInfo,
    replicas: Vec<Replica>,
    _db: PgDb,
}

impl Cluster {
    pub async fn start(n: usize, delivery: Duration, new_movements: u32) -> Cluster {
        let stop = CancellationToken::new();
        let balancer = Balancer::start(stop.clone()).await;
        let sim = simulator(&balancer.url, delivery, &stop);
        let link = sim.add_link(LinkSpec::new(vec![Outcome::Succeed { new_movements }]));
        let db = PgDb::create().await;
        let replicas = (0..n)
            .map(|_| Replica::start(&db.url, &sim.url(), &[]))
            .collect();
        Cluster {
            stop,
            balancer,
            sim,
            link,
            replicas,
            _db: db,
        }
    }

    pub fn parts(
        &self,
    ) -> (
        &CancellationToken,
        &Balancer,
        &Simulator,
        &SimLinkInfo,
        &[Replica],
    ) {
        (
            &self.stop,
            &self.balancer,
            &self.sim,
            &self.link,
            &self.replicas,
        )
    }
}

/// Reads `watch` until its intent's summary and returns the intent's final status.
/// Heartbeats keep such a stream alive for ever: the wait is bounded as a whole (a minute).
pub async fn until_completed(watch: &mut Watch) -> pb::RefreshStatus {
    let completed = async {
        loop {
            if let Seen::Completed { status, .. } = watch.next_event().await {
                return status;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), completed)
        .await
        .expect("the intent did not complete within a minute")
}

/// Nowhere: replicas that never call Fintoc.
pub const NO_FINTOC: &str = "http://127.0.0.1:9";

/// The whole log as the account feeds of `accounts` on `replica` replay it: sequence → event.
pub async fn log_of(replica: &Replica, accounts: &[&str]) -> BTreeMap<u64, String> {
    let mut seen = BTreeMap::new();
    for acc in accounts {
        let mut replay = replica.watch(account(acc), Some(0)).await;
        loop {
            match replay.next().await {
                Seen::Result { seq, event, .. } => {
                    assert!(seen.insert(seq, event).is_none(), "sequence {seq} twice");
                }
                Seen::Heartbeat { .. } => break,
                other => panic!("{other:?}"),
            }
        }
    }
    seen
}

pub async fn health_of(replica: &Replica) -> Option<i32> {
    health_at(&replica.grpc).await
}

/// gRPC health (the server's) of the server whose gRPC port is `grpc`.
pub async fn health_at(grpc: &str) -> Option<i32> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let answer = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    Some(answer.into_inner().status)
}

/// GetLink of `link_id` on each replica: its only-last eligibility (reason, end) and each
/// account's latest sequence.
pub async fn link_states(
    replicas: &[Replica],
    link_id: &str,
) -> Vec<(String, Option<prost_types::Timestamp>, Vec<u64>)> {
    let mut states = Vec::new();
    for replica in replicas {
        let state = replica
            .client()
            .await
            .get_link(pb::GetLinkRequest {
                link_id: link_id.to_owned(),
            })
            .await
            .unwrap()
            .into_inner()
            .link
            .unwrap();
        let only_last = state.only_last.unwrap();
        let sequences = state.accounts.iter().map(|a| a.last_sequence).collect();
        states.push((only_last.reason, only_last.next_allowed_at, sequences));
    }
    states
}
