//! The copy-store tests' helpers: running `copy-store`, servers on a manual clock with the
//! simulator, the SQLite history every test moves and what it answered before the move, and
//! the tables PostgreSQL holds.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use fintoc_refresh::clock::{Clock, ManualClock};
use fintoc_refresh::domain::Target;
use fintoc_refresh::pb;
use fintoc_refresh::simulator::{LinkSpec, Outcome, SimConfig, Simulator};
use fintoc_refresh::store::LogBounds;
use tonic::Code;
use tonic_types::StatusExt;

pub const DAY: Duration = Duration::from_secs(24 * 3600);

/// How one run of the binary ended.
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `copy-store --from <from> --to <to>` (off the async workers: it takes a while).
pub async fn copy_store(from: &Path, to: &str) -> Ran {
    let (from, to) = (from.to_owned(), to.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        crate::binary::command()
            .arg("copy-store")
            .arg("--from")
            .arg(&from)
            .args(["--to", &to])
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// The password in the test database's URL (its role's), which must never be printed.
pub fn password(pg: &PgDb) -> String {
    let url = reqwest::Url::parse(&pg.url).unwrap();
    let password = url.password().expect("the test's role has a password");
    assert!(password.len() >= 16, "long enough not to appear by chance");
    password.to_owned()
}

/// The test database's URL as every message must show it.
pub fn redacted(pg: &PgDb) -> String {
    let mut url = reqwest::Url::parse(&pg.url).unwrap();
    url.set_password(Some("***")).unwrap();
    url.to_string()
}

pub fn sim_config() -> SimConfig {
    let mut c = SimConfig::new(API_KEY);
    c.delivery_delay = Duration::ZERO;
    c.mfa_delay = Duration::ZERO;
    c
}

/// A server on `pg` (a fresh SQLite file without) with a simulator of its own, on `clock`.
pub async fn server(clock: &(Clock, Arc<ManualClock>), pg: Option<Arc<PgDb>>) -> TestServer {
    TestServer::with(Options {
        simulator: Some(sim_config()),
        ..options(clock, pg)
    })
    .await
}

/// The same, calling `fintoc` (which outlives it) as its Fintoc.
pub async fn server_calling(
    clock: &(Clock, Arc<ManualClock>),
    pg: Option<Arc<PgDb>>,
    fintoc: &Simulator,
) -> TestServer {
    TestServer::with(Options {
        fintoc_url: Some(fintoc.url()),
        ..options(clock, pg)
    })
    .await
}

pub fn options(clock: &(Clock, Arc<ManualClock>), pg: Option<Arc<PgDb>>) -> Options {
    Options {
        pg,
        clock: Some(clock.clone()),
        tune: Some(Box::new(|c| c.fintoc_backoff = Duration::from_millis(10))),
        ..Options::default()
    }
}

pub async fn request_refresh(
    server: &TestServer,
    token: &str,
    key: &str,
) -> Result<pb::RequestRefreshResponse, tonic::Status> {
    server
        .client()
        .await
        .request_refresh(pb::RequestRefreshRequest {
            link_token: token.into(),
            refresh_type: pb::RefreshType::OnlyLast.into(),
            idempotency_key: key.into(),
            keep_link_token: false,
        })
        .await
        .map(|r| r.into_inner())
}

pub async fn post_ok(server: &TestServer, id: &str, account: &str) -> serde_json::Value {
    let (status, reply) = server
        .post_event(&event(id, account, "succeeded", server.clock.now_ms()))
        .await;
    assert_eq!(status, 200, "{reply}");
    serde_json::from_str(&reply).unwrap()
}

/// A WatchRefresh that must fail: its code, message and `oldest_sequence`.
pub async fn watch_error(
    server: &TestServer,
    target: pb::watch_refresh_request::Target,
    after: u64,
) -> (Code, String, String) {
    let err = server
        .client()
        .await
        .watch_refresh(pb::WatchRefreshRequest {
            target: Some(target),
            after_sequence: Some(after),
            ..Default::default()
        })
        .await
        .expect_err("must fail");
    let info = err.get_details_error_info().expect("ErrorInfo");
    (
        err.code(),
        err.message().to_owned(),
        info.metadata["oldest_sequence"].clone(),
    )
}

/// What the SQLite server answered before the move, to hold the PostgreSQL one to.
pub struct Before {
    pub link_token: String,
    pub intent: String,
    pub targets: Vec<Target>,
    pub replays: Vec<Vec<fintoc_refresh::domain::ResultRow>>,
    pub bounds: LogBounds,
    pub counts: fintoc_refresh::store::Counts,
    pub intents: Vec<pb::GetRefreshResponse>,
    pub expired: (Code, String, String),
}

/// The log every test moves: 1..3 (acc_old) pruned by retention; 4, 5 from a refresh of a
/// two-account Link through Fintoc asked with idempotency key `key-1`; 6, 7 for acc_x; and
/// `ri_pending`, still waiting for acc_pending. The SQLite server is left running.
pub async fn sqlite_history(clock: &(Clock, Arc<ManualClock>)) -> (TestServer, Before) {
    let server = server(clock, None).await;
    for i in 1..=3 {
        post_ok(&server, &format!("evt_old_{i}"), "acc_old").await;
    }
    server.clock.advance(8 * DAY);
    let sim = server.sim.as_ref().unwrap();
    let ok = |n| Outcome::Succeed { new_movements: n };
    let link = sim.add_link(LinkSpec::new(vec![ok(1), ok(2)]));
    let answer = request_refresh(&server, &link.token, "key-1")
        .await
        .unwrap();
    let intent = answer.refresh_intent.unwrap().id;
    let mut feed = server.watch(intent_target(&intent), None).await;
    while !matches!(feed.next_event().await, Seen::Completed { .. }) {}
    server
        .create_intent("ri_pending", "link_pending", &["acc_pending"])
        .await;
    post_ok(&server, "evt_new_1", "acc_x").await;
    post_ok(&server, "evt_new_2", "acc_x").await;
    fintoc_refresh::tasks::prune(&server.app).await.unwrap();
    let bounds = server.app.store.log_bounds().await.unwrap();
    assert_eq!(
        bounds,
        LogBounds {
            newest: 7,
            oldest: 4
        },
        "the history as planned"
    );

    let mut targets = vec![
        Target::Account("acc_old".into()),
        Target::Account("acc_x".into()),
        Target::Account("acc_pending".into()),
        Target::Link(link.link_id.clone()),
        Target::Link("link_pending".into()),
        Target::Intent(intent.clone()),
        Target::Intent("ri_pending".into()),
    ];
    targets.extend(link.account_ids.iter().cloned().map(Target::Account));
    let mut replays = Vec::new();
    for target in &targets {
        replays.push(
            server
                .app
                .store
                .results_after(target.clone(), 0, 1000)
                .await
                .unwrap()
                .rows,
        );
    }
    assert_eq!(
        replays[5].len(),
        2,
        "the refresh's two results: {replays:?}"
    );
    let intents = vec![
        server.get_refresh(&intent).await,
        server.get_refresh("ri_pending").await,
    ];
    let before = Before {
        link_token: link.token.clone(),
        intent,
        targets,
        replays,
        bounds,
        counts: server.counts().await,
        intents,
        expired: watch_error(&server, account_target("acc_x"), 1).await,
    };
    assert_eq!(before.expired.0, Code::OutOfRange);
    (server, before)
}

/// The tables `copy-store` fills, in the order it fills them.
const COPIED: [&str; 8] = [
    "links",
    "accounts",
    "refresh_intents",
    "intent_accounts",
    "idempotency_keys",
    "fintoc_key_series",
    "results",
    "webhook_events",
];

/// The names PostgreSQL knows of our tables, and each one's rows (the log's counter as its
/// `newest`).
pub async fn pg_tables(pg: &PgDb) -> Vec<(String, i64)> {
    let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut found = Vec::new();
    for table in COPIED {
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_name = $1)",
                &[&table],
            )
            .await
            .unwrap()
            .get(0);
        if exists {
            let n: i64 = client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap()
                .get(0);
            found.push((table.to_owned(), n));
        }
    }
    if !found.is_empty() {
        let newest: i64 = client
            .query_one("SELECT newest FROM log_counter", &[])
            .await
            .unwrap()
            .get(0);
        found.push(("log_counter".to_owned(), newest));
    }
    found
}

pub fn empty_tables() -> Vec<(String, i64)> {
    COPIED
        .iter()
        .chain(&["log_counter"])
        .map(|t| (t.to_string(), 0))
        .collect()
}
