//! Replicas behind a real PgBouncer (Debian's package, started by each test on a port of its
//! own, in front of the test's PostgreSQL): in transaction mode with `DATABASE_DIRECT_URL`,
//! in transaction mode without it (refused at start), and in session mode. PgBouncer refuses
//! to run as root: as root it is told to switch to the `postgres` user. Without PgBouncer
//! installed these tests fail and say how to install it; they never skip.

use std::collections::HashSet;
use std::time::Duration;

use fintoc_refresh::clock::system_now_ms;
use fintoc_refresh::pb;
use fintoc_refresh::simulator::{LinkSpec, Outcome};
use tokio_util::sync::CancellationToken;

use crate::common::*;
use crate::pgbouncer::PgBouncer;
use crate::replicas::{Balancer, NO_FINTOC, Replica, account, simulator};

/// PgBouncer in `mode` in front of `db`'s server, for `db`'s role: few server sessions in
/// transaction mode, so that consecutive transactions of one client really land on
/// different ones; one per client connection in session mode.
fn bouncer(mode: &str, db: &PgDb) -> PgBouncer {
    let sessions = if mode == "transaction" { 4 } else { 80 };
    PgBouncer::start(mode, &db.url, sessions)
}

/// What several replicas promise, checked through whatever `urls` they start with: one
/// gap-free log in one order on every replica (concurrent writers), single flight (one
/// create call for concurrent requests on three replicas) and dedupe (one event delivered to
/// two replicas is stored and pushed once).
async fn replicas_act_as_one(database_url: &str, extra: &[&str]) {
    let stop = CancellationToken::new();
    let balancer = Balancer::start(stop.clone()).await;
    // Results only after every request below has arrived: they all find it pending.
    let sim = simulator(&balancer.url, Duration::from_secs(5), &stop);
    let link = sim.add_link(LinkSpec::new(vec![Outcome::Succeed { new_movements: 1 }]));
    let mut flags = vec!["--database-pool-size", "4"];
    flags.extend_from_slice(extra);
    let replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::start(database_url, &sim.url(), &flags))
        .collect();
    for r in &replicas {
        balancer.add(r);
    }

    // Concurrent writers: one order, gap-free, everywhere.
    let http = reqwest::Client::new();
    let mut senders = Vec::new();
    for s in 0..6 {
        let (http, targets) = (
            http.clone(),
            replicas.iter().map(|r| r.http.clone()).collect::<Vec<_>>(),
        );
        senders.push(tokio::spawn(async move {
            for i in 0..25 {
                let body = event(
                    &format!("evt_pool_{s}_{i}"),
                    "acc_pool",
                    "succeeded",
                    system_now_ms(),
                );
                let header = fintoc_refresh::fintoc::signature::header(
                    SECRET,
                    system_now_ms() / 1000,
                    body.as_bytes(),
                );
                let status = http
                    .post(format!("http://{}/webhooks/fintoc", targets[(s + i) % 3]))
                    .header("Fintoc-Signature", header)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 200, "evt_pool_{s}_{i}");
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let mut logs = Vec::new();
    for r in &replicas {
        let mut replay = r.watch(account("acc_pool"), Some(0)).await;
        let mut seen = Vec::new();
        while seen.len() < 150 {
            if let Seen::Result { seq, event, .. } = replay.next_event().await {
                seen.push((seq, event));
            }
        }
        let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=150).collect::<Vec<_>>(), "gaps or disorder");
        logs.push(seen);
    }
    assert!(logs.windows(2).all(|w| w[0] == w[1]), "replicas disagree");

    // Single flight across replicas.
    let calls: Vec<_> = replicas
        .iter()
        .flat_map(|r| std::iter::repeat_n(r, 4))
        .map(|r| {
            let token = link.token.clone();
            let grpc = r.grpc.clone();
            tokio::spawn(async move {
                let mut client = pb::refresh_service_client::RefreshServiceClient::connect(
                    format!("http://{grpc}"),
                )
                .await
                .unwrap();
                client
                    .request_refresh(pb::RequestRefreshRequest {
                        link_token: token,
                        ..Default::default()
                    })
                    .await
                    .map(|answer| answer.into_inner().refresh_intent.unwrap().id)
            })
        })
        .collect();
    let mut intents = HashSet::new();
    for call in calls {
        match call.await.unwrap() {
            Ok(id) => intents.insert(id),
            Err(status) => {
                let logs: Vec<String> = replicas.iter().map(Replica::stderr).collect();
                panic!("a RequestRefresh failed: {status:?}; the replicas said: {logs:#?}")
            }
        };
    }
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(sim.requests("POST", "/v1/refresh_intents"), 1);

    // One event delivered to two replicas: stored and pushed once.
    let mut feed = replicas[2].watch(account("acc_dup"), None).await;
    feed.next().await;
    let body = event("evt_pool_dup", "acc_dup", "failed", system_now_ms());
    for r in &replicas[..2] {
        assert_eq!(r.post(&http, &body).await.unwrap().0, 200);
    }
    let first = feed.next_event().await;
    assert!(matches!(&first, Seen::Result { event, .. } if event == "evt_pool_dup"));
    let again = feed.try_next(Duration::from_millis(700)).await;
    assert!(
        matches!(again, None | Some(Ok(Seen::Heartbeat { .. }))),
        "pushed twice: {again:?}"
    );
    stop.cancel();
}

/// Through PgBouncer in transaction mode, with DATABASE_DIRECT_URL for the listener, the
/// writer and migrations: every statement through the pooler works although consecutive
/// transactions land on different server sessions, and three replicas act as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_transaction_pooler_with_a_direct_url_replicas_act_as_one() {
    let db = PgDb::create().await;
    let bouncer = bouncer("transaction", &db);
    replicas_act_as_one(
        &bouncer.url(&db.url),
        &["--database-direct-url", db.url.as_str()],
    )
    .await;
}

