//! Before/after: the same SQLite intake and push measurements against another build of the
//! binary (`BENCH_BASELINE_BIN`: the code before a change) and this one, alternated
//! before, after, before, after … in one run, so both see the same machine at the same
//! time. Each phase gets a fresh server on a fresh file; every intake phase checks that
//! what was acknowledged is what was stored. Without `BENCH_BASELINE_BIN` the section says
//! it was skipped (it measures nothing, and claims nothing).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::Mode;
use crate::binary::THIS_BUILD;
use crate::intake::count_stored;
use crate::load::{self, Prepared};
use crate::server::{SECRET, Server};
use crate::stats::median;

const ROUNDS: usize = 3;
/// The push measurement's shape: the product's usual one, each watcher on its own account.
const WATCHERS: usize = 100;

pub async fn run(mode: &Mode) -> Value {
    let Ok(baseline) = std::env::var("BENCH_BASELINE_BIN") else {
        println!("\n## Before/after: skipped (set BENCH_BASELINE_BIN to the build to compare)");
        return Value::Null;
    };
    let seconds = if mode.quick { 2 } else { 5 };
    let connections = mode.connections;
    println!(
        "\n## Before/after (before = {baseline}), SQLite; intake {connections} connections {seconds} s, push {WATCHERS} watchers 1000 events/s {seconds} s; alternated ×{ROUNDS}"
    );
    let builds = [("before", baseline.as_str()), ("after", THIS_BUILD)];
    let mut intake = [Vec::new(), Vec::new()];
    let mut p50 = [Vec::new(), Vec::new()];
    let mut p99 = [Vec::new(), Vec::new()];
    let mut all_stored = true;
    for round in 0..ROUNDS {
        for (b, (label, binary)) in builds.iter().enumerate() {
            let (rate, stored_all) = intake_phase(binary, round, connections, seconds).await;
            all_stored &= stored_all;
            println!(
                "  {label:<6} intake {rate:>8.0} events/s  stored == acknowledged: {stored_all}"
            );
            intake[b].push(rate);
        }
        for (b, (label, binary)) in builds.iter().enumerate() {
            let server = Server::start_binary(binary, None, &[]);
            print!("  {label:<6} push   ");
            let row = crate::latency::measure(
                &server,
                &server,
                10 * round + b,
                WATCHERS,
                crate::latency::Shape::Spread,
                seconds,
            )
            .await;
            server.stop();
            p50[b].push(row["p50_ms"].as_f64().unwrap_or(f64::NAN));
            p99[b].push(row["p99_ms"].as_f64().unwrap_or(f64::NAN));
        }
    }
    let med = |v: &mut Vec<f64>| median(v);
    let (intake_before, intake_after) = (med(&mut intake[0]), med(&mut intake[1]));
    let (p50_before, p50_after) = (med(&mut p50[0]), med(&mut p50[1]));
    let (p99_before, p99_after) = (med(&mut p99[0]), med(&mut p99[1]));
    println!("| measure (median of {ROUNDS}) | before | after | after / before |");
    println!("|---|---|---|---|");
    println!(
        "| intake | {intake_before:.0} events/s | {intake_after:.0} events/s | {:.3} |",
        intake_after / intake_before
    );
    println!(
        "| push p50 | {p50_before:.2} ms | {p50_after:.2} ms | {:.3} |",
        p50_after / p50_before
    );
    println!(
        "| push p99 | {p99_before:.2} ms | {p99_after:.2} ms | {:.3} |",
        p99_after / p99_before
    );
    println!("| stored == acknowledged, every intake phase | {all_stored} | | |");
    json!({
        "intake_eps": {"before": intake_before.round(), "after": intake_after.round()},
        "push_p50_ms": {"before": p50_before, "after": p50_after},
        "push_p99_ms": {"before": p99_before, "after": p99_after},
        "stored_equals_acknowledged": all_stored,
    })
}

/// One intake phase on a fresh server of `binary`: its rate, and whether every acknowledged
/// event was stored.
async fn intake_phase(binary: &str, round: usize, connections: usize, seconds: u64) -> (f64, bool) {
    let server = Server::start_binary(binary, None, &[]);
    let addr = server.http.clone();
    let count = 80_000 * seconds as usize;
    let events: Arc<Vec<Prepared>> = Arc::new(
        (0..count)
            .map(|i| {
                let id = format!("evt_ba{round}_{i}");
                load::prepare_event(&id, &format!("acc_{}", i % 1000), SECRET)
            })
            .collect(),
    );
    let a = addr.clone();
    let phase = load::closed_loop(
        &addr,
        server.pid(),
        connections,
        Duration::from_secs(seconds),
        move |i| events.get(i).map(|e| load::webhook_request(&a, e)),
    )
    .await;
    let (db, _dir) = server.stop();
    let stored = count_stored(&db).await;
    (phase.rate(), stored == phase.ok)
}
