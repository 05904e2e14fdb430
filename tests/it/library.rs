//! The Rust client library (`client/`, crate `fintoc-refresh-client`) against the real
//! server binary and its faults: every test posts results while the fault happens and counts
//! what the library's `Watcher` hands over — every result exactly once, in sequence order,
//! across all of it.
//!
//! - the server restarted mid-stream (same address, same SQLite file);
//! - streams aged out (`--max-stream-age 1s`, several times over);
//! - the server down when the watcher starts;
//! - a cursor expired while the client was away (the oldest results removed as retention
//!   would): the watcher re-syncs through ListLinks, then misses nothing after;
//! - a replica killed (three replicas on PostgreSQL, the client given all three addresses).

use std::collections::BTreeMap;
use std::time::Duration;

use fintoc_refresh::clock::system_now_ms;
use fintoc_refresh::fintoc::signature;
use fintoc_refresh::pb::watch_refresh_response::Event;
use fintoc_refresh_client::{Client, Options, Target, WatchEvent, Watcher};
use futures_util::StreamExt;

use crate::binary::{Running, Serve};
use crate::common::*;

/// A free address on 127.0.0.1 for a server that must come back on the same one (or that a
/// watcher dials before it starts). Taken below Linux's ephemeral range (32768–60999), where
/// the port-0 binds of every other test draw from, so none of them can take it in between.
fn free_addr() -> String {
    loop {
        let port: u16 = rand::random_range(20_000..32_000);
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap().to_string();
        }
    }
}

/// `serve` on these addresses (`127.0.0.1:0`: a port of its own, read from its listening
/// line).
fn serve(database: &str, grpc: &str, http: &str, extra: &[&str]) -> Running {
    Serve::new()
        .database(database)
        .grpc_addr(grpc)
        .http_addr(http)
        .args([
            "--fintoc-api-url",
            "http://127.0.0.1:9",
            "--heartbeat-interval",
            "200ms",
        ])
        .args(extra)
        .env("FINTOC_SECRET_KEY", API_KEY)
        .env("FINTOC_WEBHOOK_SECRET", SECRET)
        .stderr_log()
        .start()
}

/// Posts result `n` (an unsolicited success of `acc_<n % 3>`); whether it was stored.
async fn post(http: &reqwest::Client, addr: &str, n: usize) -> bool {
    let body = event(
        &format!("evt_lib_{n}"),
        &format!("acc_lib_{}", n % 3),
        "succeeded",
        system_now_ms(),
    );
    let header = signature::header(SECRET, system_now_ms() / 1000, body.as_bytes());
    http.post(format!("http://{addr}/webhooks/fintoc"))
        .header("Fintoc-Signature", header)
        .body(body)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// What a watcher handed over: result event ids by sequence, in order.
#[derive(Default)]
struct Seen {
    results: Vec<(u64, String)>,
    resynced: usize,
}

impl Seen {
    /// Reads `watcher` until it has handed over `wanted` results (a minute at most).
    async fn until(&mut self, watcher: &mut Watcher, wanted: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.results.len() < wanted {
            let next = tokio::time::timeout_at(deadline, watcher.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "only {} of {wanted} results: {:?}",
                        self.results.len(),
                        self.results
                    )
                });
            match next.expect("the watcher goes on").expect("no error") {
                WatchEvent::Message(message) => {
                    if let Some(Event::AccountResult(result)) = message.event {
                        self.results.push((message.sequence, result.event_id));
                    }
                }
                WatchEvent::Resynced { .. } => self.resynced += 1,
                WatchEvent::Reconnecting { .. } => {}
            }
        }
    }

    /// Every result of `expected` exactly once, in increasing sequence order.
    fn exactly_once_in_order(&self, expected: impl IntoIterator<Item = usize>) {
        let sequences: Vec<u64> = self.results.iter().map(|r| r.0).collect();
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "in order: {sequences:?}"
        );
        let mut got: Vec<&str> = self.results.iter().map(|r| r.1.as_str()).collect();
        got.sort();
        let mut want: Vec<String> = expected
            .into_iter()
            .map(|n| format!("evt_lib_{n}"))
            .collect();
        want.sort();
        assert_eq!(got, want, "every result exactly once");
    }
}

