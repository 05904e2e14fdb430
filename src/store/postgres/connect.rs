//! Opening connections to PostgreSQL: tokio-postgres (pure Rust) under diesel-async, TLS
//! through rustls as the URL's `ssl*` parameters ask, read as libpq reads them (`tls.rs`),
//! and the settings every connection of this service runs with. The URL is libpq's: several
//! hosts (`host1:5432,host2:5433`) and `target_session_attrs` reach tokio-postgres as given.

use std::time::Duration;

use diesel::ConnectionError;
use diesel::ConnectionResult;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use futures_util::FutureExt;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::tls;

/// A pool of connections, each opened by [`connect`].
pub(super) type Pool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

/// How long opening a connection may take, all of it (TCP, TLS, authentication), before it
/// counts as "PostgreSQL unreachable": tokio-postgres' own `connect_timeout` bounds only the
/// TCP connect, and a peer that accepts and then says nothing would hang the rest.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// TCP keepalives on every connection, unless the URL sets them: an idle connection to a
/// database that vanished (a failover, a dropped route) is noticed within about
/// `IDLE + INTERVAL × RETRIES` = 25 s instead of the kernel's two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

/// Opens one connection. It carries no session settings (a transaction pooler would hand
/// them to other clients): what a transaction needs it sets itself (`session.rs`).
pub(super) async fn connect(url: &str) -> ConnectionResult<AsyncPgConnection> {
    bounded(async {
        let (client, connection) = open(url).await?;
        AsyncPgConnection::try_from_client_and_connection(client, connection).await
    })
    .await
}

/// Opens one connection through a transaction pooler. diesel-async runs two statements of
/// its own on a new connection (`SET TIME ZONE`, `SET CLIENT_ENCODING`), each prepared under
/// a name, run and closed in three steps: outside a transaction the pooler may send each
/// step to another server session, and a name left prepared on one of them collides later
/// with a statement of another replica ("prepared statement \"s3\" already exists"). So
/// they run inside a transaction opened first, which keeps them on one server session
/// (their settings are those the pooler tracks and restores per client). The connection
/// then prepares no statement beyond its transaction (see `pool`).
async fn connect_pooled(url: &str) -> ConnectionResult<AsyncPgConnection> {
    use diesel::connection::CacheSize;
    use diesel_async::{AsyncConnection, SimpleAsyncConnection};
    bounded(async {
        let (client, connection) = open(url).await?;
        tokio::spawn(connection);
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| ConnectionError::BadConnection(describe(&e)))?;
        let mut conn = AsyncPgConnection::try_from(client).await?;
        conn.batch_execute("COMMIT")
            .await
            .map_err(ConnectionError::CouldntSetupConfiguration)?;
        conn.set_prepared_statement_cache_size(CacheSize::Disabled);
        Ok(conn)
    })
    .await
}

/// Opens one plain tokio-postgres session (no diesel), with the same settings and bounds as
/// [`connect`]: for what only the simple query protocol can ask (`pooler.rs`).
pub(super) async fn plain(url: &str) -> ConnectionResult<tokio_postgres::Client> {
    bounded(async {
        let (client, connection) = open(url).await?;
        tokio::spawn(connection);
        Ok(client)
    })
    .await
}

/// The session of `url` with this service's settings: a connect timeout, its application
/// name and TCP keepalives, unless the URL sets them.
async fn open(url: &str) -> ConnectionResult<Session> {
    let (mut config, tls) = settings(url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("fintoc-refresh");
    }
    if config.get_keepalives_interval().is_none() {
        config
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES);
    }
    config
        .connect(tls)
        .await
        .map_err(|e| ConnectionError::BadConnection(describe(&e)))
}

/// A client and the connection that drives it (to be spawned, or handed to diesel-async).
type Session = (
    tokio_postgres::Client,
    tokio_postgres::Connection<
        tokio_postgres::Socket,
        <MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>>::Stream,
    >,
);

