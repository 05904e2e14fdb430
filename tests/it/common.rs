//! The end-to-end harness: a real server (the same `serve` path as `main`) on port-0
//! listeners with a fresh store (a SQLite file, or a PostgreSQL database), a real tonic
//! client, real HTTP, a manual clock, and optionally the Fintoc simulator on its own port.
//! [`on_both_backends!`] turns one test into one per backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fintoc_refresh::Listeners;
use fintoc_refresh::app::App;
use fintoc_refresh::clock::{Clock, ManualClock};
use fintoc_refresh::config::Config;
use fintoc_refresh::domain::NewIntent;
use fintoc_refresh::domain::RefreshType;
use fintoc_refresh::fintoc::signature;
use fintoc_refresh::pb::refresh_service_client::RefreshServiceClient;
use fintoc_refresh::pb::{self, watch_refresh_request::Target, watch_refresh_response::Event};
use fintoc_refresh::secret::Secret;
use fintoc_refresh::server;
use fintoc_refresh::simulator::{SimConfig, Simulator};
use fintoc_refresh::store;
use fintoc_refresh::tls::{GrpcTls, TlsIdentity};

pub use crate::pg::PgDb;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub const SECRET: &str = "whsec_test_secret_for_e2e";
pub const API_KEY: &str = "sk_test_e2e_key";
/// 2027-01-15T00:00:00Z: every test starts at the same instant.
pub const START_MS: i64 = 1_800_000_000_000;
/// Upper bound on waiting for something that should happen at once: a broken test fails
/// instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Runs one test on both backends: `on_both_backends!(name);` above
/// `async fn name(backend: Backend) { … }` makes a module `name` holding two tests, `sqlite`
/// and `postgres`, that call `name` with their backend (so the tests are `…::name::sqlite`
/// and `…::name::postgres`). The test attribute is `#[tokio::test]` unless given, as in
/// `on_both_backends!(#[tokio::test(flavor = "multi_thread")] name);`. One body for both
/// stores, not two copies that drift apart; and the body stays an ordinary function that
/// rustfmt keeps formatted.
macro_rules! on_both_backends {
    ($name:ident) => {
        on_both_backends!(#[tokio::test] $name);
    };
    ($(#[$attr:meta])* $name:ident) => {
        mod $name {
            $(#[$attr])*
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }

            $(#[$attr])*
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    };
}

/// A last adjustment of the server's config.
pub type Tune = Box<dyn FnOnce(&mut Config) + Send>;

/// Which store a test server runs on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Backend {
    /// A fresh SQLite file in a temp dir (the embedded default).
    #[default]
    Sqlite,
    /// A fresh PostgreSQL database (see `pg.rs`).
    Postgres,
}

/// How to start a test server: the documented defaults (`Config::new`) unless a field, or
/// `tune`, says otherwise.
#[derive(Default)]
pub struct Options {
    pub backend: Backend,
    /// An existing SQLite file (instead of a fresh one).
    pub db: Option<std::path::PathBuf>,
    /// An existing PostgreSQL database (instead of a fresh one).
    pub pg: Option<std::sync::Arc<PgDb>>,
    pub simulator: Option<SimConfig>,
    pub fintoc_url: Option<String>,
    pub clock: Option<(Clock, Arc<ManualClock>)>,
    pub tune: Option<Tune>,
    /// TLS (mutual with a client CA) on the gRPC port; [`TestServer::client`] stays
    /// plaintext, so TLS tests build their own endpoints.
    pub grpc_tls: Option<GrpcTls>,
    /// HTTPS on the intake: `post`/`get` (and the simulator's deliveries) switch to https.
    pub http_tls: Option<TlsIdentity>,
    /// CA certificate (PEM) the harness's HTTP client trusts, for an HTTPS intake.
    pub http_trust: Option<String>,
    /// GRPC_BEARER_TOKENS.
    pub bearer_tokens: Vec<String>,
}

pub struct TestServer {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub app: Arc<App>,
    pub clock: Arc<ManualClock>,
    pub sim: Option<Simulator>,
    pub db_path: std::path::PathBuf,
    /// The PostgreSQL database, when the server runs on one.
    pub pg: Option<std::sync::Arc<PgDb>>,
    /// `http://` or `https://` and the intake's address.
    pub http_base: String,
    _dir: Option<tempfile::TempDir>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    http_client: reqwest::Client,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::with(Options::default()).await
    }

    /// A server with the documented defaults on `backend`.
    pub async fn on(backend: Backend) -> TestServer {
        Self::with(Options {
            backend,
            ..Options::default()
        })
        .await
    }

    pub async fn with(mut opts: Options) -> TestServer {
        let (dir, db_path) = match opts.db.take() {
            Some(path) => (None, path),
            None => {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("test.db");
                (Some(dir), path)
            }
        };
        let (clock, hand) = opts.clock.take().unwrap_or_else(|| Clock::manual(START_MS));
        let grpc = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (grpc_addr, http_addr) = (grpc.local_addr().unwrap(), http.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let https = opts.http_tls.is_some();
        let http_base = format!("{}://{http_addr}", if https { "https" } else { "http" });
        let sim = match opts.simulator.take() {
            Some(mut sim_config) => {
                sim_config.webhooks = vec![(format!("{http_base}/webhooks/fintoc"), SECRET.into())];
                // As `serve --simulate` does: its own intake, over loopback.
                sim_config.insecure_webhook_tls = https;
                sim_config.clock = clock.clone();
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                Some(Simulator::start(listener, sim_config, shutdown.clone()).unwrap())
            }
            None => None,
        };
        let fintoc_url = opts
            .fintoc_url
            .take()
            .or_else(|| sim.as_ref().map(Simulator::url))
            .unwrap_or_else(|| "http://127.0.0.1:9".into());
        // A database of its own has nobody else to lead its background work.
        let lead_at_once = opts.backend == Backend::Postgres && opts.pg.is_none();
        let pg = match (opts.backend, opts.pg.take()) {
            (_, Some(pg)) => Some(pg),
            (Backend::Postgres, None) => Some(std::sync::Arc::new(PgDb::create().await)),
            (Backend::Sqlite, None) => None,
        };
        let database_url = match &pg {
            Some(pg) => pg.url.clone(),
            None => db_path.to_string_lossy().into_owned(),
        };
        let mut config = Config::new(database_url, fintoc_url);
        config.fintoc_secret_key = Secret::new(API_KEY);
        config.webhook_secrets = vec![Secret::new(SECRET)];
        config.shutdown_grace = Duration::from_secs(5);
        config.clock = clock;
        config.grpc_tls = opts.grpc_tls.take();
        config.http_tls = opts.http_tls.take();
        config.grpc_bearer_tokens = opts.bearer_tokens.iter().map(Secret::new).collect();
        if let Some(tune) = opts.tune.take() {
            tune(&mut config);
        }
        let app = App::start(config).await.unwrap();
        let task = tokio::spawn(server::run(
            app.clone(),
            Listeners { grpc, http },
            shutdown.clone(),
        ));
        let mut http_client = reqwest::Client::builder();
        if let Some(ca) = opts.http_trust.take() {
            http_client = http_client
                .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
        }
        let server = TestServer {
            grpc: grpc_addr,
            http: http_addr,
            app,
            clock: hand,
            sim,
            db_path,
            pg,
            http_base,
            _dir: dir,
            shutdown,
            task: Some(task),
            http_client: http_client.build().unwrap(),
        };
        if lead_at_once {
            server.until_leading().await;
        }
        server
    }

    /// Waits (at most [`PATIENCE`]) until this server runs the background work
    /// (reconciliation, timeouts, retention): at once on SQLite; on PostgreSQL once its store
    /// holds the leader lock, which its task tries for every second. A clock tick that comes
    /// before is skipped, so a test that drives that work by moving the clock must wait for
    /// it first; [`TestServer::with`] does for a fresh PostgreSQL database.
    pub async fn until_leading(&self) {
        eventually("the server leads the background work", || async {
            self.app.store.leads()
        })
        .await;
    }

    pub async fn client(&self) -> RefreshServiceClient<Channel> {
        RefreshServiceClient::connect(format!("http://{}", self.grpc))
            .await
            .unwrap()
    }

    /// Stops the server (graceful shutdown) and returns how it ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let task = self.task.take().unwrap();
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("shutdown took too long")
            .unwrap()
    }

    /// Waits, without asking it to stop, for the server to stop on its own, and returns
    /// how it ended.
    pub async fn ended(mut self) -> anyhow::Result<()> {
        let task = self.task.take().unwrap();
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("the server did not stop on its own")
            .unwrap()
    }

    /// The token whose cancellation starts the server's shutdown.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Waits (at most [`PATIENCE`]) until everything committed has reached this server's hub,
    /// so a feed opened "from now" starts after it: at once on SQLite, which publishes before
    /// it answers; on PostgreSQL the log tail hands entries over just after their commit (a
    /// feed opened before that starts earlier and delivers them, which loses nothing).
    pub async fn until_published(&self) {
        eventually("the hub has every committed entry", || async {
            let newest = self.app.store.log_bounds().await.unwrap().newest;
            self.app.hub.high_water() >= newest
        })
        .await;
    }

    /// Runs `sql` (statements separated by `;`) on the server's database behind its back,
    /// over a connection of its own: for tests that need rows the service itself would not
    /// write.
    pub async fn run_sql(&self, sql: &str) {
        match &self.pg {
            None => {
                use diesel::Connection;
                use diesel::connection::SimpleConnection;
                diesel::sqlite::SqliteConnection::establish(&self.db_path.to_string_lossy())
                    .unwrap()
                    .batch_execute(sql)
                    .unwrap();
            }
            Some(pg) => {
                let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                client.batch_execute(sql).await.unwrap();
            }
        }
    }

    /// Stops the server and hands back its store (the SQLite file, with the temp dir holding
    /// it, or the PostgreSQL database), to start another server on it.
    pub async fn stop_keep_store(mut self) -> KeptStore {
        let backend = if self.pg.is_some() {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let (dir, path, pg) = (self._dir.take(), self.db_path.clone(), self.pg.take());
        self.stop().await.unwrap();
        KeptStore {
            backend,
            path,
            pg,
            _dir: dir,
        }
    }

    /// Stops the server and hands back the temp dir so the same file can be reopened.
    pub async fn stop_keep_db(mut self) -> (Option<tempfile::TempDir>, std::path::PathBuf) {
        let dir = self._dir.take();
        let path = self.db_path.clone();
        self.stop().await.unwrap();
        (dir, path)
    }

    pub fn now_secs(&self) -> i64 {
        self.clock.now_ms() / 1000
    }

    /// POSTs `body` signed now with the test secret.
    pub async fn post_event(&self, body: &str) -> (u16, String) {
        let header = signature::header(SECRET, self.now_secs(), body.as_bytes());
        self.post(body, Some(header)).await
    }

    pub async fn post(&self, body: &str, signature: Option<String>) -> (u16, String) {
        let mut request = self
            .http_client
            .post(format!("{}/webhooks/fintoc", self.http_base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(sig) = signature {
            request = request.header("Fintoc-Signature", sig);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .http_client
            .get(format!("{}{path}", self.http_base))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    pub async fn counts(&self) -> store::Counts {
        self.app.store.counts().await.unwrap()
    }

    /// Registers an intent directly through the store (as if Fintoc had created it).
    pub async fn create_intent(&self, id: &str, link: &str, accounts: &[&str]) {
        let new = NewIntent {
            id: id.into(),
            link_id: link.into(),
            refresh_type: RefreshType::OnlyLast,
            accounts: accounts.iter().map(|a| a.to_string()).collect(),
            created_at_ms: self.clock.now_ms(),
            mfa_widget_token: String::new(),
        };
        self.app.store.register_intent(new, None).await.unwrap();
    }

    /// GetRefresh of `id`; panics on an error status.
    pub async fn get_refresh(&self, id: &str) -> pb::GetRefreshResponse {
        self.client()
            .await
            .get_refresh(pb::GetRefreshRequest {
                refresh_intent_id: id.into(),
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn watch(&self, target: Target, after: Option<u64>) -> Watch {
        Watch::over(self.client().await, target, after).await
    }
}

/// A stopped server's store, kept for the next one (see [`TestServer::stop_keep_store`]).
pub struct KeptStore {
    pub backend: Backend,
    path: std::path::PathBuf,
    pg: Option<std::sync::Arc<PgDb>>,
    _dir: Option<tempfile::TempDir>,
}

impl KeptStore {
    /// Options that start a server on this store (keep `self` until that server is done).
    pub fn options(&self) -> Options {
        Options {
            backend: self.backend,
            db: Some(self.path.clone()),
            pg: self.pg.clone(),
            ..Options::default()
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A Fintoc account event body, as Fintoc serializes it.
pub fn event(id: &str, account: &str, status: &str, created_at_ms: i64) -> String {
    event_with_error(id, account, status, created_at_ms, None)
}

/// The same with a `public_error` (a long one makes a big message).
pub fn event_with_error(
    id: &str,
    account: &str,
    status: &str,
    created_at_ms: i64,
    error: Option<&str>,
) -> String {
    let at = fintoc_refresh::clock::format_rfc3339_ms(created_at_ms);
    let error = error.map_or("null".to_owned(), |e| format!("\"{e}\""));
    format!(
        r#"{{"id":"{id}","type":"account.refresh_intent.{status}","mode":"test","created_at":"{at}","data":{{"object":"refresh_intent","refreshed_object":"account","refreshed_object_id":"{account}","status":"{status}","public_error":{error},"created_at":"{at}","type":"only_last","new_movements":2}},"object":"event"}}"#
    )
}

pub fn intent_target(id: &str) -> Target {
    Target::RefreshIntentId(id.into())
}
pub fn link_target(id: &str) -> Target {
    Target::LinkId(id.into())
}
pub fn account_target(id: &str) -> Target {
    Target::AccountId(id.into())
}
/// A feed of these Links' and accounts' results.
pub fn selection_target(links: &[&str], accounts: &[&str]) -> Target {
    Target::Selection(pb::Selection {
        link_ids: links.iter().map(|s| s.to_string()).collect(),
        account_ids: accounts.iter().map(|s| s.to_string()).collect(),
        all: false,
    })
}
/// A feed of every result.
pub fn all_target() -> Target {
    Target::Selection(pb::Selection {
        all: true,
        ..Default::default()
    })
}

/// A watch stream with timeouts on every read.
pub struct Watch {
    pub stream: tonic::Streaming<pb::WatchRefreshResponse>,
}

/// What a test sees of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Result {
        seq: u64,
        account: String,
        intent: String,
        event: String,
        status: pb::RefreshStatus,
    },
    Completed {
        seq: u64,
        status: pb::RefreshStatus,
    },
    Heartbeat {
        seq: u64,
    },
    /// A `movements` message: ids added, modified and removed.
    Movements {
        seq: u64,
        account: String,
        event: String,
        added: Vec<String>,
        modified: Vec<String>,
        removed: Vec<String>,
        complete: bool,
    },
    Unavailable {
        seq: u64,
        account: String,
        reason: String,
    },
}

impl Seen {
    pub fn seq(&self) -> u64 {
        match self {
            Seen::Result { seq, .. }
            | Seen::Completed { seq, .. }
            | Seen::Heartbeat { seq }
            | Seen::Movements { seq, .. }
            | Seen::Unavailable { seq, .. } => *seq,
        }
    }
}

impl Watch {
    /// Opens a WatchRefresh stream through `client`.
    pub async fn over(
        mut client: RefreshServiceClient<Channel>,
        target: Target,
        after: Option<u64>,
    ) -> Watch {
        let stream = client
            .watch_refresh(pb::WatchRefreshRequest {
                target: Some(target),
                after_sequence: after,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        Watch { stream }
    }

    /// The next message; panics if none arrives within [`PATIENCE`].
    pub async fn next(&mut self) -> Seen {
        match self.try_next(PATIENCE).await {
            Some(Ok(seen)) => seen,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next message, the stream's end status, or None if nothing came within `wait`.
    pub async fn try_next(&mut self, wait: Duration) -> Option<Result<Seen, tonic::Status>> {
        match tokio::time::timeout(wait, self.stream.next()).await {
            Err(_) => None,
            Ok(None) => Some(Err(tonic::Status::ok("stream ended"))),
            Ok(Some(Err(status))) => Some(Err(status)),
            Ok(Some(Ok(msg))) => Some(Ok(seen(msg))),
        }
    }

    /// The next message that is not a heartbeat.
    pub async fn next_event(&mut self) -> Seen {
        loop {
            let seen = self.next().await;
            if !matches!(seen, Seen::Heartbeat { .. }) {
                return seen;
            }
        }
    }

    /// How the stream ended (OK or a status), skipping heartbeats.
    pub async fn end(&mut self) -> tonic::Status {
        loop {
            match self.try_next(PATIENCE).await {
                Some(Ok(Seen::Heartbeat { .. })) => continue,
                Some(Ok(other)) => panic!("expected the end, got {other:?}"),
                Some(Err(status)) => return status,
                None => panic!("the stream did not end"),
            }
        }
    }
}

fn seen(msg: pb::WatchRefreshResponse) -> Seen {
    match msg.event.expect("every message carries an event") {
        Event::AccountResult(r) => Seen::Result {
            seq: msg.sequence,
            status: r.status(),
            account: r.account_id,
            intent: r.refresh_intent_id,
            event: r.event_id,
        },
        Event::RefreshCompleted(i) => Seen::Completed {
            seq: msg.sequence,
            status: i.status(),
        },
        Event::Heartbeat(_) => Seen::Heartbeat { seq: msg.sequence },
        Event::Movements(m) => Seen::Movements {
            seq: msg.sequence,
            account: m.account_id,
            event: m.event_id,
            added: m.added.into_iter().map(|m| m.id).collect(),
            modified: m.modified.into_iter().map(|m| m.id).collect(),
            removed: m.removed_ids,
            complete: m.complete,
        },
        Event::MovementsUnavailable(u) => Seen::Unavailable {
            seq: msg.sequence,
            account: u.account_id,
            reason: u.reason,
        },
    }
}

/// `GET /metrics` of the server whose HTTP port is `addr`, as text.
pub async fn metrics_text(http: &reqwest::Client, addr: impl std::fmt::Display) -> String {
    http.get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one sample (`name{labels} value`, the name with its labels) in a Prometheus
/// text exposition; 0 when it is absent.
pub fn sample(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64)
}

/// Polls `check` until it is true (real async work is happening in the server); fails
/// after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
