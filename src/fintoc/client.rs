//! The Fintoc REST client: the calls RequestRefresh, reconciliation and the movements fetch
//! (`client/movements.rs`) need, with Fintoc's conventions (raw secret key in
//! `Authorization`, `Idempotency-Key` on every POST, the
//! `{"error":{type,code,message,param,doc_url}}` envelope) and a retry policy.
//!
//! Retries: 429 (unless it is the refresh cooldown), 5xx, timeouts, connection failures and
//! unreadable 2xx bodies are retried with exponential backoff and jitter while the caller's
//! deadline allows. A POST is safe to repeat because it carries an idempotency key — but
//! Fintoc keeps the first answer to a key, errors included, and replays it for 24 h, so a
//! key is sent again only while its outcome is unknown (a timeout, a lost connection); after
//! any answer the retry takes the next key of its series ([`IdempotencyKeys`]). Errors
//! are branched on `error.code`, never on the HTTP status alone. Unknown fields are ignored,
//! so new API versions do not break us.
//!
//! Only documented parameters are sent: the create call's `link_token` and `refresh_type`
//! as query parameters with an empty body, `/v2/events` with nothing but its
//! `starting_after` cursor. An answer that is not what was asked for (an intent of another
//! type) is an error, not something to guess around.
//!
//! Secrets: the link token travels in URLs (Fintoc's API puts it there), so no error from
//! this module carries a URL, and no request is logged with one. With traces on, each
//! attempt is a `fintoc.call` span (endpoint label, status, attempt, outcome; no URL, no
//! header value) and sends its `traceparent`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Method, Url};
use serde::Deserialize;
use tracing::Instrument;

pub use super::error::FintocError;
use crate::clock::Millis;
use crate::config::Config;
use crate::domain::RefreshType;
use crate::metrics::{Metrics, UpstreamLabels};
use crate::secret::Secret;
use crate::telemetry;

mod decode;
mod movements;

pub use movements::{Listing, MAX_PASSES};

use decode::{api_error, decode, decode_list, malformed, next_url};

/// One attempt may take at most this long (less if the caller's deadline is nearer).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Fintoc's documented backoff for 429 is 1, 2, 4, 8, 16 s plus up to 1 s of jitter: five
/// retries after the first attempt.
const MAX_ATTEMPTS: u32 = 6;

/// A Link as `GET /v1/links/{link_token}` returns it (only what we use).
#[derive(Debug, Clone, Deserialize)]
pub struct Link {
    pub id: String,
    /// `null` in some answers (as in lists): then `GET /v1/accounts` has them.
    #[serde(default)]
    pub accounts: Option<Vec<Account>>,
    /// Fintoc does not refresh an inactive Link. Taken as active when absent.
    #[serde(default = "active_by_default")]
    pub active: bool,
}

fn active_by_default() -> bool {
    true
}

/// The `Idempotency-Key`s of one logical create call, attempt after attempt and call after
/// call: `base`, then `base-1`, `base-2` … Fintoc stores the first answer to a key — a 5xx,
/// a refusal, an unreadable body included — and replays it to every later request with that
/// key for 24 hours. So a key is worth sending again only while its outcome is unknown (the
/// request timed out or its connection was lost: Fintoc may have created the intent, and the
/// replay says so); once Fintoc has answered it, the key is spent and the next attempt takes
/// the next one. A caller that keeps `spent()` (per caller idempotency key) starts a later
/// call after the keys already answered, so a passing failure is never replayed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKeys {
    base: String,
    spent: u64,
}

impl IdempotencyKeys {
    /// The series of `base`, of which the first `spent` keys were answered already.
    pub fn new(base: impl Into<String>, spent: u64) -> IdempotencyKeys {
        IdempotencyKeys {
            base: base.into(),
            spent,
        }
    }

    /// The key for the next attempt.
    pub fn current(&self) -> String {
        match self.spent {
            0 => self.base.clone(),
            n => format!("{}-{n}", self.base),
        }
    }

    /// How many keys of the series Fintoc has answered.
    pub fn spent(&self) -> u64 {
        self.spent
    }