/// `opening` unless it takes longer than [`CONNECT_TIMEOUT`].
async fn bounded<T>(opening: impl Future<Output = ConnectionResult<T>>) -> ConnectionResult<T> {
    tokio::time::timeout(CONNECT_TIMEOUT, opening)
        .await
        .unwrap_or_else(|_| {
            Err(ConnectionError::BadConnection(format!(
                "no answer from the database within {} s",
                CONNECT_TIMEOUT.as_secs()
            )))
        })
}

/// Whether `url` is a PostgreSQL URL this service can use (without connecting): `Err` says
/// what is wrong with it, never quoting a password.
pub fn check_url(url: &str) -> Result<(), String> {
    settings(url).map(|_| ()).map_err(|e| match e {
        ConnectionError::InvalidConnectionUrl(why) => why,
        other => other.to_string(),
    })
}

/// A tokio-postgres error with its reason: alone it says only what failed ("db error",
/// "error connecting to server"), and keeps why (the server's message, the refused
/// connection) in its source.
fn describe(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(why) => format!("{e}: {why}"),
        None => e.to_string(),
    }
}

/// The connection settings of `url`, and how to do TLS (see `tls.rs` for the `ssl*`
/// parameters). Every problem is `InvalidConnectionUrl`, found without connecting.
fn settings(url: &str) -> ConnectionResult<(tokio_postgres::Config, MakeRustlsConnect)> {
    let bad = ConnectionError::InvalidConnectionUrl;
    let (rest, ssl) = split(url).map_err(bad)?;
    let plan = tls::Plan::new(ssl).map_err(bad)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| bad(describe(&e)))?;
    config.ssl_mode(plan.mode);
    let tls = plan.connector().map_err(bad)?;
    Ok((config, tls))
}

/// `url` without the `ssl*` parameters tokio-postgres does not know, and those parameters.
/// Every other part is kept byte for byte, so tokio-postgres reads what was written: several
/// hosts, `target_session_attrs`, `options` with its `%20`s (a URL parser would rewrite
/// them, or refuse a host list outright).
fn split(url: &str) -> Result<(String, tls::SslParams), String> {
    let mut ssl = tls::SslParams::default();
    let Some(start) = query_start(url) else {
        return Ok((url.to_owned(), ssl));
    };
    let mut kept = Vec::new();
    for pair in url[start + 1..].split('&').filter(|p| !p.is_empty()) {
        let key = pair
            .split_once('=')
            .and_then(|(k, v)| Some((decode(k).ok()?, v)));
        match key {
            Some((key, value)) if tls::PARAMS.contains(&key.as_str()) => {
                let value = decode(value)
                    .map_err(|()| format!("{key} is not UTF-8 once percent-decoded"))?;
                ssl.set(&key, value);
            }
            _ => kept.push(pair),
        }
    }
    let mut rest = url[..start].to_owned();
    if !kept.is_empty() {
        rest.push('?');
        rest.push_str(&kept.join("&"));
    }
    Ok((rest, ssl))
}

/// Where the query (`?…`) of a PostgreSQL URL starts, found as tokio-postgres finds it: the
/// credentials run to the first `@` and may hold a `?`.
fn query_start(url: &str) -> Option<usize> {
    let from = url.find('@').map_or(0, |at| at + 1);
    url[from..].find('?').map(|q| from + q)
}

/// Percent-decoding as libpq and tokio-postgres do it: `%XX` is a byte, a `+` stays a `+`.
fn decode(s: &str) -> Result<String, ()> {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        match tail.get(..2) {
            Some(hex) if byte == b'%' && hex.iter().all(u8::is_ascii_hexdigit) => {
                let hex = std::str::from_utf8(hex).map_err(drop)?;
                out.push(u8::from_str_radix(hex, 16).map_err(drop)?);
                rest = &tail[2..];
            }
            _ => {
                out.push(byte);
                rest = tail;
            }
        }
    }
    String::from_utf8(out).map_err(drop)
}

