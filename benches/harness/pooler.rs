//! PostgreSQL behind PgBouncer in transaction mode (`DATABASE_DIRECT_URL` for the writer, the
//! listener and migrations): what the pooler-safe statement handling costs, against one
//! replica on a direct connection, in the same run, alternated. The intake goes through the
//! writer (direct either way); reads go through the pool, where behind the pooler every
//! statement is prepared, run and closed inside a transaction of its own instead of reusing
//! a prepared statement: measured with GetRefresh (one read of an intent) from 32 callers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fintoc_refresh::pb;
use fintoc_refresh::pb::refresh_service_client::RefreshServiceClient;
use serde_json::{Value, json};

use crate::Mode;
use crate::load;
use crate::pgbouncer::PgBouncer;
use crate::postgres::{Database, intake_phase};
use crate::server::Server;
use crate::stats::{median, percentile};

/// Concurrent GetRefresh callers.
const READERS: usize = 32;

/// GetRefresh of an unknown intent (one read, answered NOT_FOUND) back to back from
/// [`READERS`] callers for `phase`: answers per second and the median latency.
async fn reads(server: &Server, phase: Duration) -> (f64, Duration) {
    let channels = load::grpc_channels(&server.grpc, 4).await;
    let answered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let callers: Vec<_> = (0..READERS)
        .map(|i| {
            let mut client = RefreshServiceClient::new(channels[i % channels.len()].clone());
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while started.elapsed() < phase {
                    let asked = Instant::now();
                    let answer = client
                        .get_refresh(pb::GetRefreshRequest {
                            refresh_intent_id: format!("ri_bench_{i}"),
                        })
                        .await;
                    match answer {
                        Err(status) if status.code() == tonic::Code::NotFound => {
                            latencies.push(asked.elapsed());
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        other => panic!("GetRefresh answered {other:?}"),
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for caller in callers {
        latencies.extend(caller.await.unwrap());
    }
    let rate = answered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    (rate, percentile(&mut latencies, 50.0))
}

pub async fn run(mode: &Mode) -> Value {
    let phase = Duration::from_secs(if mode.quick { 2 } else { 5 });
    let rounds = if mode.quick { 1 } else { 3 };
    println!(
        "\n## PostgreSQL behind PgBouncer (transaction mode, DATABASE_DIRECT_URL), {} s phases, \
         A=direct B=through PgBouncer, ×{rounds}",
        phase.as_secs()
    );
    let direct_db = Database::create("fintoc_refresh_bench_direct").await;
    let pooled_db = Database::create("fintoc_refresh_bench_pooled").await;
    let bouncer = PgBouncer::start("transaction", &pooled_db.url, 20);
    let direct = Server::start_on(Some(&direct_db.url), &[]);
    let pooled_url = bouncer.url(&pooled_db.url);
    let pooled = Server::start_on(
        Some(&pooled_url),
        &["--database-direct-url", pooled_db.url.as_str()],
    );
    let connections = mode.connections;
    let (mut intake_direct, mut intake_pooled) = (Vec::new(), Vec::new());
    let (mut reads_direct, mut reads_pooled) = (Vec::new(), Vec::new());
    let (mut p50_direct, mut p50_pooled) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for (name, server, rates) in [
            ("direct", &direct, &mut intake_direct),
            ("pooled", &pooled, &mut intake_pooled),
        ] {
            let p = intake_phase(&[server], connections, phase, &format!("{name}{round}")).await;
            println!(
                "  intake {name:<6} {:>8.0} events/s  ok={} failed={}",
                p.rate(),
                p.ok,
                p.failed
            );
            rates.push(p.rate());
        }
        for (name, server, rates, p50s) in [
            ("direct", &direct, &mut reads_direct, &mut p50_direct),
            ("pooled", &pooled, &mut reads_pooled, &mut p50_pooled),
        ] {
            let (rate, p50) = reads(server, phase).await;
            println!(
                "  reads  {name:<6} {rate:>8.0} GetRefresh/s  p50 {:.2} ms",
                p50.as_secs_f64() * 1000.0
            );
            rates.push(rate);
            p50s.push(p50.as_secs_f64() * 1000.0);
        }
    }
    let (id, ip) = (median(&mut intake_direct), median(&mut intake_pooled));
    let (rd, rp) = (median(&mut reads_direct), median(&mut reads_pooled));
    let (ld, lp) = (median(&mut p50_direct), median(&mut p50_pooled));
    println!("| measure | direct | through PgBouncer | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| intake, 1 replica | {id:.0} events/s | {ip:.0} events/s | {:.2}× |",
        ip / id
    );
    println!(
        "| GetRefresh, {READERS} callers | {rd:.0}/s, p50 {ld:.2} ms | {rp:.0}/s, p50 {lp:.2} ms | {:.2}× |",
        rp / rd
    );
    direct.stop();
    pooled.stop();
    drop(bouncer);
    direct_db.drop_now().await;
    pooled_db.drop_now().await;
    json!({
        "intake_direct": id.round(),
        "intake_pooled": ip.round(),
        "reads_direct": rd.round(),
        "reads_pooled": rp.round(),
        "reads_p50_ms_direct": (ld * 100.0).round() / 100.0,
        "reads_p50_ms_pooled": (lp * 100.0).round() / 100.0,
    })
}
