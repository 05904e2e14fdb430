//! Intake throughput: unique, correctly signed events over HTTP/1.1 keep-alive from 64
//! connections (`--connections N` to change), against `GET /healthz` on the same server with the same client, alternated
//! A B A B A B; then the stored events are counted and must equal the acknowledged ones.

use std::sync::Arc;
use std::time::Duration;

use fintoc_refresh::domain::ResultRow;
use fintoc_refresh::metrics::Metrics;
use fintoc_refresh::store::Store;
use serde_json::{Value, json};

use crate::Mode;
use crate::load::{self, Phase, Prepared};
use crate::server::{SECRET, Server};
use crate::stats::median;

pub async fn run(mode: &Mode) -> Value {
    let connections = mode.connections;
    let phase = if mode.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    };
    let rounds = 3;
    println!(
        "\n## Intake throughput ({connections} keep-alive connections, {} s phases, A=/healthz B=intake, ×{rounds})",
        phase.as_secs()
    );
    let server = Server::start(&[]);
    let addr = server.http.clone();
    // Warm up both paths (connections, page cache, SQLite's first pages).
    let warm: Arc<Vec<Prepared>> = Arc::new(
        (0..2000)
            .map(|i| load::prepare_event(&format!("evt_warm_{i}"), "acc_warm", SECRET))
            .collect(),
    );
    let a = addr.clone();
    let warmed = load::closed_loop(
        &addr,
        server.pid(),
        8,
        Duration::from_millis(500),
        move |i| warm.get(i).map(|e| load::webhook_request(&a, e)),
    )
    .await;

    let commits_before = load::scrape(&addr).await;
    let (mut health, mut intake) = (Vec::new(), Vec::new());
    // What the warm-up had acknowledged: a slow build sends fewer than its 2,000 events in
    // its half second, so counting them all would report acknowledged events as missing.
    let mut acked = warmed.ok;
    let mut sent_id = 0usize;
    for round in 0..rounds {
        let a = addr.clone();
        let h = load::closed_loop(&addr, server.pid(), connections, phase, move |_| {
            Some(load::healthz_request(&a))
        })
        .await;
        report_phase(&format!("A{round} /healthz"), &h);
        health.push(h);
        // More bodies than any phase can send: ~80k/s upper bound.
        let count = (80_000.0 * phase.as_secs_f64()) as usize;
        let events: Arc<Vec<Prepared>> = Arc::new(
            (0..count)
                .map(|i| {
                    load::prepare_event(
                        &format!("evt_b{round}_{}", sent_id + i),
                        &format!("acc_{}", i % 1000),
                        SECRET,
                    )
                })
                .collect(),
        );
        sent_id += count;
        let a = addr.clone();
        let b = load::closed_loop(&addr, server.pid(), connections, phase, move |i| {
            events.get(i).map(|e| load::webhook_request(&a, e))
        })
        .await;
        report_phase(&format!("B{round} intake"), &b);
        acked += b.ok;
        intake.push(b);
    }
    let commits_after = load::scrape(&addr).await;
    let delta =
        |name: &str| load::sample(&commits_after, name) - load::sample(&commits_before, name);
    let commits = delta("fintoc_refresh_commit_batch_size_count");
    let per_commit = delta("fintoc_refresh_commit_batch_size_sum") / commits.max(1.0);
    let commit_ms = 1000.0 * delta("fintoc_refresh_commit_seconds_sum") / commits.max(1.0);
    let syncs = delta("fintoc_refresh_wal_syncs_total");
    let sync_ms = 1000.0 * delta("fintoc_refresh_wal_sync_seconds_sum") / syncs.max(1.0);
    let acked_in_phases: u64 = intake.iter().map(|p| p.ok).sum();
    let answer_ms = 1000.0 * delta("fintoc_refresh_webhook_intake_seconds_sum")
        / delta("fintoc_refresh_webhook_intake_seconds_count").max(1.0);
    let (db, _dir) = server.stop();
    let stored = count_stored(&db).await;
    let health_rate = median(&mut health.iter().map(Phase::rate).collect::<Vec<_>>());
    let intake_rate = median(&mut intake.iter().map(Phase::rate).collect::<Vec<_>>());
    let ratio = intake_rate / health_rate;
    let client_bound = intake
        .iter()
        .chain(&health)
        .filter(|p| p.client_cpu > p.server_cpu)
        .count();
    println!("| measure | median |");
    println!("|---|---|");
    println!("| /healthz baseline | {health_rate:.0} req/s |");
    println!("| durable intake | {intake_rate:.0} events/s |");
    println!("| ratio intake / baseline | {ratio:.2} (target ≥ 0.50) |");
    println!(
        "| stored == acknowledged | {} ({stored} stored, {acked} acknowledged) |",
        stored == acked
    );
    println!(
        "| group commits during the intake phases | {commits:.0}: {per_commit:.1} events and {commit_ms:.2} ms (start to answered) each, mean |"
    );
    println!("| server-side answer time (body read → reply), mean | {answer_ms:.2} ms |");
    println!(
        "| WAL fsyncs during the intake phases | {syncs:.0}: {:.1} events and {sync_ms:.2} ms each, mean |",
        acked_in_phases as f64 / syncs.max(1.0)
    );
    if client_bound > 0 {
        println!(
            "note: in {client_bound} of {} phases the load generator used more CPU than the server: those phases are generator-bound",
            intake.len() + health.len()
        );
    }
    json!({
        "connections": connections,
        "healthz_rps": health_rate.round(),
        "intake_eps": intake_rate.round(),
        "ratio": (ratio * 100.0).round() / 100.0,
        "stored": stored,
        "group_commits": commits,
        "events_per_commit": (per_commit * 10.0).round() / 10.0,
        "commit_ms": (commit_ms * 100.0).round() / 100.0,
        "wal_syncs": syncs,
        "answer_ms": (answer_ms * 100.0).round() / 100.0,
        "events_per_sync": (acked_in_phases as f64 / syncs.max(1.0) * 10.0).round() / 10.0,
        "sync_ms": (sync_ms * 100.0).round() / 100.0,
        "acknowledged": acked,
        "phases": health.iter().zip(&intake).map(|(h, b)| json!({
            "healthz_rps": h.rate().round(), "intake_eps": b.rate().round(),
            "healthz_client_cpu": h.client_cpu, "healthz_server_cpu": h.server_cpu,
            "intake_client_cpu": b.client_cpu, "intake_server_cpu": b.server_cpu,
            "intake_failed": b.failed,
        })).collect::<Vec<_>>(),
    })
}

fn report_phase(name: &str, p: &Phase) {
    println!(
        "  {name:<14} {:>8.0}/s  ok={} failed={}  cpu: generator {:.1}s server {:.1}s over {:.1}s",
        p.rate(),
        p.ok,
        p.failed,
        p.client_cpu,
        p.server_cpu,
        p.elapsed.as_secs_f64()
    );
}

/// Events in the database, read after the server stopped (through the store, as the server
/// reads it).
pub async fn count_stored(db: &std::path::Path) -> u64 {
    let store = Store::open(
        // serve's defaults
        &fintoc_refresh::config::Config::new(db.to_string_lossy(), ""),
        Arc::new(Metrics::new()),
        Arc::new(|_: &[Arc<ResultRow>]| {}),
    )
    .await
    .expect("open the bench database");
    let counts = store.counts().await.expect("count");
    store.close().await;
    counts.webhook_events as u64
}
