//! Feeds over many Links (`--only feeds`, and `--only links` for the last item), each figure
//! against a baseline measured in the same run:
//! - push latency at 1,000 events/s to 100 streams of 1,000-id selections against 100
//!   single-account streams (each event reaches one watcher either way), and to 100 `all`
//!   streams against 100 streams of one shared account (each event reaches all 100 either
//!   way), the shapes alternated over rounds, medians of the rounds' p99;
//! - memory per idle stream: single-account, `all`, and 1,000-id selections (each with ids of
//!   its own, the worst case for the hub's index), each on a fresh server;
//! - GetLink against GetRefresh (p50 of back-to-back calls, alternated), and ListLinks of
//!   10,000 Links in pages of 500, on a store seeded with 10,000 Links of two accounts each,
//!   on SQLite and on PostgreSQL.
//!
//! A single-account stream costs the hub what a single-Link stream does (one lookup per
//! entry); the harness's webhooks name accounts, so its baseline streams follow accounts.

use std::time::{Duration, Instant};

use diesel::Connection;
use diesel::connection::SimpleConnection;
use serde_json::{Value, json};
use tokio_stream::StreamExt;

use fintoc_refresh::pb::refresh_service_client::RefreshServiceClient;
use fintoc_refresh::pb::watch_refresh_request::Target;
use fintoc_refresh::pb::{self};

use crate::Mode;
use crate::latency::{self, Shape};
use crate::load;
use crate::postgres::Database;
use crate::server::Server;
use crate::stats::{median, ms, percentile};

const WATCHERS: usize = 100;
const LINKS: usize = 10_000;
const PAGE: u32 = 500;

