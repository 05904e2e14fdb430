//! The writer alone: the same ingest job the webhook handler submits, from as many concurrent
//! submitters as the intake has connections (64), in this process, on a SQLite file with the production durability setting. No
//! HTTP, no signature check: this is the ceiling the store puts on the intake, and the place
//! to A/B a storage change without the network's noise.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use fintoc_refresh::domain::ResultRow;
use fintoc_refresh::fintoc::event::decode;
use fintoc_refresh::metrics::Metrics;
use fintoc_refresh::store::Store;

use crate::Mode;
use crate::load::{self, Prepared};
use crate::server::SECRET;
use crate::stats::median;

pub async fn run(mode: &Mode) -> Value {
    let submitters = mode.connections;
    let phase = Duration::from_secs(if mode.quick { 2 } else { 4 });
    let rounds = 3;
    println!(
        "\n## Writer alone ({submitters} concurrent ingest jobs, no HTTP, {} s ×{rounds})",
        phase.as_secs()
    );
    let dir = tempfile::Builder::new()
        .prefix("bench-writer-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("temp dir");
    let url = dir.path().join("writer.db").to_string_lossy().into_owned();
    let metrics = Arc::new(Metrics::new());
    let store = Store::open(
        // serve's defaults
        &fintoc_refresh::config::Config::new(url.as_str(), ""),
        metrics.clone(),
        Arc::new(|_: &[Arc<ResultRow>]| {}),
    )
    .await
    .expect("open the store");
    let mut rates = Vec::new();
    let mut total = 0usize;
    for round in 0..rounds {
        let count = (120_000.0 * phase.as_secs_f64()) as usize;
        let events: Arc<Vec<Prepared>> = Arc::new(
            (0..count)
                .map(|i| {
                    load::prepare_event(
                        &format!("evt_w{round}_{i}"),
                        &format!("acc_{}", i % 1000),
                        SECRET,
                    )
                })
                .collect(),
        );
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let deadline = started + phase;
        let tasks: Vec<_> = (0..submitters)
            .map(|_| {
                let (store, events, next) = (store.clone(), events.clone(), next.clone());
                tokio::spawn(async move {
                    let mut done = 0usize;
                    while Instant::now() < deadline {
                        let Some(event) = events.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        let body = event.body.clone();
                        let decoded = decode(&body);
                        store
                            .ingest_webhook(body, decoded, 0)
                            .await
                            .expect("ingest");
                        done += 1;
                    }
                    done
                })
            })
            .collect();
        let mut done = 0;
        for t in tasks {
            done += t.await.unwrap();
        }
        let rate = done as f64 / started.elapsed().as_secs_f64();
        println!("  round {round}: {rate:>8.0} events/s");
        total += done;
        rates.push(rate);
    }
    let text = metrics.render(0);
    let commits = load::sample(&text, "fintoc_refresh_commit_batch_size_count");
    let per_commit = load::sample(&text, "fintoc_refresh_commit_batch_size_sum") / commits.max(1.0);
    let commit_ms =
        1000.0 * load::sample(&text, "fintoc_refresh_commit_seconds_sum") / commits.max(1.0);
    store.close().await;
    let rate = median(&mut rates);
    println!("| measure | median |");
    println!("|---|---|");
    println!("| writer alone | {rate:.0} events/s |");
    println!(
        "| group commits | {commits:.0}: {per_commit:.1} events and {commit_ms:.2} ms each (mean) |"
    );
    json!({"submitters": submitters, "events_per_s": rate.round(), "events": total,
        "events_per_commit": (per_commit * 10.0).round() / 10.0,
        "commit_ms": (commit_ms * 100.0).round() / 100.0})
}
