//! Reaching the service: the addresses of its replicas, TLS, a bearer token, and the unary
//! calls with their errors typed.
//!
//! Several addresses are taken in turn: calls go to the current one, and a call that could
//! not reach it (a transport error, `UNAVAILABLE`) moves to the next and is tried there, once
//! per address; a watcher moves on the same way when it reconnects. Connections are made
//! lazily, so a replica that is down when the client is built costs nothing until it is
//! tried.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
#[cfg(feature = "tls")]
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use crate::error::Error;
use crate::pb;
use crate::pb::refresh_service_client::RefreshServiceClient;

/// How long a connection attempt (TCP, TLS, HTTP/2) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// TLS to the service: the CA to trust (default: the system's roots) and, for mutual TLS,
/// this client's certificate and key (PEM).
#[derive(Clone, Default)]
pub struct Tls {
    /// PEM CA certificate(s) to trust; `None`: the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain of this client, for a server that requires mutual TLS.
    pub client_cert_pem: Option<Vec<u8>>,
    /// PEM private key of `client_cert_pem`.
    pub client_key_pem: Option<Vec<u8>>,
    /// The name to check the server's certificate against, when it is not the address's.
    pub domain: Option<String>,
}

/// How to reach the service besides its addresses.
#[derive(Clone, Default)]
pub struct Options {
    /// TLS settings for `https://` addresses (`https://` alone trusts the system's roots).
    pub tls: Option<Tls>,
    /// Sent as `authorization: Bearer <token>` on every call, for a server with
    /// `GRPC_BEARER_TOKENS`.
    pub bearer_token: Option<String>,
}

/// Adds the bearer token to every call. No `Debug`: the value is a credential.
#[derive(Clone, Default)]
pub(crate) struct Auth(Option<MetadataValue<Ascii>>);

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// The stub every call goes through.
pub(crate) type Stub = RefreshServiceClient<InterceptedService<Channel, Auth>>;

/// A client of fintoc-refresh: cheap to clone, safe to share.
#[derive(Clone)]
pub struct Client {
    stubs: Arc<[Stub]>,
    /// The address calls go to now (an index into `stubs`, taken modulo its length).
    current: Arc<AtomicUsize>,
}

