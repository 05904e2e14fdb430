//! Sustained intake and the SQLite WAL: what keeping the WAL bounded costs. Two runs of the
//! same load, one after the other on the same machine: the server as shipped (the WAL kept
//! below its default 64 MiB limit) and the same binary with the limit set out of reach (a
//! TiB: only PASSIVE checkpoints, the WAL grows as long as the load lasts). Each run sends
//! unique signed events back to back from the intake's connections for 90 s (10 s with
//! `--quick`) while 40 account watchers drop their stream and reconnect from their cursor
//! every 4 s. Reported: the intake's rate and answer times, the WAL file's size sampled every
//! second, the writer's restarts and its pauses for them; checked: every acknowledged event is
//! stored once, and every watcher saw its account's results in order, each once.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_stream::StreamExt;

use fintoc_refresh::pb::refresh_service_client::RefreshServiceClient;
use fintoc_refresh::pb::watch_refresh_request::Target;
use fintoc_refresh::pb::{self, watch_refresh_response::Event};

use crate::Mode;
use crate::load::{self, Conn};
use crate::server::{SECRET, Server};
use crate::stats::{ms, percentile};

const WATCHERS: usize = 40;
const RECONNECT: Duration = Duration::from_secs(4);
const MIB: f64 = 1024.0 * 1024.0;

pub async fn run(mode: &Mode) -> Value {
    let seconds = if mode.quick { 10 } else { 90 };
    println!(
        "\n## Sustained intake and the SQLite WAL ({} connections back to back, {WATCHERS} \
         watchers reconnecting by cursor every {} s, {seconds} s per run)",
        mode.connections,
        RECONNECT.as_secs()
    );
    println!(
        "| run | events/s | p50 ms | p99 ms | largest WAL MiB | WAL MiB every 10 s | restarts | \
         writer paused (total ms, longest bucket ms) | stored = acked | watchers in order |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let bounded = measure(mode, "bounded (64 MiB, default)", &[], seconds).await;
    let unbounded = measure(
        mode,
        "limit out of reach",
        &["--sqlite-wal-limit-bytes", "1099511627776"],
        seconds,
    )
    .await;
    let ratio =
        |key: &str| bounded[key].as_f64().unwrap_or(0.0) / unbounded[key].as_f64().unwrap_or(1.0);
    println!(
        "bounded / out of reach: rate {:.2}×, p99 {:.2}×, largest WAL {:.3}×",
        ratio("rate"),
        ratio("p99_ms"),
        ratio("largest_wal_mib")
    );
    json!({"seconds": seconds, "bounded": bounded, "unbounded": unbounded,
        "rate_ratio": ratio("rate"), "p99_ratio": ratio("p99_ms")})
}

async fn measure(mode: &Mode, name: &str, args: &[&str], seconds: u64) -> Value {
    let server = Server::start(args);
    let wal = format!("{}-wal", server.db.display());
    let run = name.split_whitespace().next().unwrap_or("run").to_owned();
    let stop = Arc::new(AtomicBool::new(false));

    // The WAL file's size, every second until the load ends.
    let sampler = tokio::spawn({
        let (wal, stop) = (wal.clone(), stop.clone());
        async move {
            let mut sizes = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            while !stop.load(Ordering::Acquire) {
                tick.tick().await;
                sizes.push(file_size(Path::new(&wal)));
            }
            sizes
        }
    });

    // Watchers, each on its own account; acked[k] is what account k must end up with.
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..WATCHERS).map(|_| AtomicU64::new(0)).collect());
    let channels = load::grpc_channels(&server.grpc, 4).await;
    let mut watchers = Vec::new();
    for k in 0..WATCHERS {
        let client = RefreshServiceClient::new(channels[k % channels.len()].clone());
        let account = format!("acc_{run}_{k}");
        let mut first = open(client.clone(), &account, None).await;
        // The opening heartbeat: the stream is live before any event is sent.
        first.next().await.expect("opening heartbeat").expect("ok");
        let (stop, acked) = (stop.clone(), acked.clone());
        watchers.push(tokio::spawn(async move {
            follow(client, account, first, stop, &acked[k]).await
        }));
    }

    // The load: every connection sends the next unique event as soon as the last is answered.
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut senders = Vec::new();
    for _ in 0..mode.connections {
        let mut conn = Conn::open(&server.http).await;
        let (next, acked, addr, run) = (
            next.clone(),
            acked.clone(),
            server.http.clone(),
            run.clone(),
        );
        senders.push(tokio::spawn(async move {
            let (mut latencies, mut failed) = (Vec::new(), 0u64);
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let k = i % WATCHERS;
                let event = load::prepare_event(
                    &format!("evt_{run}_{i}"),
                    &format!("acc_{run}_{k}"),
                    SECRET,
                );
                let sent = Instant::now();
                match conn.send(load::webhook_request(&addr, &event)).await {
                    Some(s) if s.is_success() => {
                        latencies.push(sent.elapsed());
                        acked[k].fetch_add(1, Ordering::AcqRel);
                    }
                    _ => failed += 1,
                }
            }
            (latencies, failed)
        }));
    }
    let (mut latencies, mut failed) = (Vec::new(), 0);
    for sender in senders {
        let (l, f) = sender.await.unwrap();
        latencies.extend(l);
        failed += f;
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Release);
    let sizes = sampler.await.unwrap();
    let mut in_order = 0;
    for watcher in watchers {
        in_order += usize::from(watcher.await.unwrap());
    }
    let metrics = load::scrape(&server.http).await;
    let restarts = labelled(&metrics, "fintoc_refresh_wal_restarts_total", "restarted");
    let busy = labelled(&metrics, "fintoc_refresh_wal_restarts_total", "busy");
    let paused_ms = load::sample(&metrics, "fintoc_refresh_wal_restart_seconds_sum") * 1000.0;
    let longest_ms = longest_bucket(&metrics, "fintoc_refresh_wal_restart_seconds") * 1000.0;
    let (db, _dir) = server.stop();
    let acked_total: u64 = acked.iter().map(|a| a.load(Ordering::Acquire)).sum();
    let stored = crate::intake::count_stored(&db).await;

    let ok = latencies.len() as f64;
    let rate = ok / elapsed.as_secs_f64();
    let (p50, p99) = (
        percentile(&mut latencies, 50.0),
        percentile(&mut latencies, 99.0),
    );
    let largest = sizes.iter().copied().max().unwrap_or(0) as f64 / MIB;
    let every_10: Vec<String> = sizes
        .iter()
        .step_by(10)
        .map(|s| format!("{:.0}", *s as f64 / MIB))
        .collect();
    println!(
        "| {name} | {rate:.0} | {:.2} | {:.2} | {largest:.1} | {} | {restarts} ({busy} busy) | \
         {paused_ms:.0}, {longest_ms:.1} | {} ({stored}/{acked_total}, {failed} failed) | \
         {in_order}/{WATCHERS} |",
        ms(p50),
        ms(p99),
        every_10.join(" "),
        if stored == acked_total { "yes" } else { "NO" },
    );
    json!({"run": name, "rate": rate, "p50_ms": ms(p50), "p99_ms": ms(p99),
        "largest_wal_mib": largest, "wal_mib_every_second": sizes.iter().map(|s| *s as f64 / MIB).collect::<Vec<_>>(),
        "restarts": restarts, "restarts_busy": busy, "writer_paused_ms": paused_ms,
        "longest_pause_bucket_ms": longest_ms, "stored": stored, "acked": acked_total,
        "failed": failed, "watchers_in_order": in_order, "watchers": WATCHERS})
}

