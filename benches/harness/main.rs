//! The benchmark harness: `cargo bench --bench harness` (full, a few minutes) or
//! `cargo bench --bench harness -- --quick` (under a minute). `--only <section>` runs one
//! section; `--connections N` changes the intake's concurrency (default 64).
//!
//! It starts the real server (the release binary, real sockets, a SQLite file on disk with the
//! production durability setting) as a child process and measures, in one run:
//! - intake throughput: unique signed events over HTTP/1.1 keep-alive from 64 connections,
//!   against the same server's `GET /healthz` under the same client, alternated A B A B;
//! - the writer alone: the intake's storage job without HTTP, the store's own ceiling;
//! - push latency: webhook sent → `account_result` received, at a steady 1,000 events/s;
//! - watch streams: server RSS with 0 and 10,000 idle streams, and one event's fan-out time;
//! - stalled watchers: the intake's rate and the server's RSS with 1,000 streams never read;
//! - RequestRefresh: overhead over the simulator's own latency, and local answers;
//! - the SQLite WAL: sustained intake with watchers reconnecting, the WAL's size over time and
//!   the intake's rate and p99 with the WAL bounded (as shipped) and with its limit out of reach;
//! - PostgreSQL: the intake of one and two replicas against pgbench's one INSERT per
//!   transaction, cross-replica push latency, memory per idle stream on a replica (and the
//!   same intake with another build, `BENCH_BASELINE_BIN`, alternated);
//! - PostgreSQL behind PgBouncer in transaction mode: intake and reads against a direct
//!   connection;
//! - feeds: push latency to selection and `all` streams against single-target streams,
//!   memory per idle selection/`all` stream; link state (`--only links`): GetLink against
//!   GetRefresh, ListLinks of 10,000 Links (SQLite and PostgreSQL);
//! - movements (`--only movements`): a burst of 1,000 accounts' scheduled refreshes on a
//!   server with `LINK_TOKEN_KEYS`, movements pushed/s end to end against the same burst's
//!   results on a server without movements, Fintoc calls per event, and the latency a
//!   result's movements add over the simulator's own listing time;
//! - before/after: the SQLite intake and push latency of another build (`BENCH_BASELINE_BIN`)
//!   and this one, alternated (`--only baseline`; skipped, and said so, without it).
//!
//! Goals are ratios and figures printed here, never assertions in tests. Results end with one
//! machine-readable line starting `BENCH_JSON `.

mod baseline;
#[path = "../../tests/support/binary.rs"]
mod binary;
mod feeds;
mod intake;
mod latency;
mod load;
mod movements;
#[path = "../../tests/support/pgbouncer.rs"]
mod pgbouncer;
mod pooler;
mod postgres;
mod refresh;
mod server;
mod stalled;
mod stats;
mod streams;
mod wal;
mod writer;

use std::time::Instant;

use serde_json::json;

pub struct Mode {
    pub quick: bool,
    /// Concurrent senders for the intake and writer sections (`--connections N`, default 64).
    pub connections: usize,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    // `--only intake|writer|latency|streams|stalled|refresh|wal|postgres|pooler|feeds|links|movements|baseline`
    // runs one section.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let connections = args
        .iter()
        .position(|a| a == "--connections")
        .and_then(|i| args.get(i + 1))
        .map(|n| n.parse().expect("--connections takes a number"))
        .unwrap_or(64);
    let mode = Mode { quick, connections };
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    runtime.block_on(async {
        println!(
            "fintoc-refresh benchmark ({})",
            if quick { "quick" } else { "full" }
        );
        println!("{}", server::describe_machine());
        let skipped = || serde_json::Value::Null;
        let intake = if wanted("intake") {
            intake::run(&mode).await
        } else {
            skipped()
        };
        let writer = if wanted("writer") {
            writer::run(&mode).await
        } else {
            skipped()
        };
        let latency = if wanted("latency") {
            latency::run(&mode).await
        } else {
            skipped()
        };
        let streams = if wanted("streams") {
            streams::run(&mode).await
        } else {
            skipped()
        };
        let stalled = if wanted("stalled") {
            stalled::run(&mode).await
        } else {
            skipped()
        };
        let refresh = if wanted("refresh") {
            refresh::run(&mode).await
        } else {
            skipped()
        };
        let wal = if wanted("wal") {
            wal::run(&mode).await
        } else {
            skipped()
        };
        let postgres = if wanted("postgres") {
            postgres::run(&mode).await
        } else {
            skipped()
        };
        let pooler = if wanted("pooler") {
            pooler::run(&mode).await
        } else {
            skipped()
        };
        let feeds = if wanted("feeds") {
            feeds::run(&mode).await
        } else {
            skipped()
        };
        let links = if wanted("links") {
            feeds::links(&mode).await
        } else {
            skipped()
        };
        let movements = if wanted("movements") {
            movements::run(&mode).await
        } else {
            skipped()
        };
        let baseline = if wanted("baseline") {
            baseline::run(&mode).await
        } else {
            skipped()
        };
        println!("\ntotal time {:.0}s", started.elapsed().as_secs_f64());
        let summary = json!({
            "mode": if quick { "quick" } else { "full" },
            "intake": intake,
            "writer": writer,
            "push_latency": latency,
            "watch_streams": streams,
            "stalled_watchers": stalled,
            "request_refresh": refresh,
            "sqlite_wal": wal,
            "postgres": postgres,
            "postgres_behind_pgbouncer": pooler,
            "feeds": feeds,
            "link_state": links,
            "movements": movements,
            "before_after": baseline,
        });
        println!("BENCH_JSON {summary}");
    });
}
