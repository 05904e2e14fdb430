//! `serve` configuration: every flag with its env var and documented default, parsed into a
//! validated [`Config`]. Secrets come only from the environment (a flag would show in `ps`)
//! and live in [`Secret`]s, so no `{:?}` or `--help` can print them. TLS certificates and
//! keys are read and checked here, at start, so a bad file stops the process with one line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches};

mod duration;

pub use duration::{format_duration, parse_duration};

use std::sync::Arc;

use crate::clock::Clock;
use crate::custody::LinkTokenKeys;
use crate::secret::Secret;
use crate::tls::{self, GrpcTls, Setting, TlsIdentity};

/// The smallest `--sqlite-wal-limit-bytes`: the WAL restarts at half the limit, and one group
/// commit's frames must fit in the other half.
pub const MIN_SQLITE_WAL_LIMIT: u64 = 1 << 20;

const GRPC_TLS_CERT: Setting = Setting {
    flag: "--grpc-tls-cert",
    env: "GRPC_TLS_CERT",
};
const GRPC_TLS_KEY: Setting = Setting {
    flag: "--grpc-tls-key",
    env: "GRPC_TLS_KEY",
};
const GRPC_CLIENT_CA: Setting = Setting {
    flag: "--grpc-client-ca",
    env: "GRPC_CLIENT_CA",
};
const HTTP_TLS_CERT: Setting = Setting {
    flag: "--http-tls-cert",
    env: "HTTP_TLS_CERT",
};
const HTTP_TLS_KEY: Setting = Setting {
    flag: "--http-tls-key",
    env: "HTTP_TLS_KEY",
};
/// The shortest `--retention` that keeps two promises. Fintoc redelivers a webhook it
/// believes failed with exponential backoff from 3 s, 17 times: 3 s × (2^17 − 1) ≈ 4.55 days
/// after the first attempt. A raw event pruned before then would be taken for a new one
/// when it comes again, and pushed twice. And an intent must outlive the idempotency keys
/// that point at it (honoured 48 h, `domain::policy::KEY_TTL`) and the `Idempotency-Key`s
/// sent to Fintoc for it (24 h). Five days covers both.
pub const MIN_RETENTION: Duration = Duration::from_secs(5 * 86_400);
/// The shortest `--max-stream-age` accepted.
pub const MIN_STREAM_AGE: Duration = Duration::from_secs(1);

/// Shorter tokens are refused: a static token is only as strong as it is long and random.
const MIN_TOKEN_LEN: usize = 16;