pub async fn run(mode: &Mode) -> Value {
    let (seconds, rounds) = if mode.quick { (2, 1) } else { (4, 3) };
    println!(
        "\n## Feeds: push latency ({WATCHERS} streams per shape, 1,000 events/s for {seconds} s, \
         {rounds} round(s), shapes alternated)"
    );
    println!("| watchers | shape | delivered | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    let server = Server::start(&[]);
    let shapes = [Shape::Spread, Shape::Selection, Shape::Shared, Shape::All];
    let mut p99s: Vec<Vec<f64>> = vec![Vec::new(); shapes.len()];
    let mut rows = Vec::new();
    for round in 0..rounds {
        for (i, &shape) in shapes.iter().enumerate() {
            let run = 200 + 10 * round + i;
            let row = latency::measure(&server, &server, run, WATCHERS, shape, seconds).await;
            p99s[i].push(row["p99_ms"].as_f64().unwrap_or(f64::NAN));
            rows.push(row);
        }
    }
    server.stop();
    let p99: Vec<f64> = p99s.iter_mut().map(|v| median(v)).collect();
    let (selection_ratio, all_ratio) = (p99[1] / p99[0], p99[3] / p99[2]);
    println!(
        "\np99, median of rounds: single {:.2} ms, selection {:.2} ms ({selection_ratio:.2}×, \
         goal ≤ 1.5×); shared {:.2} ms, all {:.2} ms ({all_ratio:.2}×, goal ≤ 1.5×)",
        p99[0], p99[1], p99[2], p99[3]
    );

    println!("\n## Feeds: memory per idle stream (server RSS before and after, fresh server each)");
    println!("| streams | target | RSS before kB | RSS after kB | per stream kB |");
    println!("|---|---|---|---|---|");
    let many = if mode.quick { 1_000 } else { 5_000 };
    let selections = if mode.quick { 100 } else { 500 };
    let single = idle_memory("single account", many, |i| {
        Target::AccountId(format!("acc_idle_{i}"))
    })
    .await;
    let all = idle_memory("all", many, |_| {
        Target::Selection(pb::Selection {
            all: true,
            ..Default::default()
        })
    })
    .await;
    let selection = idle_memory("selection of 1,000 ids", selections, |i| {
        Target::Selection(pb::Selection {
            account_ids: (0..500).map(|k| format!("acc_idle_{i}_{k}")).collect(),
            link_ids: (0..500).map(|k| format!("link_idle_{i}_{k}")).collect(),
            ..Default::default()
        })
    })
    .await;

    json!({
        "push_latency": rows,
        "p99_ms": {"single": p99[0], "selection": p99[1], "shared": p99[2], "all": p99[3]},
        "p99_ratio": {"selection_vs_single": selection_ratio, "all_vs_shared": all_ratio},
        "idle_kb_per_stream": {"single": single, "all": all, "selection_1000": selection},
    })
}

/// `--only links`: GetLink against GetRefresh, and ListLinks of `LINKS` Links, on both stores.
pub async fn links(_mode: &Mode) -> Value {
    println!("\n## Link state: GetLink against GetRefresh, ListLinks of {LINKS} Links");
    println!(
        "| store | GetRefresh p50 ms | GetLink p50 ms | ratio (goal ≤ 2×) | ListLinks, {LINKS} in pages of {PAGE} |"
    );
    println!("|---|---|---|---|---|");
    let sqlite = reads_on(None).await;
    let db = Database::create("fintoc_refresh_bench_links").await;
    let postgres = reads_on(Some(&db)).await;
    db.drop_now().await;
    json!({"sqlite": sqlite, "postgres": postgres})
}

/// The server's RSS growth per idle stream of `target(i)`, `n` of them over 20 connections.
async fn idle_memory(what: &str, n: usize, target: impl Fn(usize) -> Target) -> f64 {
    let server = Server::start(&[]);
    let channels = load::grpc_channels(&server.grpc, 20).await;
    // Warm up: one stream of the kind opened and closed, so lazily built state is in the
    // baseline.
    {
        let mut client = RefreshServiceClient::new(channels[0].clone());
        let mut s = open(&mut client, target(usize::MAX)).await;
        s.next().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = server.rss_kb();
    let mut streams = Vec::with_capacity(n);
    for i in 0..n {
        let mut client = RefreshServiceClient::new(channels[i % channels.len()].clone());
        let mut s = open(&mut client, target(i)).await;
        s.next().await.expect("opening heartbeat").expect("ok");
        streams.push(s);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = server.rss_kb();
    let per = after.saturating_sub(before) as f64 / n as f64;
    println!("| {n} | {what} | {before} | {after} | {per:.2} |");
    drop(streams);
    server.stop();
    (per * 100.0).round() / 100.0
}

async fn open(
    client: &mut RefreshServiceClient<tonic::transport::Channel>,
    target: Target,
) -> tonic::Streaming<pb::WatchRefreshResponse> {
    client
        .watch_refresh(pb::WatchRefreshRequest {
            target: Some(target),
            ..Default::default()
        })
        .await
        .expect("open a watch stream")
        .into_inner()
}

/// GetRefresh and GetLink p50 (alternated) and ListLinks' total time, on a store seeded with
/// `LINKS` Links (SQLite when `pg` is `None`).
async fn reads_on(pg: Option<&Database>) -> Value {
    // Started once so the schema is there, stopped, seeded, started again.
    let url = pg.map(|db| db.url.as_str());
    let first = Server::start_on(url, &[]);
    let (db_path, dir) = first.stop();
    seed(pg, &db_path).await;
    let server = Server::start_on(Some(&db_path.to_string_lossy()), &[]);
    let mut client =
        RefreshServiceClient::new(load::grpc_channels(&server.grpc, 1).await.remove(0));
    let (calls, rounds) = (400, 5);
    let (mut refresh, mut link) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        refresh.push(
            p50_of(calls, async || {
                client
                    .get_refresh(pb::GetRefreshRequest {
                        refresh_intent_id: "ri_bench".into(),
                    })
                    .await
                    .expect("GetRefresh");
            })
            .await,
        );
        link.push(
            p50_of(calls, async || {
                let state = client
                    .get_link(pb::GetLinkRequest {
                        link_id: "link_00001".into(),
                    })
                    .await
                    .expect("GetLink")
                    .into_inner();
                assert_eq!(state.link.unwrap().accounts.len(), 2);
            })
            .await,
        );
    }
    let (refresh, link) = (median(&mut refresh), median(&mut link));
    let mut lists = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let (mut token, mut listed) = (String::new(), 0);
        loop {
            let page = client
                .list_links(pb::ListLinksRequest {
                    page_size: PAGE,
                    page_token: token,
                })
                .await
                .expect("ListLinks")
                .into_inner();
            listed += page.links.len();
            token = page.next_page_token;
            if token.is_empty() {
                break;
            }
        }
        assert_eq!(listed, LINKS);
        lists.push(ms(started.elapsed()));
    }
    let list = median(&mut lists);
    server.stop();
    drop(dir);
    let store = if pg.is_some() { "PostgreSQL" } else { "SQLite" };
    println!(
        "| {store} | {refresh:.3} | {link:.3} | {:.2}× | {list:.0} ms |",
        link / refresh
    );
    json!({"get_refresh_p50_ms": refresh, "get_link_p50_ms": link, "ratio": link / refresh,
        "list_links_total_ms": list})
}

/// The p50 of `calls` back-to-back calls of `call`, in milliseconds.
async fn p50_of(calls: usize, mut call: impl AsyncFnMut()) -> f64 {
    let mut took = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        call().await;
        took.push(started.elapsed());
    }
    ms(percentile(&mut took, 50.0))
}