/// Behind a transaction pooler without DATABASE_DIRECT_URL, a replica refuses to start,
/// before its listening line, with one line that names the pooler mode and the variable to
/// set — rather than start and fail later on its first LISTEN or prepared statement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_transaction_pooler_without_a_direct_url_a_replica_refuses_to_start() {
    let db = PgDb::create().await;
    let bouncer = bouncer("transaction", &db);
    let url = bouncer.url(&db.url);
    let line = tokio::task::spawn_blocking(move || {
        crate::process::fails_with_one_line(
            &[
                "serve",
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--database-url",
                &url,
                "--fintoc-api-url",
                NO_FINTOC,
            ],
            &[
                ("FINTOC_SECRET_KEY", API_KEY),
                ("FINTOC_WEBHOOK_SECRET", SECRET),
            ],
            "DATABASE_DIRECT_URL",
        )
    })
    .await
    .unwrap();
    assert!(line.contains("transaction mode"), "{line}");
    assert!(!line.contains("password"), "{line}");
}

/// Through PgBouncer in session mode (each client keeps its server session), replicas work
/// as on a direct connection, with no direct URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_session_pooler_replicas_act_as_one() {
    let db = PgDb::create().await;
    let bouncer = bouncer("session", &db);
    replicas_act_as_one(&bouncer.url(&db.url), &[]).await;
}

/// A start that cannot reach the database fails within a bound, before any listening line,
/// instead of hanging: here the database's address answers TCP and then says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_against_a_silent_database_fails_within_a_bound() {
    let db = PgDb::create().await;
    let proxy = crate::proxy::Proxy::start(crate::proxy::upstream_of(&db.url)).await;
    proxy.freeze();
    let url = proxy.url(&db.url);
    let started = std::time::Instant::now();
    let line = tokio::task::spawn_blocking(move || {
        crate::process::fails_with_one_line(
            &[
                "serve",
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--database-url",
                &url,
                "--fintoc-api-url",
                NO_FINTOC,
            ],
            &[
                ("FINTOC_SECRET_KEY", API_KEY),
                ("FINTOC_WEBHOOK_SECRET", SECRET),
            ],
            "database",
        )
    })
    .await
    .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}: {line}",
        started.elapsed()
    );
}
