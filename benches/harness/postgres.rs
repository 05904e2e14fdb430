//! PostgreSQL: the intake of one and of two replicas sharing a database, against what the
//! same PostgreSQL does with one ~500-byte INSERT per transaction from 64 clients (pgbench,
//! in the same run, alternated with the intake phases); the push latency from a webhook on
//! replica A to a watcher on replica B; and a replica's memory per idle stream.
//!
//! The server is `BENCH_POSTGRES_URL` (else `TEST_POSTGRES_URL`, else the local one); each
//! run makes fresh databases and drops them.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_postgres::NoTls;

use crate::Mode;
use crate::latency::Shape;
use crate::load::{self, Phase, Prepared};
use crate::server::{SECRET, Server};
use crate::stats::median;

fn admin_url() -> String {
    std::env::var("BENCH_POSTGRES_URL")
        .or_else(|_| std::env::var("TEST_POSTGRES_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of the run's own, dropped at the end.
pub struct Database {
    pub url: String,
    name: String,
}

impl Database {
    pub async fn create(name: &str) -> Database {
        let admin = admin().await;
        // Two statements: DROP/CREATE DATABASE cannot share a (implicit) transaction.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .expect("drop a leftover bench database");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the bench database");
        let mut url = reqwest::Url::parse(&admin_url()).unwrap();
        url.set_path(name);
        Database {
            url: url.to_string(),
            name: name.to_owned(),
        }
    }

    pub async fn drop_now(self) {
        let _ = admin()
            .await
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await;
    }
}

async fn admin() -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(&admin_url(), NoTls)
        .await
        .unwrap_or_else(|e| panic!("the PostgreSQL section needs {}: {e}", admin_url()));
    tokio::spawn(connection);
    client
}

/// pgbench's transactions per second for one INSERT of a unique ~500-byte row per
/// transaction into a table shaped like the log (a unique key, an index), 64 clients.
fn pgbench(db: &Database, seconds: u64) -> f64 {
    let script = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        script.path(),
        "INSERT INTO raw_events (event_key, account, body) \
         VALUES (md5(random()::text || clock_timestamp()::text), 'acc_' || (random() * 1000)::int, \
         repeat('x', 450));\n",
    )
    .unwrap();
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-c",
            "64",
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            "-f",
        ])
        .arg(script.path())
        .arg(&db.url)
        .output()
        .expect("pgbench (it comes with PostgreSQL) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "pgbench said: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// One closed-loop intake phase on every replica at once, `per_replica` connections each.
pub async fn intake_phase(
    replicas: &[&Server],
    per_replica: usize,
    phase: Duration,
    tag: &str,
) -> Phase {
    let count = (40_000.0 * phase.as_secs_f64()) as usize;
    let mut runs = Vec::new();
    for (r, server) in replicas.iter().enumerate() {
        let events: Arc<Vec<Prepared>> = Arc::new(
            (0..count)
                .map(|i| {
                    load::prepare_event(
                        &format!("evt_{tag}_{r}_{i}"),
                        &format!("acc_{}", i % 1000),
                        SECRET,
                    )
                })
                .collect(),
        );
        let (addr, pid) = (server.http.clone(), server.pid());
        runs.push(tokio::spawn(async move {
            let a = addr.clone();
            load::closed_loop(&addr, pid, per_replica, phase, move |i| {
                events.get(i).map(|e| load::webhook_request(&a, e))
            })
            .await
        }));
    }
    let mut total = Phase {
        ok: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        client_cpu: 0.0,
        server_cpu: 0.0,
    };
    for run in runs {
        let p = run.await.unwrap();
        total.ok += p.ok;
        total.failed += p.failed;
        total.elapsed = total.elapsed.max(p.elapsed);
        total.server_cpu += p.server_cpu;
        total.client_cpu = total.client_cpu.max(p.client_cpu);
    }
    total
}

pub async fn run(mode: &Mode) -> Value {
    let phase = Duration::from_secs(if mode.quick { 2 } else { 5 });
    let rounds = if mode.quick { 1 } else { 3 };
    let connections = mode.connections;
    println!(
        "\n## PostgreSQL ({connections} connections, {} s phases, A=pgbench one INSERT per transaction, B=1 replica, C=2 replicas, ×{rounds})",
        phase.as_secs()
    );
    let raw = Database::create("fintoc_refresh_bench_raw").await;
    admin_raw(&raw).await;
    let one = Database::create("fintoc_refresh_bench_one").await;
    let two = Database::create("fintoc_refresh_bench_two").await;
    let single = Server::start_on(Some(&one.url), &[]);
    let (a, b) = (
        Server::start_on(Some(&two.url), &[]),
        Server::start_on(Some(&two.url), &[]),
    );
    // The same intake with another build of the binary, in the same run, alternated.
    let baseline_bin = std::env::var("BENCH_BASELINE_BIN").ok();
    let baseline_db = match &baseline_bin {
        Some(_) => Some(Database::create("fintoc_refresh_bench_baseline").await),
        None => None,
    };
    // Two replicas of it on one database: the intake goes to the first, the push latency
    // from the first to a watcher on the second.
    let baseline = baseline_bin
        .as_deref()
        .zip(baseline_db.as_ref())
        .map(|(bin, db)| {
            (
                Server::start_binary(bin, Some(&db.url), &[]),
                Server::start_binary(bin, Some(&db.url), &[]),
            )
        });
    let mut baseline_rates = Vec::new();
    let (mut base, mut one_rates, mut two_rates) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let tps = pgbench(&raw, phase.as_secs());
        println!("  A{round} pgbench        {tps:>8.0} tx/s");
        base.push(tps);
        let p1 = intake_phase(&[&single], connections, phase, &format!("o{round}")).await;
        println!(
            "  B{round} 1 replica      {:>8.0}/s  ok={} failed={}",
            p1.rate(),
            p1.ok,
            p1.failed
        );
        one_rates.push(p1.rate());
        if let Some((baseline, _)) = &baseline {
            let p = intake_phase(&[baseline], connections, phase, &format!("b{round}")).await;
            println!(
                "  B'{round} 1 replica, baseline build {:>8.0}/s  ok={} failed={}",
                p.rate(),
                p.ok,
                p.failed
            );
            baseline_rates.push(p.rate());
        }
        let p2 = intake_phase(&[&a, &b], connections / 2, phase, &format!("t{round}")).await;
        println!(
            "  C{round} 2 replicas     {:>8.0}/s  ok={} failed={}",
            p2.rate(),
            p2.ok,
            p2.failed
        );
        two_rates.push(p2.rate());
    }
    let (base, one_rate, two_rate) = (
        median(&mut base),
        median(&mut one_rates),
        median(&mut two_rates),
    );
    let metrics = load::scrape(&single.http).await;
    let commits = load::sample(&metrics, "fintoc_refresh_commit_batch_size_count");
    let per_commit =
        load::sample(&metrics, "fintoc_refresh_commit_batch_size_sum") / commits.max(1.0);
    let commit_ms =
        1000.0 * load::sample(&metrics, "fintoc_refresh_commit_seconds_sum") / commits.max(1.0);
    println!("| measure | median |");
    println!("|---|---|");
    println!("| pgbench, one INSERT per transaction, 64 clients | {base:.0} tx/s |");
    println!(
        "| intake, 1 replica | {one_rate:.0} events/s (**{:.2}×** the baseline; target ≥ 1.5×) |",
        one_rate / base
    );
    println!(
        "| intake, 2 replicas | {two_rate:.0} events/s ({:.2}× the baseline) |",
        two_rate / base
    );
    println!(
        "| group commits (1 replica) | {per_commit:.1} events and {commit_ms:.2} ms each (mean) |"
    );
    let baseline_rate = (!baseline_rates.is_empty()).then(|| median(&mut baseline_rates));
    if let Some(rate) = baseline_rate {
        println!(
            "| intake, 1 replica, baseline build (BENCH_BASELINE_BIN) | {rate:.0} events/s (this build: **{:.2}×** it) |",
            one_rate / rate
        );
    }

    println!("\n### Cross-replica push latency (webhook into A → watcher on B)");
    println!("| watchers | shape | delivered | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    let seconds = if mode.quick { 2 } else { 5 };
    let spread = crate::latency::measure(&a, &b, 100, 100, Shape::Spread, seconds).await;
    let one_watcher = crate::latency::measure(&a, &b, 101, 1, Shape::Spread, seconds).await;

    let baseline_spread = match &baseline {
        Some((into, on)) => {
            println!("(baseline build)");
            Some(crate::latency::measure(into, on, 102, 100, Shape::Spread, seconds).await)
        }
        None => None,
    };

    println!("\n### Idle streams on a PostgreSQL replica");
    let streams = crate::streams::measure(&b).await;
    if let Some((into, on)) = baseline {
        into.stop();
        on.stop();
    }
    if let Some(db) = baseline_db {
        db.drop_now().await;
    }
    single.stop();
    a.stop();
    b.stop();
    for db in [raw, one, two] {
        db.drop_now().await;
    }
    json!({
        "pgbench_tps": base.round(),
        "intake_1_replica": one_rate.round(),
        "intake_2_replicas": two_rate.round(),
        "ratio_1_replica": (one_rate / base * 100.0).round() / 100.0,
        "ratio_2_replicas": (two_rate / base * 100.0).round() / 100.0,
        "events_per_commit": (per_commit * 10.0).round() / 10.0,
        "cross_replica_latency": [one_watcher, spread],
        "intake_1_replica_baseline_build": baseline_rate.map(f64::round),
        "cross_replica_latency_baseline_build": baseline_spread,
        "streams": streams,
    })
}

/// The baseline's table: a unique key, an account index and a body, like the log.
async fn admin_raw(db: &Database) {
    let (client, connection) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE raw_events (id BIGSERIAL PRIMARY KEY, event_key TEXT NOT NULL UNIQUE, \
             account TEXT NOT NULL, body TEXT NOT NULL); \
             CREATE INDEX raw_events_account ON raw_events (account, id);",
        )
        .await
        .unwrap();
}
