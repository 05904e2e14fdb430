//! Opening connections to PostgreSQL: tokio-postgres (pure Rust) under diesel-async, TLS
//! through rustls with the system's trusted roots when the URL's `sslmode` asks for it (or
//! `prefer`s it, the default), and the settings every connection of this service runs with.

use std::sync::Arc;
use std::time::Duration;

use diesel::ConnectionError;
use diesel::ConnectionResult;
use diesel_async::AsyncPgConnection;
use diesel_async::pooled_connection::{
    AsyncDieselConnectionManager, ManagerConfig, RecyclingMethod,
};
use futures_util::FutureExt;
use tokio_postgres_rustls::MakeRustlsConnect;

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
    let opened = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let (client, connection) = config
            .connect(tls)
            .await
            .map_err(|e| ConnectionError::BadConnection(describe(&e)))?;
        AsyncPgConnection::try_from_client_and_connection(client, connection).await
    })
    .await;
    opened.unwrap_or_else(|_| {
        Err(ConnectionError::BadConnection(format!(
            "no answer from the database within {} s",
            CONNECT_TIMEOUT.as_secs()
        )))
    })
}

/// Opens one plain tokio-postgres session (no diesel), with the same settings and bounds as
/// [`connect`]: for what only the simple query protocol can ask (`pooler.rs`).
pub(super) async fn plain(url: &str) -> ConnectionResult<tokio_postgres::Client> {
    let (mut config, tls) = settings(url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let opened = tokio::time::timeout(CONNECT_TIMEOUT, config.connect(tls)).await;
    match opened {
        Ok(Ok((client, connection))) => {
            tokio::spawn(connection);
            Ok(client)
        }
        Ok(Err(e)) => Err(ConnectionError::BadConnection(describe(&e))),
        Err(_) => Err(ConnectionError::BadConnection(format!(
            "no answer from the database within {} s",
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
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

/// The connection settings of `url`, and how to do TLS, with `sslmode` read as libpq reads
/// it: `disable` never encrypts; `prefer` (the default) encrypts when the server offers it
/// and `require` insists, neither checking whose certificate it is; `verify-ca` and
/// `verify-full` also verify the certificate, against the system's roots or the CA file in
/// `sslrootcert` (rustls always checks the host name too, so both act as `verify-full`).
fn settings(url: &str) -> ConnectionResult<(tokio_postgres::Config, MakeRustlsConnect)> {
    let bad = |why: String| ConnectionError::InvalidConnectionUrl(why);
    let mut parsed = reqwest::Url::parse(url).map_err(|e| bad(e.to_string()))?;
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mode = pairs
        .iter()
        .find(|(k, _)| k == "sslmode")
        .map_or("prefer", |(_, v)| v.as_str())
        .to_owned();
    let root_file = pairs
        .iter()
        .find(|(k, _)| k == "sslrootcert")
        .map(|(_, v)| v.clone());
    let verify = match mode.as_str() {
        "disable" | "prefer" | "require" => false,
        "verify-ca" | "verify-full" => true,
        other => {
            return Err(bad(format!(
                "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            )));
        }
    };
    // tokio-postgres knows only disable/prefer/require, and no sslrootcert: verification
    // is ours to do.
    let kept: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(k, _)| k != "sslrootcert" && k != "sslmode")
        .collect();
    {
        let mut query = parsed.query_pairs_mut();
        query.clear().extend_pairs(kept);
        query.append_pair("sslmode", if verify { "require" } else { mode.as_str() });
    }
    let config: tokio_postgres::Config =
        parsed.as_str().parse().map_err(|e| bad(format!("{e}")))?;
    let tls = if verify {
        verifying(root_file.as_deref())?
    } else {
        encrypting_only()
    };
    Ok((config, tls))
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
        Box::new(|url| {
            async move {
                use diesel::connection::CacheSize;
                use diesel_async::AsyncConnection;
                let mut conn = connect(url).await?;
                conn.set_prepared_statement_cache_size(CacheSize::Disabled);
                Ok(conn)
            }
            .boxed()
        })
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

/// TLS that checks the server's certificate: against `root_file` if given, else the
/// system's roots.
fn verifying(root_file: Option<&str>) -> ConnectionResult<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    match root_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                ConnectionError::InvalidConnectionUrl(format!("sslrootcert {path:?}: {e}"))
            })?;
            use rustls::pki_types::pem::PemObject;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    ConnectionError::InvalidConnectionUrl(format!("sslrootcert {path:?}: {e}"))
                })?;
                roots.add(cert).map_err(|e| {
                    ConnectionError::InvalidConnectionUrl(format!("sslrootcert {path:?}: {e}"))
                })?;
            }
        }
        None => {
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectionError::BadConnection(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// TLS that encrypts without checking whose certificate it is (libpq's `prefer` and
/// `require`): signatures are still checked, so the session key is the server's.
fn encrypting_only() -> MakeRustlsConnect {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        .with_no_client_auth();
    MakeRustlsConnect::new(config)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Accepts any certificate chain, as libpq does below `verify-ca`.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `url` with any password replaced, for messages and logs; a SQLite path as it is.
pub fn redacted(url: &str) -> String {
    if !super::is_postgres_url(url) {
        return url.to_owned();
    }
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        // Not a URL we can read: say nothing of it rather than risk printing a secret.
        return "(an unreadable PostgreSQL URL)".to_owned();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

#[cfg(test)]
mod tests {
    use super::redacted;

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
    }
}