/// Whether a `--database-url` selects PostgreSQL (any other value is a SQLite path).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Flags of `fintoc-refresh serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the gRPC API (port 0 picks a free port).
    #[arg(long, env = "GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,
    /// Address of the HTTP side: webhook intake, /healthz, /readyz, /metrics.
    #[arg(long, env = "HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// SQLite database file, created and migrated on start; or a postgres:// (postgresql://)
    /// URL, which several replicas may share.
    #[arg(long, env = "DATABASE_URL", default_value = "fintoc-refresh.db")]
    pub database_url: String,
    /// PostgreSQL only: a direct (or session-pooled) connection to the same database, for
    /// what a transaction pooler behind --database-url cannot carry: the log's listener, the
    /// writer, migrations. Prefer the environment variable: a password in a flag shows in ps.
    #[arg(long, env = "DATABASE_DIRECT_URL")]
    pub database_direct_url: Option<String>,
    /// PostgreSQL only: connections this replica keeps in its pool for reads and short
    /// writes (RPCs, watchers' catch-up, leases); the writer and the log's listener have a
    /// connection each besides.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: u32,
    /// Fintoc's API base URL (ignored with --simulate).
    #[arg(long, env = "FINTOC_API_URL", default_value = "https://api.fintoc.com")]
    pub fintoc_api_url: String,
    /// Run an embedded Fintoc simulator and point the service at it: no credentials needed.
    #[arg(long)]
    pub simulate: bool,
    /// Heartbeat period on idle watch streams.
    #[arg(long, env = "HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// A watch stream ends after about this long (each ±10 %) with a heartbeat and
    /// UNAVAILABLE, and gRPC connections are recycled as old: clients resume with their
    /// cursor and spread over the replicas after a deploy or a scale-up.
    #[arg(long, env = "MAX_STREAM_AGE", default_value = "30m", value_parser = parse_duration)]
    pub max_stream_age: Duration,
    /// Reconcile a pending intent through Fintoc's events endpoint this long after creation.
    #[arg(long, env = "RECONCILE_AFTER", default_value = "5m", value_parser = parse_duration)]
    pub reconcile_after: Duration,
    /// Give up on missing accounts (TIMED_OUT) this long after creation.
    #[arg(long, env = "REFRESH_TIMEOUT", default_value = "30m", value_parser = parse_duration)]
    pub refresh_timeout: Duration,
    /// How long a Link is held back after its credentials were rejected.
    #[arg(long, env = "REJECTED_HOLD", default_value = "1h", value_parser = parse_duration)]
    pub rejected_hold: Duration,
    /// How long results and raw events are kept; at least 5d: Fintoc redelivers a webhook for
    /// ~4.5 days, and a pruned event id would be taken as new (pushed twice).
    #[arg(long, env = "RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub retention: Duration,
    /// How long a kept Link token is kept after a caller last gave it (keep_link_token,
    /// RegisterLink); then it is dropped and that Link's movements are no longer fetched.
    #[arg(long, env = "LINK_TOKEN_RETENTION", default_value = "30d", value_parser = parse_duration)]
    pub link_token_retention: Duration,
    /// Largest webhook body accepted (bytes); larger ones get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1_048_576)]
    pub max_body_bytes: usize,
    /// SQLite only: the WAL file is kept below this many bytes under any sustained load (at
    /// least 1 MiB). Larger lets bursts pass with fewer pauses of the writer.
    #[arg(long, env = "SQLITE_WAL_LIMIT_BYTES", default_value_t = 67_108_864)]
    pub sqlite_wal_limit_bytes: u64,
    /// Time allowed for a graceful shutdown on SIGTERM/SIGINT.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
    /// On shutdown, how long to keep serving while reporting NOT_SERVING (readiness and gRPC
    /// health) before closing, so load balancers move traffic first. Part of the grace.
    #[arg(long, env = "DRAIN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub drain_delay: Duration,
    /// Results one watcher may have queued before it must catch up from the database.
    #[arg(long, env = "WATCH_BUFFER", default_value_t = 256)]
    pub watch_buffer: usize,
    /// Concurrent HTTP/2 streams (watchers, calls) one client connection may open.
    #[arg(long, env = "MAX_CONCURRENT_STREAMS", default_value_t = 1024)]
    pub max_concurrent_streams: u32,
    /// Open WatchRefresh streams allowed at once over all connections; more get
    /// RESOURCE_EXHAUSTED. Bounds what watchers can make the server hold.
    #[arg(long, env = "MAX_WATCH_STREAMS", default_value_t = 20_000)]
    pub max_watch_streams: usize,
    /// Longest a unary call or a webhook request may take (webhooks get 408 after it); also
    /// RequestRefresh's budget for Fintoc when the caller sets no deadline.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Log format on stderr: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// PEM certificate chain for the gRPC port: serve TLS (with --grpc-tls-key).
    #[arg(long, env = "GRPC_TLS_CERT")]
    pub grpc_tls_cert: Option<PathBuf>,
    /// PEM private key of --grpc-tls-cert.
    #[arg(long, env = "GRPC_TLS_KEY")]
    pub grpc_tls_key: Option<PathBuf>,
    /// PEM CA certificate(s): require gRPC clients to present a certificate it signed (mutual
    /// TLS; needs --grpc-tls-cert).
    #[arg(long, env = "GRPC_CLIENT_CA")]
    pub grpc_client_ca: Option<PathBuf>,
    /// PEM certificate chain for the HTTP port: serve the intake over HTTPS (with
    /// --http-tls-key).
    #[arg(long, env = "HTTP_TLS_CERT")]
    pub http_tls_cert: Option<PathBuf>,
    /// PEM private key of --http-tls-cert.
    #[arg(long, env = "HTTP_TLS_KEY")]
    pub http_tls_key: Option<PathBuf>,
}

