//! How the human clients reach the service: plaintext or `https://` (trusting `--ca-cert`, or
//! the system's roots without it), a client certificate for mutual TLS, and the bearer token
//! from `FINTOC_REFRESH_TOKEN` on every call. The token is read from the environment only, so
//! it never shows in `ps` or in shell history, and nothing here prints it.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::pb::refresh_service_client::RefreshServiceClient;
use crate::tls::{self, Setting};

/// The environment variable the clients read their bearer token from.
pub const TOKEN_ENV: &str = "FINTOC_REFRESH_TOKEN";

/// How long to wait for the TCP/TLS/HTTP2 handshake before telling the user the server is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const CA_CERT: Setting = Setting {
    flag: "--ca-cert",
    env: "FINTOC_REFRESH_CA_CERT",
};
const CLIENT_CERT: Setting = Setting {
    flag: "--client-cert",
    env: "FINTOC_REFRESH_CLIENT_CERT",
};
const CLIENT_KEY: Setting = Setting {
    flag: "--client-key",
    env: "FINTOC_REFRESH_CLIENT_KEY",
};

/// Where the service is and how to reach it (shared by `refresh` and `watch`).
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The service's gRPC address; https://… for a server with TLS. A bearer token, if the
    /// server wants one, is read from the FINTOC_REFRESH_TOKEN env var (never a flag).
    #[arg(
        long,
        env = "FINTOC_REFRESH_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub server: String,
    /// PEM CA certificate(s) to trust for an https:// server (default: the system's roots).
    #[arg(long, env = "FINTOC_REFRESH_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate for a server that requires mutual TLS (with --client-key).
    #[arg(long, env = "FINTOC_REFRESH_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, env = "FINTOC_REFRESH_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,
}

impl ConnectArgs {
    /// A plaintext connection to `server`, as the defaults give.
    pub fn plain(server: impl Into<String>) -> ConnectArgs {
        ConnectArgs {
            server: server.into(),
            ca_cert: None,
            client_cert: None,
            client_key: None,
        }
    }
}

/// Adds `authorization: Bearer <token>` to every call when a token is set (and hands the
/// token to the client library's watcher). No `Debug`: the value is the credential.
#[derive(Clone, Default)]
pub struct Credentials(Option<MetadataValue<Ascii>>, Option<String>);

impl Credentials {
    /// From the token's text (`None` or blank: send none). Refused if it cannot be a header.
    pub fn bearer(token: Option<&str>) -> Result<Credentials, String> {
        let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Credentials(None, None));
        };
        let mut value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
            format!("{TOKEN_ENV} holds a character that cannot be sent in a gRPC header")
        })?;
        // Sensitive: HTTP/2 header compression must never index it.
        value.set_sensitive(true);
        Ok(Credentials(Some(value), Some(token.to_owned())))
    }

    /// From `FINTOC_REFRESH_TOKEN`.
    pub fn from_env() -> Result<Credentials, String> {
        Credentials::bearer(std::env::var(TOKEN_ENV).ok().as_deref())
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type Client = RefreshServiceClient<InterceptedService<Channel, Credentials>>;

/// One connection, two ways in: the raw stub for the one-off calls (their errors shown with
/// every detail), and the client library over the same channel for following streams.
pub struct Connection {
    pub stub: Client,
    pub library: fintoc_refresh_client::Client,
}

/// `host:port` is what people type; tonic needs a scheme.
pub fn server_url(server: &str) -> String {
    if server.contains("://") {
        server.to_owned()
    } else {
        format!("http://{server}")
    }
}

/// The endpoint with its TLS settings; errors are one line naming the flag to fix.
pub fn endpoint(args: &ConnectArgs) -> Result<Endpoint, String> {
    let server = &args.server;
    let endpoint = Endpoint::from_shared(server_url(server))
        .map_err(|e| format!("--server {server:?} is not a valid URL: {e}"))?;
    let identity = tls::load_pair(
        (CLIENT_CERT, args.client_cert.as_deref()),
        (CLIENT_KEY, args.client_key.as_deref()),
    )?;
    if endpoint.uri().scheme_str() != Some("https") {
        if args.ca_cert.is_some() || identity.is_some() {
            return Err(format!(
                "--ca-cert and --client-cert need an https:// --server, not {server:?}"
            ));
        }
        return Ok(endpoint.connect_timeout(CONNECT_TIMEOUT));
    }
    let mut config = ClientTlsConfig::new();
    config = match &args.ca_cert {
        Some(path) => config.ca_certificate(Certificate::from_pem(tls::load_ca(CA_CERT, path)?)),
        None => config.with_native_roots(),
    };
    if let Some(identity) = identity {
        config = config.identity(Identity::from_pem(
            &identity.cert_pem,
            identity.key_pem.expose(),
        ));
    }
    let endpoint = endpoint.tls_config(config).map_err(|e| {
        format!(
            "cannot set up TLS for {server}: {} (give --ca-cert)",
            causes(&e)
        )
    })?;
    Ok(endpoint.connect_timeout(CONNECT_TIMEOUT))
}

/// Connects (handshakes included, so a server that is down is said at once); the error is
/// one line.
pub async fn connect(args: &ConnectArgs, credentials: Credentials) -> Result<Connection, String> {
    let channel = endpoint(args)?
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {}: {}", args.server, causes(&e)))?;
    let library =
        fintoc_refresh_client::Client::from_channel(channel.clone(), credentials.1.as_deref())
            .map_err(|e| e.to_string())?;
    Ok(Connection {
        stub: RefreshServiceClient::with_interceptor(channel, credentials),
        library,
    })
}

/// tonic's transport error says only "transport error"; the cause chain says why. Layers
/// that merely repeat the one below ("tcp connect error: tcp connect error") are said once.
pub fn causes(err: &dyn std::error::Error) -> String {
    with_causes(err.to_string(), err.source())
}

/// `text`, then every cause from `next` down that says something new.
pub fn with_causes(mut text: String, mut next: Option<&dyn std::error::Error>) -> String {
    let mut last = text.clone();
    while let Some(cause) = next {
        let said = cause.to_string();
        if said != last {
            text.push_str(&format!(": {said}"));
        }
        last = said;
        next = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_misuse() {
        assert_eq!(server_url("127.0.0.1:50051"), "http://127.0.0.1:50051");
        assert_eq!(server_url("https://grpc.internal"), "https://grpc.internal");
        let mut args = ConnectArgs::plain("127.0.0.1:50051");
        args.ca_cert = Some("ca.pem".into());
        let err = endpoint(&args).unwrap_err();
        assert!(err.contains("need an https:// --server"), "{err}");
        let mut args = ConnectArgs::plain("https://127.0.0.1:50051");
        args.client_key = Some("key.pem".into());
        let err = endpoint(&args).unwrap_err();
        assert!(
            err.starts_with("--client-key (FINTOC_REFRESH_CLIENT_KEY) is set"),
            "{err}"
        );
        assert!(Credentials::bearer(Some("tok\nen")).is_err());
        assert!(Credentials::bearer(Some("  ")).unwrap().0.is_none());
        assert!(Credentials::bearer(Some("  ")).unwrap().1.is_none());
    }
}
