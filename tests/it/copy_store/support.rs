//! The copy-store tests' helpers: running `copy-store`, servers on a manual clock with the
//! simulator, the SQLite history every test moves and what it answered before the move, the
//! movements rows (sealed tokens, movements, fetch jobs) written behind a server's back, and
//! the tables PostgreSQL holds.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use fintoc_refresh::clock::{Clock, ManualClock};
use fintoc_refresh::custody::LinkTokenKeys;
use fintoc_refresh::domain::Target;
use fintoc_refresh::pb;
use fintoc_refresh::secret::Secret;
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
const COPIED: [&str; 11] = [
    "links",
    "link_tokens",
    "accounts",
    "movements",
    "refresh_intents",
    "intent_accounts",
    "idempotency_keys",
    "fintoc_key_series",
    "results",
    "fetch_jobs",
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

/// A sealed Link token as both databases store it.
pub type TokenRow = (String, String, Vec<u8>, Vec<u8>, i64);
/// A movement: account, movement id, Link, post date, body.
pub type MovementRow = (String, String, String, String, String);
/// A fetch job: result sequence, account, Link, event, new movements, occurred at, attempts,
/// due at, lease owner, lease until.
pub type JobRow = (i64, String, String, String, i64, i64, i32, i64, String, i64);

/// The keys the movements tests' servers hold (LINK_TOKEN_KEYS): `k1` seals, `k2` opens
/// what an earlier key sealed.
const KEYS: &str = "k1:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=,\
                    k2:ZWZnaGlqa2xtbm9wcXJzdHV2d3h5ent8fX5/gIGCg4Q=";

pub fn link_token_keys() -> LinkTokenKeys {
    LinkTokenKeys::parse(KEYS).unwrap()
}

/// [`options`] for a server holding [`link_token_keys`], as a store with sealed tokens needs.
pub fn keyed_options(clock: &(Clock, Arc<ManualClock>), pg: Option<Arc<PgDb>>) -> Options {
    Options {
        tune: Some(Box::new(|c| {
            c.fintoc_backoff = Duration::from_millis(10);
            c.link_token_keys = Some(Arc::new(link_token_keys()));
        })),
        ..options(clock, pg)
    }
}

/// What the movements feature leaves in a store besides the log, written behind a server's
/// back (it would need Fintoc, a kept token and a fetch to write them itself): tokens
/// really sealed (one under each key), movements, and fetch jobs, one leased by a SQLite
/// process. Jobs fall due only a year on, so no server claims them while a test looks.
pub struct MovementsSeed {
    /// Each Link and the token sealed for it.
    pub plain: Vec<(String, String)>,
    pub tokens: Vec<TokenRow>,
    pub movements: Vec<MovementRow>,
    pub jobs: Vec<JobRow>,
}

impl MovementsSeed {
    pub fn new(now: i64) -> MovementsSeed {
        let year = 365 * DAY.as_millis() as i64;
        let by_k2 = LinkTokenKeys::parse(KEYS.split(',').nth(1).unwrap()).unwrap();
        let plain = vec![
            ("link_a".to_owned(), "link_a_token_sec".to_owned()),
            ("link_b".to_owned(), "link_b_token_sec".to_owned()),
        ];
        let tokens = plain
            .iter()
            .zip([(link_token_keys(), now - 5), (by_k2, now)])
            .map(|((link, token), (keys, given))| {
                let sealed = keys.seal(link, &Secret::new(token.clone()));
                (
                    link.clone(),
                    sealed.key_id,
                    sealed.nonce,
                    sealed.ciphertext,
                    given,
                )
            })
            .collect();
        MovementsSeed {
            plain,
            tokens,
            movements: vec![
                movement(
                    "acc_mv",
                    "mov_1",
                    "link_a",
                    "2026-11-30",
                    r#"{"amount":-1500,"description":"Café 'ñandú'"}"#,
                ),
                movement(
                    "acc_mv",
                    "mov_2",
                    "link_a",
                    "2026-12-01",
                    r#"{"amount":2500}"#,
                ),
                movement(
                    "acc_other",
                    "mov_1",
                    "link_b",
                    "2026-12-01",
                    r#"{"amount":1}"#,
                ),
            ],
            jobs: vec![
                (
                    1,
                    "acc_mv".into(),
                    "link_a".into(),
                    "evt_1".into(),
                    2,
                    now - 10,
                    3,
                    now + year,
                    "replica-sqlite-7".into(),
                    now + 30_000,
                ),
                (
                    9,
                    "acc_other".into(),
                    "link_b".into(),
                    "evt_9".into(),
                    0,
                    now - 20,
                    0,
                    now + year,
                    String::new(),
                    0,
                ),
            ],
        }
    }

    /// The seed as SQLite statements (blobs as hex literals).
    pub fn sql(&self) -> String {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let text = |t: &str| t.replace('\'', "''");
        let mut sql = String::new();
        for (link, key, nonce, sealed, given) in &self.tokens {
            sql += &format!(
                "INSERT INTO link_tokens (link_id, key_id, nonce, ciphertext, given_at_ms) \
                 VALUES ('{link}', '{key}', X'{}', X'{}', {given});",
                hex(nonce),
                hex(sealed)
            );
        }
        for (account, id, link, date, body) in &self.movements {
            sql += &format!(
                "INSERT INTO movements (account_id, movement_id, link_id, post_date, body) \
                 VALUES ('{account}', '{id}', '{link}', '{date}', '{}');",
                text(body)
            );
        }
        for (seq, account, link, event, new, at, attempts, due, owner, until) in &self.jobs {
            sql += &format!(
                "INSERT INTO fetch_jobs (result_sequence, account_id, link_id, event_id, \
                 new_movements, occurred_at_ms, attempts, due_at_ms, lease_owner, \
                 lease_until_ms) VALUES ({seq}, '{account}', '{link}', '{event}', {new}, {at}, \
                 {attempts}, {due}, '{owner}', {until});"
            );
        }
        sql
    }

    /// The jobs as they must arrive: the same, but unleased.
    pub fn jobs_unleased(&self) -> Vec<JobRow> {
        self.jobs
            .iter()
            .cloned()
            .map(|mut job| {
                (job.8, job.9) = (String::new(), 0);
                job
            })
            .collect()
    }
}

fn movement(account: &str, id: &str, link: &str, date: &str, body: &str) -> MovementRow {
    (
        account.into(),
        id.into(),
        link.into(),
        date.into(),
        body.into(),
    )
}

/// A log entry written behind the server's back: `status` with `detail` for `account`.
pub fn entry_sql(account: &str, event: &str, status: &str, detail: &str, at: i64) -> String {
    format!(
        "INSERT INTO results (account_id, link_id, refresh_intent_id, status, new_movements, \
         public_error, event_id, occurred_at_ms, committed_at_ms, detail) \
         VALUES ('{account}', 'link_a', '', '{status}', 0, '', '{event}', {at}, {at}, '{}');",
        detail.replace('\'', "''")
    )
}

/// The rows of the movements tables in PostgreSQL, each in its key's order, and the log's
/// entries as stored (sequence, status, detail, fetches_movements).
#[allow(clippy::type_complexity)]
pub async fn pg_movements_rows(
    pg: &PgDb,
) -> (
    Vec<TokenRow>,
    Vec<MovementRow>,
    Vec<JobRow>,
    Vec<(i64, String, String, bool)>,
) {
    let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let rows = async |sql: &str| client.query(sql, &[]).await.unwrap();
    let tokens = rows(
        "SELECT link_id, key_id, nonce, ciphertext, given_at_ms FROM link_tokens \
         ORDER BY link_id",
    )
    .await
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect();
    let movements = rows(
        "SELECT account_id, movement_id, link_id, post_date, body FROM movements \
         ORDER BY account_id, movement_id",
    )
    .await
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
    .collect();
    let jobs = rows(
        "SELECT result_sequence, account_id, link_id, event_id, new_movements, \
         occurred_at_ms, attempts, due_at_ms, lease_owner, lease_until_ms FROM fetch_jobs \
         ORDER BY result_sequence",
    )
    .await
    .iter()
    .map(|r| {
        (
            r.get(0),
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
            r.get(6),
            r.get(7),
            r.get(8),
            r.get(9),
        )
    })
    .collect();
    let log =
        rows("SELECT sequence, status, detail, fetches_movements FROM results ORDER BY sequence")
            .await
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect();
    (tokens, movements, jobs, log)
}