/// `LINKS` Links of two accounts each, one retained result per account (an hour old), and
/// one completed intent (`ri_bench`, Link `link_00001`) answered by the first two.
async fn seed(pg: Option<&Database>, sqlite: &std::path::Path) {
    let at = fintoc_refresh::clock::system_now_ms() - 3_600_000;
    let accounts = 2 * LINKS;
    let postgres = pg.is_some();
    // 1..=n as rows of a column `i`.
    let series = |n: usize| {
        if postgres {
            format!("generate_series(1, {n}) AS n(i)")
        } else {
            format!(
                "(WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) \
                 SELECT i FROM s) AS n"
            )
        }
    };
    // `prefix_` and `expr` in five digits.
    let name = |prefix: &str, expr: &str| {
        if postgres {
            format!("'{prefix}_' || lpad(({expr})::text, 5, '0')")
        } else {
            format!("printf('{prefix}_%05d', {expr})")
        }
    };
    let token = if postgres {
        "lpad(i::text, 64, '0')"
    } else {
        "printf('%064d', i)"
    };
    let sql = format!(
        "INSERT INTO links (link_id, token_sha256, rejected_at_ms, resolved_at_ms) \
           SELECT {link}, {token}, NULL, {at} FROM {links}; \
         INSERT INTO accounts (account_id, link_id) SELECT {account}, {link_of} FROM {all}; \
         INSERT INTO results (sequence, account_id, link_id, refresh_intent_id, status, \
           new_movements, public_error, event_id, occurred_at_ms, committed_at_ms, \
           completes_intent) \
           SELECT i, {account}, {link_of}, CASE WHEN i <= 2 THEN 'ri_bench' ELSE '' END, \
             'succeeded', 1, '', {event}, {at}, {at}, i = 2 FROM {all}; \
         INSERT INTO refresh_intents (id, link_id, refresh_type, status, mfa_widget_token, \
           created_at_ms, completed_at_ms, completed_sequence) \
           VALUES ('ri_bench', 'link_00001', 'only_last', 'succeeded', '', {at}, {at}, 2); \
         INSERT INTO intent_accounts (refresh_intent_id, account_id, result_sequence) \
           VALUES ('ri_bench', 'acc_00001', 1), ('ri_bench', 'acc_00002', 2);",
        link = name("link", "i"),
        link_of = name("link", "(i + 1) / 2"),
        account = name("acc", "i"),
        event = name("evt_seed", "i"),
        links = series(LINKS),
        all = series(accounts),
    );
    match pg {
        Some(db) => {
            let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
                .await
                .expect("connect to the bench database");
            tokio::spawn(connection);
            client
                .batch_execute(&format!(
                    "BEGIN; {sql} UPDATE log_counter SET newest = {accounts}, newest_ms = {at}; \
                     COMMIT"
                ))
                .await
                .expect("seed PostgreSQL");
        }
        None => {
            let mut conn = diesel::SqliteConnection::establish(&sqlite.to_string_lossy())
                .expect("open the bench database");
            conn.batch_execute(&format!("BEGIN; {sql} COMMIT;"))
                .expect("seed SQLite");
        }
    }
}