/// The validated settings `serve` runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    /// PostgreSQL: a direct connection for the listener, the writer and migrations when
    /// `database_url` leads to a transaction pooler.
    pub database_direct_url: Option<String>,
    /// PostgreSQL: the size of the replica's connection pool.
    pub database_pool_size: u32,
    pub fintoc_api_url: String,
    pub fintoc_secret_key: Secret,
    pub webhook_secrets: Vec<Secret>,
    pub heartbeat_interval: Duration,
    /// How long a watch stream lives (each ±10 %) before it ends resumable.
    pub max_stream_age: Duration,
    pub reconcile_after: Duration,
    pub refresh_timeout: Duration,
    pub rejected_hold: Duration,
    pub retention: Duration,
    /// The keys that seal kept Link tokens (`LINK_TOKEN_KEYS`); `None`: movements are off.
    pub link_token_keys: Option<Arc<LinkTokenKeys>>,
    /// The keys were generated for this run (`serve --simulate` without LINK_TOKEN_KEYS):
    /// tokens sealed with them cannot be opened after a restart.
    pub link_token_keys_demo: bool,
    pub link_token_retention: Duration,
    pub max_body_bytes: usize,
    /// The SQLite WAL file stays below this size (the store restarts the WAL well before).
    pub sqlite_wal_limit_bytes: u64,
    pub shutdown_grace: Duration,
    pub drain_delay: Duration,
    pub watch_buffer: usize,
    pub max_concurrent_streams: u32,
    pub max_watch_streams: usize,
    pub request_timeout: Duration,
    /// First retry delay for Fintoc calls (doubled each retry, plus jitter). Fintoc asks for
    /// 1 s; tests shorten it.
    pub fintoc_backoff: Duration,
    /// Where "now" comes from (tests inject a manual clock).
    pub clock: Clock,
    /// TLS (and, with a client CA, mutual TLS) on the gRPC port; None serves plaintext.
    pub grpc_tls: Option<GrpcTls>,
    /// TLS on the HTTP port (intake, health, metrics); None serves plain HTTP.
    pub http_tls: Option<TlsIdentity>,
    /// RefreshService calls must carry one of these as `authorization: Bearer …`; empty turns
    /// the check off. Several allow rotation.
    pub grpc_bearer_tokens: Vec<Secret>,
}

impl Config {
    /// The documented defaults (those of `serve --help`, read from the flags' own
    /// definitions, never from the environment), with the given database and Fintoc URL and
    /// no secrets: for tests and embedding.
    pub fn new(database_url: impl Into<String>, fintoc_api_url: impl Into<String>) -> Config {
        let command = ServeArgs::augment_args(clap::Command::new("serve"))
            .mut_args(|arg| arg.env(None::<&str>));
        // --simulate only so that no secret is required; it leaves no trace in a Config.
        let matches = command
            .try_get_matches_from(["serve", "--simulate"])
            .expect("the defaults parse");
        let args = ServeArgs::from_arg_matches(&matches).expect("the defaults parse");
        let mut config = args.into_config(|_| None).expect("the defaults are valid");
        config.database_url = database_url.into();
        config.fintoc_api_url = fintoc_api_url.into();
        // No demo key either: movements are on only where a test gives keys.
        config.link_token_keys = None;
        config.link_token_keys_demo = false;
        config
    }

    /// Whether a caller must prove who it is: a client certificate or a bearer token.
    pub fn grpc_callers_authenticated(&self) -> bool {
        let mutual_tls = self
            .grpc_tls
            .as_ref()
            .is_some_and(|t| t.client_ca_pem.is_some());
        mutual_tls || !self.grpc_bearer_tokens.is_empty()
    }
}

/// The warning `serve` logs when the gRPC API is reachable beyond this host without
/// protection. Not a refusal: a private network or a sidecar may be protection enough, but
/// the operator should have decided that.
pub fn exposure_warning(grpc_addr: SocketAddr, config: &Config) -> Option<String> {
    if grpc_addr.ip().is_loopback() {
        return None;
    }
    if !config.grpc_callers_authenticated() {
        return Some(format!(
            "the gRPC API on {grpc_addr} accepts calls from anyone who can reach it: set \
             GRPC_BEARER_TOKENS, or --grpc-client-ca with --grpc-tls-cert/--grpc-tls-key \
             (README, \"Securing it\")"
        ));
    }
    if config.grpc_tls.is_none() {
        return Some(format!(
            "the gRPC API on {grpc_addr} takes bearer tokens over plaintext: anyone on the \
             path can read and replay them; set --grpc-tls-cert/--grpc-tls-key"
        ));
    }
    None
}