    /// Fintoc answered the current key: never send it again.
    fn spend(&mut self) {
        self.spent += 1;
    }
}

/// What one [`Client::call_with`] does beyond [`Client::call`]'s defaults.
#[derive(Default)]
struct CallOptions<'a> {
    /// Requests sent so far, retries included (added to, never reset).
    requests: u32,
    /// Retry every 429, `rate_limit_exceeded` included: right where that code cannot be
    /// the refresh cooldown (which is an answer, not congestion, and is not retried).
    every_429_is_congestion: bool,
    /// A secret that must not appear in an error's text (logged or returned).
    redact: Option<&'a Secret>,
}

/// An account, from a Link or from `GET /v1/accounts` (only what we use).
#[derive(Debug, Clone, Deserialize)]
pub struct Account {
    pub id: String,
}

/// A refresh intent object.
#[derive(Debug, Clone, Deserialize)]
pub struct RefreshIntent {
    pub id: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub refreshed_object_id: Option<String>,
    #[serde(default)]
    pub requires_mfa: Option<RequiresMfa>,
    #[serde(rename = "type", default)]
    pub refresh_type: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RequiresMfa {
    #[serde(default)]
    pub widget_token: Option<String>,
}

/// One event from `GET /v2/events`, with its exact JSON text for the ingestion path.
#[derive(Debug, Clone)]
pub struct ListedEvent {
    pub id: String,
    pub created_at_ms: Option<Millis>,
    pub raw: String,
}

/// A walk down `GET /v2/events` (newest first) to a point in time; see
/// [`Client::events_since`].
pub struct EventsSince<'a> {
    client: &'a Client,
    since_ms: Millis,
    deadline: Instant,
    cursor: Option<String>,
    done: bool,
}

impl EventsSince<'_> {
    /// The next page's events created at or after `since_ms` (events whose `created_at`
    /// cannot be read are kept: better read twice than lost), or `None` once the walk has
    /// reached an older event or the end of the list.
    pub async fn next_page(&mut self) -> Result<Option<Vec<ListedEvent>>, FintocError> {
        if self.done {
            return Ok(None);
        }
        let (events, next) = self
            .client
            .list_events(self.cursor.as_deref(), self.deadline)
            .await?;
        let since = self.since_ms;
        let reached_older = events
            .iter()
            .any(|e| e.created_at_ms.is_some_and(|at| at < since));
        self.done = reached_older || next.is_none();
        self.cursor = next;
        Ok(Some(
            events
                .into_iter()
                .filter(|e| e.created_at_ms.is_none_or(|at| at >= since))
                .collect(),
        ))
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    key: Secret,
    backoff: Duration,
    metrics: Arc<Metrics>,
}