impl Client {
    /// A client of the service at `addresses` (`http://host:port`, `https://host:port`, or
    /// `host:port` for plaintext): one address, or every replica's. Nothing is connected yet;
    /// the error names an address that is not usable or TLS settings that do not load.
    pub fn connect<I, S>(addresses: I, options: Options) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let auth = auth(options.bearer_token.as_deref())?;
        let mut stubs = Vec::new();
        for address in addresses {
            let channel = endpoint(address.as_ref(), options.tls.as_ref())?.connect_lazy();
            stubs.push(RefreshServiceClient::with_interceptor(
                channel,
                auth.clone(),
            ));
        }
        if stubs.is_empty() {
            return Err(Error::Config("no address of the service was given".into()));
        }
        Ok(Client {
            stubs: stubs.into(),
            current: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// A client over a channel the caller set up (one address), sending `bearer_token` when
    /// given.
    pub fn from_channel(channel: Channel, bearer_token: Option<&str>) -> Result<Client, Error> {
        let auth = auth(bearer_token)?;
        Ok(Client {
            stubs: vec![RefreshServiceClient::with_interceptor(channel, auth)].into(),
            current: Arc::new(AtomicUsize::new(0)),
        })
    }

    /// The stub of the address calls go to now.
    pub(crate) fn stub(&self) -> Stub {
        let i = self.current.load(Ordering::Relaxed) % self.stubs.len();
        self.stubs[i].clone()
    }

    /// Moves calls to the next address (after the current one could not be reached).
    pub(crate) fn rotate(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
    }

    /// How many addresses it knows.
    pub(crate) fn addresses(&self) -> usize {
        self.stubs.len()
    }

    /// Runs a unary call on the current address, moving on to the next ones (once each) while
    /// the service cannot be reached.
    async fn call<T, F, Fut>(&self, mut call: F) -> Result<T, Error>
    where
        F: FnMut(Stub) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let mut tries = 0;
        loop {
            match call(self.stub()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if unreachable(&status) && tries + 1 < self.addresses() => {
                    tries += 1;
                    self.rotate();
                }
                Err(status) => return Err(Error::from(status)),
            }
        }
    }

    /// RequestRefresh: creates (or joins) a refresh of the Link behind `request.link_token`.
    pub async fn request_refresh(
        &self,
        request: pb::RequestRefreshRequest,
    ) -> Result<pb::RequestRefreshResponse, Error> {
        self.call(|mut s| {
            let request = request.clone();
            async move { s.request_refresh(request).await }
        })
        .await
    }

    /// GetRefresh: one refresh intent's current state.
    pub async fn get_refresh(&self, refresh_intent_id: &str) -> Result<pb::RefreshIntent, Error> {
        let request = pb::GetRefreshRequest {
            refresh_intent_id: refresh_intent_id.to_owned(),
        };
        let response = self
            .call(|mut s| {
                let request = request.clone();
                async move { s.get_refresh(request).await }
            })
            .await?;
        response
            .refresh_intent
            .ok_or_else(|| Error::Protocol("GetRefresh answered without the intent".into()))
    }

    /// GetLink: a Link's state and the cursor it is current to.
    pub async fn get_link(&self, link_id: &str) -> Result<pb::GetLinkResponse, Error> {
        let request = pb::GetLinkRequest {
            link_id: link_id.to_owned(),
        };
        self.call(|mut s| {
            let request = request.clone();
            async move { s.get_link(request).await }
        })
        .await
    }

    /// ListLinks: one page of every known Link's state.
    pub async fn list_links(
        &self,
        request: pb::ListLinksRequest,
    ) -> Result<pb::ListLinksResponse, Error> {
        self.call(|mut s| {
            let request = request.clone();
            async move { s.list_links(request).await }
        })
        .await
    }

    /// RegisterLink: keep a Link's token (sealed, on the server) so its movements are
    /// pushed, without refreshing it.
    pub async fn register_link(&self, link_token: &str) -> Result<pb::LinkState, Error> {
        let request = pb::RegisterLinkRequest {
            link_token: link_token.to_owned(),
        };
        let response = self
            .call(|mut s| {
                let request = request.clone();
                async move { s.register_link(request).await }
            })
            .await?;
        response
            .link
            .ok_or_else(|| Error::Protocol("RegisterLink answered without the Link".into()))
    }

    /// ForgetLink: drop a Link's kept token and its stored movements.
    pub async fn forget_link(&self, link_id: &str) -> Result<(), Error> {
        let request = pb::ForgetLinkRequest {
            link_id: link_id.to_owned(),
        };
        self.call(|mut s| {
            let request = request.clone();
            async move { s.forget_link(request).await }
        })
        .await
        .map(|_| ())
    }

    /// ListMovements: one page of an account's stored movements.
    pub async fn list_movements(
        &self,
        request: pb::ListMovementsRequest,
    ) -> Result<pb::ListMovementsResponse, Error> {
        self.call(|mut s| {
            let request = request.clone();
            async move { s.list_movements(request).await }
        })
        .await
    }
}

/// Whether a call failed because the service could not be reached (another replica may
/// answer), rather than because it answered.
pub(crate) fn unreachable(status: &Status) -> bool {
    status.code() == Code::Unavailable
        && crate::error::reason_of(status).is_none_or(|r| r != "STREAM_MAX_AGE")
}

/// The interceptor sending `token` (none when absent or blank).
fn auth(token: Option<&str>) -> Result<Auth, Error> {
    match token.map(str::trim) {
        None | Some("") => Ok(Auth(None)),
        Some(token) => {
            let mut value = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| {
                Error::Config("the bearer token holds a character a header cannot carry".into())
            })?;
            // HTTP/2 header compression must never index a credential.
            value.set_sensitive(true);
            Ok(Auth(Some(value)))
        }
    }
}

/// The endpoint for one address, with TLS for `https://`.
fn endpoint(address: &str, tls: Option<&Tls>) -> Result<Endpoint, Error> {
    let url = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    let endpoint = Endpoint::from_shared(url)
        .map_err(|e| Error::Config(format!("{address:?} is not a usable address: {e}")))?
        .connect_timeout(CONNECT_TIMEOUT);
    if endpoint.uri().scheme_str() != Some("https") {
        if tls.is_some_and(|t| {
            t.ca_pem.is_some() || t.client_cert_pem.is_some() || t.client_key_pem.is_some()
        }) {
            return Err(Error::Config(format!(
                "TLS settings need an https:// address, not {address:?}"
            )));
        }
        return Ok(endpoint);
    }
    with_tls(endpoint, address, tls)
}

/// TLS for an `https://` endpoint.
#[cfg(feature = "tls")]
fn with_tls(endpoint: Endpoint, address: &str, tls: Option<&Tls>) -> Result<Endpoint, Error> {
    let tls = tls.cloned().unwrap_or_default();
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca_pem {
        Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
        None => config.with_native_roots(),
    };
    match (&tls.client_cert_pem, &tls.client_key_pem) {
        (Some(cert), Some(key)) => config = config.identity(Identity::from_pem(cert, key)),
        (None, None) => {}
        _ => {
            return Err(Error::Config(
                "mutual TLS needs both the client certificate and its key".into(),
            ));
        }
    }
    if let Some(domain) = &tls.domain {
        config = config.domain_name(domain.clone());
    }
    endpoint
        .tls_config(config)
        .map_err(|e| Error::Config(format!("cannot set up TLS for {address}: {e}")))
}

/// Built without the `tls` feature: an `https://` address cannot be reached.
#[cfg(not(feature = "tls"))]
fn with_tls(_: Endpoint, address: &str, _: Option<&Tls>) -> Result<Endpoint, Error> {
    Err(Error::Config(format!(
        "{address} needs TLS, and this build of fintoc-refresh-client has no `tls` feature"
    )))
}