/// A pool of at most `size` connections opened by [`connect`]. Connections are not checked
/// with a query on every checkout (a round trip per read); a broken one fails its query, is
/// dropped by the pool, and the caller's error says the database is unreachable.
///
/// `pooled`: the URL leads to a transaction pooler (consecutive transactions may run on
/// different server sessions), so no connection keeps prepared statements between
/// statements: each is prepared, run and closed again, all inside its transaction.
pub(super) async fn pool(url: &str, size: u32, pooled: bool) -> ConnectionResult<Pool> {
    let mut config = ManagerConfig::default();
    config.recycling_method = RecyclingMethod::Fast;
    config.custom_setup = if pooled {
        Box::new(|url| connect_pooled(url).boxed())
    } else {
        Box::new(|url| connect(url).boxed())
    };
    let manager = AsyncDieselConnectionManager::new_with_config(url, config);
    bb8::Pool::builder()
        .max_size(size)
        .min_idle(Some(1))
        .connection_timeout(CONNECT_TIMEOUT)
        .build(manager)
        .await
        .map_err(|e| ConnectionError::BadConnection(e.to_string()))
}

/// `url` with any password replaced, for messages and logs; a SQLite path as it is. A URL
/// whose user, hosts and database tokio-postgres cannot read is not quoted at all: where
/// its password is would be a guess.
pub fn redacted(url: &str) -> String {
    if !super::is_postgres_url(url) {
        return url.to_owned();
    }
    let start = query_start(url);
    // Whether the part before the query is readable; the parameters are redacted by name.
    let head = &url[..start.unwrap_or(url.len())];
    if head.parse::<tokio_postgres::Config>().is_err() {
        return "(an unreadable PostgreSQL URL)".to_owned();
    }
    let Some(start) = start else {
        return hide_password(url);
    };
    let pairs: Vec<String> = url[start + 1..]
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if matches!(decode(k).as_deref(), Ok("password" | "sslpassword")) => {
                format!("{k}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{}?{}", hide_password(&url[..start]), pairs.join("&"))
}

/// `scheme://user:password@hosts/db` with the password as `***`. tokio-postgres ends the
/// credentials at the first `@`; a raw `@` in a password (a URL should say `%40`) would end
/// them at the last `@` before the path, so everything up to that one is hidden.
fn hide_password(head: &str) -> String {
    let start = head.find("://").map_or(0, |s| s + 3);
    let rest = &head[start..];
    let Some(first_at) = rest.find('@') else {
        return head.to_owned();
    };
    let hosts_end = rest[first_at..]
        .find('/')
        .map_or(rest.len(), |e| first_at + e);
    let last_at = rest[..hosts_end].rfind('@').unwrap_or(first_at);
    match rest[..last_at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &head[..start],
            &rest[..colon],
            &rest[last_at..]
        ),
        None => head.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{check_url, redacted, settings, split};
    use tokio_postgres::config::{Host, SslMode, TargetSessionAttrs};

    #[test]
    fn passwords_never_leave_in_a_message() {
        assert_eq!(
            redacted("postgres://app:s3cret@db:5432/refresh"),
            "postgres://app:***@db:5432/refresh"
        );
        let query = redacted("postgresql://app@db/refresh?password=s3cret&sslmode=require");
        assert!(
            !query.contains("s3cret") && query.contains("sslmode=require"),
            "{query}"
        );
        assert_eq!(redacted("fintoc-refresh.db"), "fintoc-refresh.db");
        assert_eq!(
            redacted("postgres://a:s3cret@[bad"),
            "(an unreadable PostgreSQL URL)"
        );
        // Several hosts: readable, and redacted like one.
        assert_eq!(
            redacted(
                "postgres://app:s3cret@h1:5432,h2:5433/refresh?target_session_attrs=read-write"
            ),
            "postgres://app:***@h1:5432,h2:5433/refresh?target_session_attrs=read-write"
        );
        for url in [
            "postgres://app:s3%40cret@h1,h2/refresh",
            "postgres://app:s3@cret@h1,h2/refresh",
            "postgres://app:s3?cret@db/refresh?sslmode=require",
            "postgres://app:s3/cret@db/refresh",
            "postgres://app@db/refresh?sslpassword=s3cret&sslrootcert=/ca.pem",
            "postgres://app@db/refresh?pass%77ord=s3cret",
        ] {
            let shown = redacted(url);
            assert!(!shown.contains("cret"), "{url}: {shown}");
            assert!(shown.contains("***"), "{url}: {shown}");
        }
    }

    #[test]
    fn several_hosts_and_target_session_attrs_reach_tokio_postgres() {
        let (config, _) = settings(
            "postgres://app@10.0.0.1:5432,db2.internal:5433/refresh\
             ?target_session_attrs=read-write&sslmode=require",
        )
        .unwrap();
        assert_eq!(
            config.get_hosts(),
            [
                Host::Tcp("10.0.0.1".into()),
                Host::Tcp("db2.internal".into())
            ]
        );
        assert_eq!(config.get_ports(), [5432, 5433]);
        assert_eq!(config.get_dbname(), Some("refresh"));
        assert_eq!(config.get_user(), Some("app"));
        assert_eq!(
            config.get_target_session_attrs(),
            TargetSessionAttrs::ReadWrite
        );
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        let (config, _) =
            settings("postgresql://app@h1,h2/refresh?target_session_attrs=any").unwrap();
        assert_eq!(config.get_hosts().len(), 2);
        assert_eq!(config.get_ports(), [5432, 5432]);
        assert_eq!(config.get_target_session_attrs(), TargetSessionAttrs::Any);
        assert_eq!(config.get_ssl_mode(), SslMode::Prefer);
    }

    /// tokio-postgres refuses what it does not know (`sslrootcert`, `sslcert`, `sslkey`,
    /// `sslmode=verify-*`): those are taken out, and everything else is passed on as written.
    #[test]
    fn ssl_parameters_never_reach_tokio_postgres_and_the_rest_is_untouched() {
        let url = "postgres://app:pw@h1:5432,h2:5433/refresh?sslmode=verify-ca\
                   &options=-c%20search_path%3Dx&sslrootcert=%2Fetc%2Fdb+ca.pem&sslcert=/c.pem\
                   &application_name=a+b&sslkey=/c.key";
        let (rest, ssl) = split(url).unwrap();
        assert_eq!(
            rest,
            "postgres://app:pw@h1:5432,h2:5433/refresh\
             ?options=-c%20search_path%3Dx&application_name=a+b"
        );
        assert_eq!(ssl.mode.as_deref(), Some("verify-ca"));
        // Decoded as libpq decodes: %2F is a slash, a + stays a +.
        assert_eq!(ssl.root_cert.as_deref(), Some("/etc/db+ca.pem"));
        assert_eq!(ssl.cert.as_deref(), Some("/c.pem"));
        assert_eq!(ssl.key.as_deref(), Some("/c.key"));
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_options(), Some("-c search_path=x"));
        assert_eq!(config.get_application_name(), Some("a+b"));
        assert_eq!(
            split("postgres://h/db").unwrap().0,
            "postgres://h/db",
            "no query"
        );
        assert_eq!(
            split("postgres://h/db?sslmode=disable").unwrap().0,
            "postgres://h/db",
            "only ssl parameters"
        );
    }

    /// What `serve` checks at start: a bad `ssl*` setting is refused there, in a sentence.
    #[test]
    fn check_url_refuses_what_libpq_refuses() {
        let cases = [
            (
                "postgres://h/db?sslrootcert=system&sslmode=require",
                "weak sslmode \"require\" may not be used with sslrootcert=system (use \
                 \"verify-full\")",
            ),
            (
                "postgres://h/db?sslcert=/c.pem",
                "sslcert is set but sslkey is not",
            ),
            (
                "postgres://h/db?sslmode=require&sslrootcert=/no/such/ca.pem",
                "sslrootcert \"/no/such/ca.pem\" cannot be read: no such file",
            ),
            (
                "postgres://h/db?sslmode=verify",
                "sslmode \"verify\" is not one of",
            ),
            (
                "postgres://h/db?sslcompression=1",
                "unknown option `sslcompression`",
            ),
            (
                "postgres://h/db?target_session_attrs=primary",
                "target_session_attrs",
            ),
        ];
        for (url, needle) in cases {
            let why = check_url(url).expect_err(url);
            assert!(why.contains(needle), "{url}: {why}");
        }
        check_url("postgres://app@h1:5432,h2:5433/db?target_session_attrs=read-write").unwrap();
    }
}