impl Client {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> anyhow::Result<Client> {
        let mut base = Url::parse(&config.fintoc_api_url)?;
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("fintoc-refresh/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            base,
            key: config.fintoc_secret_key.clone(),
            backoff: config.fintoc_backoff,
            metrics,
        })
    }

    /// `GET /v1/links/{link_token}`: the Link and its accounts.
    pub async fn get_link(
        &self,
        link_token: &Secret,
        deadline: Instant,
    ) -> Result<Link, FintocError> {
        let url = self.url(&format!("v1/links/{}", encode_segment(link_token.expose())))?;
        self.call(
            "get_link",
            Method::GET,
            url,
            &[],
            None,
            deadline,
            |body, _| decode(body),
        )
        .await
    }

    /// `POST /v1/refresh_intents?link_token=…&refresh_type=…` with an empty body, as
    /// Fintoc documents it, each attempt with `keys.current()` as its `Idempotency-Key`
    /// (`keys` tells afterwards how many of its keys Fintoc answered). An intent of another
    /// type than `refresh_type` is [`FintocError::TypeMismatch`]; one whose answer has no
    /// `type` is taken as asked.
    pub async fn create_refresh_intent(
        &self,
        link_token: &Secret,
        refresh_type: RefreshType,
        keys: &mut IdempotencyKeys,
        deadline: Instant,
    ) -> Result<RefreshIntent, FintocError> {
        let query = [
            ("link_token", link_token.expose().to_owned()),
            ("refresh_type", refresh_type.as_str().to_owned()),
        ];
        self.call(
            "create_refresh_intent",
            Method::POST,
            self.url("v1/refresh_intents")?,
            &query,
            Some(keys),
            deadline,
            |body, _| {
                let intent: RefreshIntent = decode(body)?;
                match intent.refresh_type.as_deref() {
                    Some(answered) if answered != refresh_type.as_str() => {
                        Err(FintocError::TypeMismatch {
                            intent_id: intent.id,
                            asked: refresh_type.as_str().to_owned(),
                            answered: answered.to_owned(),
                        })
                    }
                    _ => Ok(intent),
                }
            },
        )
        .await
    }

    /// `GET /v1/refresh_intents?link_token=…`, most recent first (first page only: the one
    /// in progress is the newest).
    pub async fn list_refresh_intents(
        &self,
        link_token: &Secret,
        deadline: Instant,
    ) -> Result<Vec<RefreshIntent>, FintocError> {
        let query = [("link_token", link_token.expose().to_owned())];
        self.call(
            "list_refresh_intents",
            Method::GET,
            self.url("v1/refresh_intents")?,
            &query,
            None,
            deadline,
            |body, _| decode(body),
        )
        .await
    }

    /// `GET /v1/accounts?link_token=…`: every account of the Link, following the `Link:
    /// rel="next"` header page after page (as Fintoc's SDKs do, verbatim: the next URL
    /// carries the query). A next URL on another host than Fintoc's is refused, so the key
    /// is never sent elsewhere.
    pub async fn list_accounts(
        &self,
        link_token: &Secret,
        deadline: Instant,
    ) -> Result<Vec<Account>, FintocError> {
        let mut accounts = Vec::new();
        let mut url = self.url("v1/accounts")?;
        let mut query = vec![("link_token", link_token.expose().to_owned())];
        loop {
            let (page, next) = self
                .call(
                    "list_accounts",
                    Method::GET,
                    url,
                    &query,
                    None,
                    deadline,
                    |body, headers| {
                        let page: Vec<Account> = decode_list(body)?;
                        Ok((page, next_url(headers)))
                    },
                )
                .await?;
            accounts.extend(page);
            let Some(next) = next else {
                return Ok(accounts);
            };
            url = self.next_page(next, "accounts")?;
            query.clear();
        }
    }

    /// One page of `GET /v2/events` (most recent first; the page size is Fintoc's) and the
    /// `starting_after` cursor of the next page, if any, from the `Link` header.
    pub async fn list_events(
        &self,
        starting_after: Option<&str>,
        deadline: Instant,
    ) -> Result<(Vec<ListedEvent>, Option<String>), FintocError> {
        let query: Vec<_> = starting_after
            .map(|after| ("starting_after", after.to_owned()))
            .into_iter()
            .collect();
        self.call(
            "list_events",
            Method::GET,
            self.url("v2/events")?,
            &query,
            None,
            deadline,
            read_events_page,
        )
        .await
    }

    /// The events created at or after `since_ms`, page by page, newest first. Fintoc's list
    /// takes no time filter, only cursors, so this walks back from the newest event and
    /// stops at the first page that reaches an older one: how far it reads is bounded by
    /// time, not by a page count. Every call shares `deadline`.
    pub fn events_since(&self, since_ms: Millis, deadline: Instant) -> EventsSince<'_> {
        EventsSince {
            client: self,
            since_ms,
            deadline,
            cursor: None,
            done: false,
        }
    }

    /// A list's `rel="next"` URL, followed verbatim, if it is on Fintoc's host: the key and
    /// the link token are never sent elsewhere.
    fn next_page(&self, next: Url, list: &str) -> Result<Url, FintocError> {
        if next.origin() != self.base.origin() {
            return Err(FintocError::Malformed(format!(
                "the {list} list points its next page at another host"
            )));
        }
        Ok(next)
    }

    fn url(&self, path: &str) -> Result<Url, FintocError> {
        self.base
            .join(path)
            .map_err(|_| FintocError::Malformed("invalid request path".into()))
    }

    /// Sends one request with retries and reads a 2xx with `parse`; an answer `parse` cannot
    /// read counts as a failed attempt (retried like a 5xx). With `keys`, each attempt
    /// carries the series' current key, and an attempt Fintoc answered spends it.
    #[allow(clippy::too_many_arguments)]
    async fn call<T>(
        &self,
        endpoint: &'static str,
        method: Method,
        url: Url,
        query: &[(&str, String)],
        keys: Option<&mut IdempotencyKeys>,
        deadline: Instant,
        parse: impl Fn(&[u8], &HeaderMap) -> Result<T, FintocError>,
    ) -> Result<T, FintocError> {
        let mut options = CallOptions::default();
        self.call_with(
            endpoint,
            method,
            url,
            query,
            keys,
            deadline,
            &mut options,
            parse,
        )
        .await
    }

    /// [`Client::call`], with `options`: it counts the requests it sends into
    /// `options.requests` and applies the rest (see [`CallOptions`]).
    ///
    /// The retry schedule is Fintoc's for 429 (fintoc-api.md §3.4) and serves 5xx,
    /// timeouts and the rest alike: `self.backoff` (the unit: [`Config::fintoc_backoff`],
    /// 1 s as Fintoc asks; tests shorten it) times 1, 2, 4, 8, 16, plus up to one unit of
    /// jitter, at most [`MAX_ATTEMPTS`] − 1 = 5 retries, and no retry whose wait would pass
    /// `deadline`.
    #[allow(clippy::too_many_arguments)]
    async fn call_with<T>(
        &self,
        endpoint: &'static str,
        method: Method,
        url: Url,
        query: &[(&str, String)],
        mut keys: Option<&mut IdempotencyKeys>,
        deadline: Instant,
        options: &mut CallOptions<'_>,
        parse: impl Fn(&[u8], &HeaderMap) -> Result<T, FintocError>,
    ) -> Result<T, FintocError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            // One span per attempt: its status and outcome, never the URL (a link token).
            let span = telemetry::fintoc_span(endpoint, attempt);
            let left = deadline.saturating_duration_since(Instant::now());
            let key = keys.as_deref().map(IdempotencyKeys::current);
            let mut result = if left.is_zero() {
                Err(FintocError::Unreachable(
                    "no time left before the caller's deadline".into(),
                ))
            } else {
                options.requests += 1;
                self.attempt(
                    &method,
                    url.clone(),
                    query,
                    key.as_deref(),
                    left.min(ATTEMPT_TIMEOUT),
                )
                .instrument(span.clone())
                .await
                .and_then(|(body, headers)| parse(&body, &headers))
            };
            // Before anything logs or returns it.
            if let (Err(e), Some(secret)) = (&mut result, options.redact) {
                e.redact(secret.expose());
            }
            if let (Err(e), Some(keys)) = (&result, keys.as_deref_mut())
                && e.answered()
            {
                keys.spend();
            }
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.metric_outcome(),
            };
            span.record("outcome", outcome);
            if let Err(e) = &result
                && let Some(status) = e.status()
            {
                span.record("http.response.status_code", i64::from(status));
            }
            drop(span);
            self.metrics
                .upstream
                .get_or_create(&UpstreamLabels { endpoint, outcome })
                .inc();
            let err = match result {
                Ok(ok) => return Ok(ok),
                Err(e) => e,
            };
            let retryable =
                err.retryable() || (options.every_429_is_congestion && err.status() == Some(429));
            if !retryable || attempt >= MAX_ATTEMPTS {
                return Err(err);
            }
            let backoff = backoff(self.backoff, attempt);
            if Instant::now() + backoff >= deadline {
                return Err(err);
            }
            tracing::warn!(endpoint, attempt, error = %err, ?backoff, "Fintoc call failed; retrying");
            tokio::time::sleep(backoff).await;
        }
    }

    async fn attempt(
        &self,
        method: &Method,
        url: Url,
        query: &[(&str, String)],
        idempotency_key: Option<&str>,
        timeout: Duration,
    ) -> Result<(bytes::Bytes, HeaderMap), FintocError> {
        let mut auth = HeaderValue::from_str(self.key.expose()).map_err(|_| {
            FintocError::Unreachable(
                "FINTOC_SECRET_KEY contains characters not allowed in a header".into(),
            )
        })?;
        auth.set_sensitive(true);
        let mut request = self
            .http
            .request(method.clone(), url)
            .header(AUTHORIZATION, auth)
            .timeout(timeout)
            .query(query);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if telemetry::enabled() {
            // The attempt's span as the parent of whatever Fintoc traces of it.
            let mut traceparent = HeaderMap::new();
            telemetry::inject(&mut traceparent);
            request = request.headers(traceparent);
        }
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        telemetry::record("http.response.status_code", i64::from(status.as_u16()));
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport_error)?;
        if status.is_success() {
            return Ok((body, headers));
        }
        Err(api_error(status, &body))
    }
}