/// A setting that cannot work, named so the operator knows what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl ServeArgs {
    /// Validates the flags and reads the secrets from `env` (the process environment in
    /// `main`; a map in tests). With `--simulate` the secrets are optional: the simulator
    /// brings its own.
    pub fn into_config(self, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let secret_key = env("FINTOC_SECRET_KEY").filter(|s| !s.trim().is_empty());
        let webhook_secrets: Vec<Secret> = env("FINTOC_WEBHOOK_SECRET")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Secret::new)
            .collect();
        if !self.simulate {
            if secret_key.is_none() {
                return Err(ConfigError(
                    "FINTOC_SECRET_KEY is not set: it is required unless --simulate is given"
                        .into(),
                ));
            }
            if webhook_secrets.is_empty() {
                return Err(ConfigError(
                    "FINTOC_WEBHOOK_SECRET is not set: it is required unless --simulate is given \
                     (comma-separated for rotation)"
                        .into(),
                ));
            }
            let url = reqwest::Url::parse(&self.fintoc_api_url).map_err(|e| {
                ConfigError(format!(
                    "--fintoc-api-url (FINTOC_API_URL) {:?} is not a URL: {e}",
                    self.fintoc_api_url
                ))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError(format!(
                    "--fintoc-api-url (FINTOC_API_URL) must be http or https, not {:?}",
                    url.scheme()
                )));
            }
        }
        if self.database_url.trim().is_empty() {
            return Err(ConfigError("--database-url (DATABASE_URL) is empty".into()));
        }
        for (name, value) in [
            (
                "--heartbeat-interval (HEARTBEAT_INTERVAL)",
                self.heartbeat_interval,
            ),
            ("--refresh-timeout (REFRESH_TIMEOUT)", self.refresh_timeout),
            ("--retention (RETENTION)", self.retention),
            ("--request-timeout (REQUEST_TIMEOUT)", self.request_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError(format!("{name} must be greater than zero")));
            }
        }
        if self.max_stream_age < MIN_STREAM_AGE {
            return Err(ConfigError(format!(
                "--max-stream-age (MAX_STREAM_AGE) must be at least {}: streams that end \
                 sooner spend their life reconnecting",
                format_duration(MIN_STREAM_AGE)
            )));
        }
        if self.reconcile_after >= self.refresh_timeout {
            return Err(ConfigError(format!(
                "--reconcile-after ({}) must be shorter than --refresh-timeout ({}): \
                 reconciliation has to happen before results time out",
                format_duration(self.reconcile_after),
                format_duration(self.refresh_timeout)
            )));
        }
        if self.retention < MIN_RETENTION {
            return Err(ConfigError(format!(
                "--retention (RETENTION) is {}; it must be at least {}: Fintoc redelivers a webhook \
                 for about 4.5 days, and an event pruned before then would be pushed twice",
                format_duration(self.retention),
                format_duration(MIN_RETENTION)
            )));
        }
        if self.retention <= self.refresh_timeout {
            return Err(ConfigError(
                "--retention must be longer than --refresh-timeout, or pending intents lose their results".into(),
            ));
        }
        if self.drain_delay >= self.shutdown_grace && !self.drain_delay.is_zero() {
            return Err(ConfigError(format!(
                "--drain-delay ({}) must be shorter than --shutdown-grace ({}): the drain is part \
                 of the grace",
                format_duration(self.drain_delay),
                format_duration(self.shutdown_grace)
            )));
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError(
                "--max-body-bytes (MAX_BODY_BYTES) must be at least 1".into(),
            ));
        }
        if self.sqlite_wal_limit_bytes < MIN_SQLITE_WAL_LIMIT {
            return Err(ConfigError(format!(
                "--sqlite-wal-limit-bytes (SQLITE_WAL_LIMIT_BYTES) is {}; it must be at least \
                 {MIN_SQLITE_WAL_LIMIT} (1 MiB), room for the WAL to restart below half of it",
                self.sqlite_wal_limit_bytes
            )));
        }
        if let Some(direct) = &self.database_direct_url
            && !(is_postgres_url(direct) && is_postgres_url(&self.database_url))
        {
            return Err(ConfigError(
                "--database-direct-url (DATABASE_DIRECT_URL) must be a postgres:// URL, and \
                 goes with a postgres:// --database-url (DATABASE_URL)"
                    .into(),
            ));
        }
        if !(1..=1000).contains(&self.database_pool_size) {
            return Err(ConfigError(format!(
                "--database-pool-size (DATABASE_POOL_SIZE) is {}; it must be between 1 and 1000",
                self.database_pool_size
            )));
        }
        if self.watch_buffer == 0 {
            return Err(ConfigError(
                "--watch-buffer (WATCH_BUFFER) must be at least 1".into(),
            ));
        }
        if self.max_watch_streams == 0 || self.max_concurrent_streams == 0 {
            return Err(ConfigError(
                "--max-watch-streams (MAX_WATCH_STREAMS) and --max-concurrent-streams \
                 (MAX_CONCURRENT_STREAMS) must be at least 1"
                    .into(),
            ));
        }
        // Movements (CONTRACT.md §7): on with LINK_TOKEN_KEYS; `--simulate` shows them out of
        // the box with a key generated for the run (serve warns that it is a demo key).
        let (link_token_keys, link_token_keys_demo) = match env("LINK_TOKEN_KEYS") {
            Some(raw) => (
                Some(Arc::new(LinkTokenKeys::parse(&raw).map_err(ConfigError)?)),
                false,
            ),
            None if self.simulate => (Some(Arc::new(LinkTokenKeys::demo().0)), true),
            None => (None, false),
        };
        if self.link_token_retention.is_zero() {
            return Err(ConfigError(
                "--link-token-retention (LINK_TOKEN_RETENTION) must be longer than zero".into(),
            ));
        }
        let grpc_bearer_tokens = match env("GRPC_BEARER_TOKENS") {
            Some(raw) => bearer_tokens(&raw)?,
            None => Vec::new(),
        };
        if self.grpc_client_ca.is_some()
            && self.grpc_tls_cert.is_none()
            && self.grpc_tls_key.is_none()
        {
            return Err(ConfigError(format!(
                "{GRPC_CLIENT_CA} needs {} and {}: client certificates are checked in a TLS \
                 handshake",
                GRPC_TLS_CERT.flag, GRPC_TLS_KEY.flag
            )));
        }
        let grpc_identity = tls::load_pair(
            (GRPC_TLS_CERT, self.grpc_tls_cert.as_deref()),
            (GRPC_TLS_KEY, self.grpc_tls_key.as_deref()),
        )
        .map_err(ConfigError)?;
        let grpc_tls = match grpc_identity {
            Some(identity) => Some(GrpcTls {
                identity,
                client_ca_pem: match &self.grpc_client_ca {
                    Some(path) => Some(tls::load_ca(GRPC_CLIENT_CA, path).map_err(ConfigError)?),
                    None => None,
                },
            }),
            None => None,
        };
        let http_tls = tls::load_pair(
            (HTTP_TLS_CERT, self.http_tls_cert.as_deref()),
            (HTTP_TLS_KEY, self.http_tls_key.as_deref()),
        )
        .map_err(ConfigError)?;
        Ok(Config {
            database_url: self.database_url,
            database_direct_url: self.database_direct_url,
            database_pool_size: self.database_pool_size,
            fintoc_api_url: self.fintoc_api_url,
            fintoc_secret_key: Secret::new(secret_key.unwrap_or_default()),
            webhook_secrets,
            heartbeat_interval: self.heartbeat_interval,
            max_stream_age: self.max_stream_age,
            reconcile_after: self.reconcile_after,
            refresh_timeout: self.refresh_timeout,
            rejected_hold: self.rejected_hold,
            retention: self.retention,
            link_token_keys,
            link_token_keys_demo,
            link_token_retention: self.link_token_retention,
            max_body_bytes: self.max_body_bytes,
            sqlite_wal_limit_bytes: self.sqlite_wal_limit_bytes,
            shutdown_grace: self.shutdown_grace,
            drain_delay: self.drain_delay,
            watch_buffer: self.watch_buffer,
            max_concurrent_streams: self.max_concurrent_streams,
            max_watch_streams: self.max_watch_streams,
            request_timeout: self.request_timeout,
            fintoc_backoff: Duration::from_secs(1),
            clock: Clock::System,
            grpc_tls,
            http_tls,
            grpc_bearer_tokens,
        })
    }
}

/// `GRPC_BEARER_TOKENS`: comma-separated, so a new token can be added before the old one is
/// retired. Set but empty is refused rather than read as "off": an operator who set it meant
/// to require a token (an unmounted secret must not open the API). Messages count tokens and
/// never quote them.
fn bearer_tokens(raw: &str) -> Result<Vec<Secret>, ConfigError> {
    let tokens: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.is_empty() {
        return Err(ConfigError(
            "GRPC_BEARER_TOKENS is set but holds no token: unset it to turn the token check off"
                .into(),
        ));
    }
    for (i, token) in tokens.iter().enumerate() {
        let n = i + 1;
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError(format!(
                "GRPC_BEARER_TOKENS: token #{n} holds a character that cannot travel in a gRPC \
                 header (use visible ASCII, no spaces)"
            )));
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(ConfigError(format!(
                "GRPC_BEARER_TOKENS: token #{n} is shorter than {MIN_TOKEN_LEN} characters; use \
                 a long random one (e.g. openssl rand -hex 32)"
            )));
        }
    }
    Ok(tokens.into_iter().map(Secret::new).collect())
}

#[cfg(test)]
mod tests;