async fn open(
    mut client: RefreshServiceClient<tonic::transport::Channel>,
    account: &str,
    after: Option<u64>,
) -> tonic::Streaming<pb::WatchRefreshResponse> {
    client
        .watch_refresh(pb::WatchRefreshRequest {
            target: Some(Target::AccountId(account.to_owned())),
            after_sequence: after,
            ..Default::default()
        })
        .await
        .expect("watch")
        .into_inner()
}

/// Follows `account`, reconnecting from its cursor every [`RECONNECT`], until the load has
/// stopped and it has seen every result acknowledged for the account. True when it saw each
/// in order and once (sequences only grow), and no more than were acknowledged.
async fn follow(
    client: RefreshServiceClient<tonic::transport::Channel>,
    account: String,
    mut stream: tonic::Streaming<pb::WatchRefreshResponse>,
    stop: Arc<AtomicBool>,
    acked: &AtomicU64,
) -> bool {
    let (mut cursor, mut last, mut seen) = (0u64, 0u64, 0u64);
    let mut in_order = true;
    let mut give_up: Option<Instant> = None;
    loop {
        let reconnect_at = Instant::now() + RECONNECT;
        loop {
            let left = reconnect_at.saturating_duration_since(Instant::now());
            let Ok(Some(Ok(msg))) = tokio::time::timeout(left, stream.next()).await else {
                break;
            };
            // A result's sequence and a heartbeat's are both safe resume points.
            cursor = cursor.max(msg.sequence);
            if let Some(Event::AccountResult(_)) = msg.event {
                in_order &= msg.sequence > last;
                last = msg.sequence;
                seen += 1;
            }
        }
        if stop.load(Ordering::Acquire) {
            let wanted = acked.load(Ordering::Acquire);
            let give_up = *give_up.get_or_insert_with(|| Instant::now() + Duration::from_secs(30));
            if seen >= wanted || Instant::now() > give_up {
                return in_order && seen == wanted;
            }
        }
        stream = open(client.clone(), &account, Some(cursor)).await;
    }
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// A counter sample with one `outcome` label.
fn labelled(metrics: &str, name: &str, outcome: &str) -> u64 {
    load::sample(metrics, &format!("{name}{{outcome=\"{outcome}\"}}")) as u64
}

/// The upper bound of the highest histogram bucket anything fell into: the longest pause, to
/// the bucket.
fn longest_bucket(metrics: &str, name: &str) -> f64 {
    let count = load::sample(metrics, &format!("{name}_count"));
    let prefix = format!("{name}_bucket{{le=\"");
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, value) = rest.split_once("\"} ")?;
            Some((le.parse::<f64>().ok()?, value.trim().parse::<f64>().ok()?))
        })
        .find(|&(_, below)| below >= count)
        .map_or(0.0, |(le, _)| if count == 0.0 { 0.0 } else { le })
}