fn client(addresses: &[&str]) -> Client {
    let urls: Vec<String> = addresses.iter().map(|a| format!("http://{a}")).collect();
    Client::connect(urls, Options::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_rides_out_a_restart_and_aged_out_streams() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lib.db").to_string_lossy().into_owned();
    let (grpc, http) = (free_addr(), free_addr());
    let web = reqwest::Client::new();
    let mut server = serve(&db, &grpc, &http, &["--max-stream-age", "1s"]);
    let mut watcher = client(&[&grpc]).watch(Target::all()).after(Some(0));
    let mut seen = Seen::default();
    for n in 0..5 {
        assert!(post(&web, &http, n).await);
    }
    seen.until(&mut watcher, 5).await;
    // Streams age out every second: results keep coming across several of them.
    for n in 5..10 {
        assert!(post(&web, &http, n).await);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    seen.until(&mut watcher, 10).await;
    server.sigterm();
    server.wait_exit(Duration::from_secs(10));
    let _server = serve(&db, &grpc, &http, &["--max-stream-age", "1s"]);
    for n in 10..15 {
        assert!(post(&web, &http, n).await);
    }
    seen.until(&mut watcher, 15).await;
    seen.exactly_once_in_order(0..15);
    assert_eq!(seen.resynced, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_started_while_the_server_is_down_follows_it_once_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lib.db").to_string_lossy().into_owned();
    let (grpc, http) = (free_addr(), free_addr());
    let mut watcher = client(&[&grpc]).watch(Target::all()).after(Some(0));
    let reading = tokio::spawn(async move {
        let mut seen = Seen::default();
        seen.until(&mut watcher, 4).await;
        seen
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _server = serve(&db, &grpc, &http, &[]);
    let web = reqwest::Client::new();
    for n in 0..4 {
        assert!(post(&web, &http, n).await);
    }
    reading.await.unwrap().exactly_once_in_order(0..4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_that_expired_while_away_resyncs_then_misses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("lib.db").to_string_lossy().into_owned();
    let (grpc, http) = (free_addr(), free_addr());
    let web = reqwest::Client::new();
    let mut server = serve(&db, &grpc, &http, &[]);
    let library = client(&[&grpc]);
    let mut watcher = library.watch(Target::account("acc_lib_0")).after(Some(0));
    assert!(post(&web, &http, 0).await);
    let mut seen = Seen::default();
    seen.until(&mut watcher, 1).await;
    let stored = watcher.cursor();
    drop(watcher);

    // Away: more results, then retention removes everything up to the newest (as its run
    // would, and records what it pruned).
    for n in 1..7 {
        assert!(post(&web, &http, n).await);
    }
    server.sigterm();
    server.wait_exit(Duration::from_secs(10));
    prune_everything(&db);
    let server = serve(&db, &grpc, &http, &[]);

    let mut watcher = library.watch(Target::account("acc_lib_0")).after(stored);
    // Its cursor is gone: the first thing it hands over is the re-sync (the account's state:
    // its results here are unsolicited, of no Link this service knows, so no Link).
    match tokio::time::timeout(PATIENCE, watcher.next()).await {
        Ok(Some(Ok(WatchEvent::Resynced { links, .. }))) => assert!(links.is_empty()),
        other => panic!("expected a re-sync, got {other:?}"),
    }
    let mut back = Seen::default();
    for n in 7..13 {
        assert!(post(&web, &http, n).await);
    }
    // acc_lib_0's results among 7..13: 9 and 12, each once.
    back.until(&mut watcher, 2).await;
    back.exactly_once_in_order([9, 12]);
    drop(server);
}

/// Prunes the (stopped) SQLite store at `path` as retention would after a long absence:
/// every result, with the newest pruned time recorded in `log_horizon`.
fn prune_everything(path: &str) {
    use diesel::connection::SimpleConnection;
    use diesel::{Connection, SqliteConnection};
    let mut conn = SqliteConnection::establish(path).unwrap();
    conn.batch_execute(
        "UPDATE log_horizon SET pruned_through_ms = (SELECT max(committed_at_ms) FROM results); \
         DELETE FROM intent_accounts WHERE result_sequence IS NOT NULL; \
         DELETE FROM results;",
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_moves_to_another_replica_when_its_own_is_killed() {
    let db = PgDb::create().await;
    let web = reqwest::Client::new();
    // Ports of their own (nothing to restart on the same address here).
    let mut replicas: Vec<Running> = (0..3)
        .map(|_| serve(&db.url, "127.0.0.1:0", "127.0.0.1:0", &[]))
        .collect();
    let addrs: Vec<(String, String)> = replicas
        .iter()
        .map(|r| (r.grpc.clone(), r.http.clone()))
        .collect();
    let grpcs: Vec<&str> = addrs.iter().map(|(g, _)| g.as_str()).collect();
    // The first address is where the watcher starts.
    let mut watcher = client(&grpcs).watch(Target::all()).after(Some(0));
    let mut seen = Seen::default();
    for n in 0..4 {
        assert!(post(&web, &addrs[n % 3].1, n).await);
    }
    seen.until(&mut watcher, 4).await;
    replicas[0].sigkill();
    for n in 4..10 {
        assert!(post(&web, &addrs[1 + n % 2].1, n).await);
    }
    seen.until(&mut watcher, 10).await;
    seen.exactly_once_in_order(0..10);
    let by_sequence: BTreeMap<u64, String> = seen.results.iter().cloned().collect();
    assert_eq!(by_sequence.len(), 10);
}