/// One page of `/v2/events`: each event kept verbatim, and the next page's cursor.
fn read_events_page(
    body: &[u8],
    headers: &HeaderMap,
) -> Result<(Vec<ListedEvent>, Option<String>), FintocError> {
    let raw: Vec<Box<serde_json::value::RawValue>> = decode_list(body)?;
    let mut events = Vec::with_capacity(raw.len());
    for item in raw {
        #[derive(Deserialize)]
        struct Head {
            id: String,
            #[serde(default)]
            created_at: Option<String>,
        }
        let head: Head = serde_json::from_str(item.get()).map_err(malformed)?;
        events.push(ListedEvent {
            created_at_ms: head
                .created_at
                .as_deref()
                .and_then(crate::clock::parse_rfc3339_ms),
            id: head.id,
            raw: item.get().to_owned(),
        });
    }
    let next = next_url(headers).and_then(|url| {
        url.query_pairs()
            .find(|(k, _)| k == "starting_after")
            .map(|(_, v)| v.into_owned())
    });
    Ok((events, next))
}

/// A transport failure in words, never with the URL (it may hold a link token).
fn transport_error(e: reqwest::Error) -> FintocError {
    let e = e.without_url();
    let what = if e.is_timeout() {
        "Fintoc did not answer in time".to_owned()
    } else if e.is_connect() {
        // The source chain says why (refused, DNS, TLS certificate …) without the URL.
        let mut cause = String::new();
        let mut tls = None;
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            cause = s.to_string();
            if let Some(t) = tls_error(s) {
                tls = Some(t.to_string());
            }
            source = s.source();
        }
        match tls {
            Some(why) => format!(
                "cannot connect to Fintoc: the TLS handshake failed ({why}); check \
                 --fintoc-api-url and the certificate it presents"
            ),
            None => format!("cannot connect to Fintoc: {cause}"),
        }
    } else {
        format!("the connection to Fintoc failed: {e}")
    };
    FintocError::Unreachable(what)
}

/// The rustls error inside `e`, if it is one. rustls' errors arrive wrapped in io::Errors
/// (sometimes twice), whose `source()` skips the wrapped error: unwrap them by hand.
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls);
    }
    let inner = e.downcast_ref::<std::io::Error>()?.get_ref()?;
    tls_error(inner)
}

/// Percent-encodes a path segment (a link token is opaque: never trust its alphabet).
fn encode_segment(s: &str) -> String {
    let mut url = Url::parse("http://x/").expect("static URL");
    url.path_segments_mut().expect("base URL").push(s);
    url.path().trim_start_matches('/').to_owned()
}

/// `first`, then doubling (1 s, 2 s, 4 s … by default), plus up to `first` of jitter, so
/// retries from many callers spread out.
fn backoff(first: Duration, attempt: u32) -> Duration {
    let base = first * 2u32.saturating_pow(attempt.saturating_sub(1).min(5));
    let jitter_ms = first.as_millis().max(1) as u64;
    base + Duration::from_millis(rand::random_range(0..jitter_ms))
}

#[cfg(test)]
mod tests;
