//! RequestRefresh: create a Fintoc refresh intent for a Link, or answer without calling Fintoc
//! when the answer is already known here.
//!
//! In order: a repeated idempotency key returns its first answer (in the intent's current
//! state); a Link with a pending intent is joined (single flight); a Link whose credentials
//! were rejected is held back for `--rejected-hold`; a Link refreshed successfully too
//! recently is in cooldown. Only then is Fintoc asked: the Link is resolved (its accounts are
//! what the intent waits for) and the intent created with an `Idempotency-Key`. If Fintoc
//! says an intent is already in progress (created elsewhere), that one is adopted and joined.
//!
//! Requests for the same link token are serialized in-process, so concurrent callers make
//! one upstream POST. The work runs in its own task: a caller that hangs up does not leave a
//! created intent unrecorded. While the create call is in flight, account events for the Link
//! are held and matched once the intent is known (`domain::correlate`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tonic::Request;

use crate::clock::parse_rfc3339_ms;
use crate::domain::RefreshType;
use crate::domain::policy::{cooldown_for, cooldown_remaining, hold_remaining};
use crate::error::{AppError, cooldown};
use crate::fintoc::client::{FintocError, RefreshIntent};
use crate::grpc::convert;
use crate::pb;
use crate::secret::{Secret, sha256_hex};
use crate::server::App;
use crate::store::links::{self, KnownLink};
use crate::store::models::IntentView;
use crate::store::{self, InFlight, NewIntent, Store};

/// Kept back from the caller's deadline so the answer (an UNAVAILABLE that says why, say)
/// reaches the caller before its own timer gives up: a tenth of it, at most this much.
const ANSWER_MARGIN: Duration = Duration::from_millis(250);
/// Fintoc's limit on idempotency keys.
const MAX_KEY_LEN: usize = 255;
/// Link tokens are ~50 bytes; anything this long is not one (and is never echoed).
const MAX_TOKEN_LEN: usize = 1024;
/// Keys are honoured this long (the contract asks for at least 24 h); retention prunes them
/// after it.
pub const KEY_TTL: Duration = Duration::from_secs(48 * 3600);

/// Serializes work per link token (by its hash).
#[derive(Default)]
pub struct Coordinator {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Coordinator {
    async fn lock(&self, token_sha256: &str) -> LinkGuard<'_> {
        let lock = self
            .locks
            .lock()
            .expect("coordinator lock")
            .entry(token_sha256.to_owned())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        LinkGuard {
            coordinator: self,
            key: token_sha256.to_owned(),
            lock,
            _guard: Some(guard),
        }
    }
}

/// Holds one link token's lock; forgets the lock when nobody else wants it.
struct LinkGuard<'a> {
    coordinator: &'a Coordinator,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for LinkGuard<'_> {
    fn drop(&mut self) {
        self._guard.take();
        let mut locks = self.coordinator.locks.lock().expect("coordinator lock");
        // Ours plus the map's: nobody else holds or waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.key);
        }
    }
}

/// How long the work may take: the caller's `grpc-timeout`, at most `limit`
/// (`--request-timeout`, also the budget when the caller sets none), minus a margin to answer
/// in.
pub fn deadline_of<T>(request: &Request<T>, limit: Duration) -> Instant {
    let budget = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map_or(limit, |asked| asked.min(limit));
    Instant::now() + budget - (budget / 10).min(ANSWER_MARGIN)
}

/// `grpc-timeout` is an integer of at most 8 digits and a unit: H, M, S, m, u or n.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The validated request.
struct Ask {
    token: Secret,
    token_sha256: String,
    refresh_type: RefreshType,
    key: Option<String>,
}

pub async fn request(
    app: &Arc<App>,
    request: pb::RequestRefreshRequest,
    deadline: Instant,
) -> Result<pb::RequestRefreshResponse, AppError> {
    if request.link_token.trim().is_empty() {
        return Err(AppError::InvalidArgument("link_token is empty".into()));
    }
    if request.link_token.len() > MAX_TOKEN_LEN {
        return Err(AppError::InvalidArgument(format!(
            "link_token is {} bytes; a Fintoc link token is far shorter (at most {MAX_TOKEN_LEN} are accepted)",
            request.link_token.len()
        )));
    }
    let refresh_type = convert::refresh_type_from_pb(request.refresh_type).ok_or_else(|| {
        AppError::InvalidArgument(format!(
            "refresh_type {} is not a RefreshType (use REFRESH_TYPE_ONLY_LAST or REFRESH_TYPE_HISTORICAL)",
            request.refresh_type
        ))
    })?;
    if request.idempotency_key.len() > MAX_KEY_LEN {
        return Err(AppError::InvalidArgument(format!(
            "idempotency_key is {} bytes; at most {MAX_KEY_LEN} are allowed",
            request.idempotency_key.len()
        )));
    }
    let token = Secret::new(request.link_token);
    let ask = Ask {
        token_sha256: sha256_hex(token.expose()),
        token,
        refresh_type,
        key: Some(request.idempotency_key).filter(|k| !k.is_empty()),
    };
    // Its own task: if the caller hangs up mid-call, the intent is still recorded.
    let app = app.clone();
    tokio::spawn(async move { run(&app, ask, deadline).await })
        .await
        .map_err(|_| AppError::Store(store::StoreError::Panicked))?
}

async fn run(
    app: &App,
    ask: Ask,
    deadline: Instant,
) -> Result<pb::RequestRefreshResponse, AppError> {
    if let Some(answer) = replay(app, &ask).await? {
        return Ok(answer);
    }
    let _serialized = app.refresh.lock(&ask.token_sha256).await;
    // A caller with the same key may have finished while we waited.
    if let Some(answer) = replay(app, &ask).await? {
        return Ok(answer);
    }
    let sha = ask.token_sha256.clone();
    let known = app
        .store
        .read(move |c| links::link_by_token(c, &sha))
        .await?;
    if let Some(link) = known
        && let Some(answer) = local_answer(app, &ask, &link).await?
    {
        return Ok(answer);
    }

    let link = app
        .fintoc
        .get_link(&ask.token, deadline)
        .await
        .map_err(|e| upstream(e, "looking up the Link"))?;
    let mut accounts: Vec<String> = link
        .accounts
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.id)
        .collect();
    accounts.sort();
    accounts.dedup();
    {
        let (link_id, sha, accounts) =
            (link.id.clone(), ask.token_sha256.clone(), accounts.clone());
        app.store
            .write(move |tx| links::upsert_link(tx, &link_id, &sha, &accounts))
            .await?;
    }
    // First time this token is seen: the Link may still be known by its id.
    let link_id = link.id.clone();
    let known = app
        .store
        .read(move |c| links::link_by_id(c, &link_id))
        .await?;
    if let Some(known) = known
        && let Some(answer) = local_answer(app, &ask, &known).await?
    {
        return Ok(answer);
    }

    let mut flight = InFlightMark::set(&app.store, &link.id);
    let fintoc_key = fintoc_idempotency_key(&ask);
    let (intent, joined) = match app
        .fintoc
        .create_refresh_intent(&ask.token, ask.refresh_type, &fintoc_key, deadline)
        .await
    {
        Ok(intent) => (intent, false),
        Err(e) if e.code() == Some("refresh_intent_in_progress") => {
            (adopt(app, &ask, deadline).await?, true)
        }
        Err(e) if e.code() == Some("rate_limit_exceeded") => {
            return Err(cooldown(
                ask.refresh_type,
                cooldown_for(ask.refresh_type),
                String::new(),
            ));
        }
        Err(e) => return Err(upstream(e, "creating the refresh intent")),
    };
    let new = NewIntent {
        refresh_type: intent
            .refresh_type
            .as_deref()
            .and_then(|t| RefreshType::parse(t).ok())
            .unwrap_or(ask.refresh_type),
        created_at_ms: intent
            .created_at
            .as_deref()
            .and_then(parse_rfc3339_ms)
            .unwrap_or_else(|| app.config.clock.now_ms()),
        mfa_widget_token: intent
            .requires_mfa
            .and_then(|m| m.widget_token)
            .unwrap_or_default(),
        id: intent.id,
        link_id: link.id,
        accounts,
    };
    let in_flight = app.store.in_flight().clone();
    let (key, sha, kind) = (ask.key.clone(), ask.token_sha256.clone(), ask.refresh_type);
    let view = app
        .store
        .write(move |tx| {
            let view = store::register_intent(tx, &in_flight, &new)?;
            if let Some(key) = key {
                links::remember_key(tx, &key, &sha, kind, &view.id, joined)?;
            }
            Ok(view)
        })
        .await?;
    flight.disarm();
    tracing::info!(intent = %view.id, link = %view.link_id, joined, "refresh intent recorded");
    Ok(answer(&view, joined))
}

fn answer(view: &IntentView, joined_existing: bool) -> pb::RequestRefreshResponse {
    pb::RequestRefreshResponse {
        refresh_intent: Some(convert::refresh_intent(view)),
        joined_existing,
    }
}

/// The first answer given for this idempotency key, in the intent's current state.
async fn replay(app: &App, ask: &Ask) -> Result<Option<pb::RequestRefreshResponse>, AppError> {
    let Some(key) = ask.key.clone() else {
        return Ok(None);
    };
    let found = app
        .store
        .read(move |c| {
            let Some(record) = links::idempotency(c, &key)? else {
                return Ok(None);
            };
            let intent = store::get_intent(c, &record.refresh_intent_id)?;
            Ok(Some((record, intent)))
        })
        .await?;
    let Some((record, intent)) = found else {
        return Ok(None);
    };
    let expired = app.config.clock.now_ms() - record.created_at_ms > KEY_TTL.as_millis() as i64;
    if expired {
        return Ok(None);
    }
    if record.token_sha256 != ask.token_sha256 || record.refresh_type != ask.refresh_type.as_str() {
        return Err(AppError::InvalidArgument(
            "idempotency_key was already used with a different link_token or refresh_type".into(),
        ));
    }
    Ok(intent.map(|i| answer(&i, record.joined_existing)))
}

/// Joined, held back or in cooldown: answers that need no call to Fintoc.
async fn local_answer(
    app: &App,
    ask: &Ask,
    link: &KnownLink,
) -> Result<Option<pb::RequestRefreshResponse>, AppError> {
    let (id, kind) = (link.link_id.clone(), ask.refresh_type);
    let (pending, last) = app
        .store
        .read(move |c| {
            Ok((
                links::pending_intent(c, &id)?,
                links::last_success(c, &id, kind)?,
            ))
        })
        .await?;
    if let Some(view) = pending {
        if let Some(key) = ask.key.clone() {
            let (sha, intent) = (ask.token_sha256.clone(), view.id.clone());
            app.store
                .write(move |tx| links::remember_key(tx, &key, &sha, kind, &intent, true))
                .await?;
        }
        return Ok(Some(answer(&view, true)));
    }
    let now = app.config.clock.now_ms();
    if let Some(left) = hold_remaining(link.rejected_at_ms, app.config.rejected_hold, now) {
        return Err(AppError::CredentialsRejected(format!(
            "the bank rejected this Link's credentials; the Link must be reconnected through the Fintoc \
             widget (new refreshes are held back for another {} so retries cannot lock the user out)",
            crate::config::format_duration(Duration::from_secs(left.as_secs().max(1)))
        )));
    }
    if let Some((intent_id, completed_at)) = last
        && let Some(left) = cooldown_remaining(kind, Some(completed_at), now)
    {
        return Err(cooldown(kind, left, intent_id));
    }
    Ok(None)
}

/// Finds the intent Fintoc says is in progress for this Link.
async fn adopt(app: &App, ask: &Ask, deadline: Instant) -> Result<RefreshIntent, AppError> {
    let intents = app
        .fintoc
        .list_refresh_intents(&ask.token, deadline)
        .await
        .map_err(|e| upstream(e, "finding the refresh intent already in progress"))?;
    intents
        .into_iter()
        .find(|i| !matches!(i.status.as_deref(), Some("succeeded" | "failed" | "rejected")))
        .ok_or_else(|| {
            AppError::Unavailable(
                "Fintoc says a refresh of this Link is in progress but lists none; try again shortly".into(),
            )
        })
}

/// The key sent to Fintoc: derived from the caller's key, so a retry after a crash replays
/// Fintoc's first answer; random otherwise.
fn fintoc_idempotency_key(ask: &Ask) -> String {
    match &ask.key {
        Some(key) => format!(
            "fintoc-refresh-{}",
            &sha256_hex(&format!(
                "{key}\n{}\n{}",
                ask.token_sha256, ask.refresh_type
            ))[..48]
        ),
        None => uuid::Uuid::new_v4().to_string(),
    }
}

/// Marks a Link's create call as in flight; unless disarmed (the intent got registered,
/// which clears it in the same commit), dropping it clears the mark and settles held events.
struct InFlightMark {
    store: Store,
    link_id: String,
    armed: bool,
}

impl InFlightMark {
    fn set(store: &Store, link_id: &str) -> InFlightMark {
        store
            .in_flight()
            .lock()
            .expect("in-flight lock")
            .insert(link_id.to_owned());
        InFlightMark {
            store: store.clone(),
            link_id: link_id.to_owned(),
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for InFlightMark {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (store, link_id) = (self.store.clone(), std::mem::take(&mut self.link_id));
        tokio::spawn(async move {
            let in_flight: InFlight = store.in_flight().clone();
            let settled = store
                .write(move |tx| {
                    in_flight.lock().expect("in-flight lock").remove(&link_id);
                    store::process_held(tx, &in_flight)
                })
                .await;
            if let Err(e) = settled {
                tracing::error!(error = %e, "could not settle events held for a failed create");
            }
        });
    }
}

/// Fintoc's failure as a status a caller can act on. Fintoc's own message is not passed on
/// (it may quote the request); the code is.
fn upstream(err: FintocError, doing: &str) -> AppError {
    match &err {
        FintocError::Api { status, error_type, code, .. } => match (code.as_str(), *status) {
            ("rejected_refresh_intent", _) => AppError::CredentialsRejected(
                "the bank rejected this Link's credentials (Fintoc: rejected_refresh_intent); the Link must be \
                 reconnected through the Fintoc widget before it can be refreshed"
                    .into(),
            ),
            ("invalid_link_token" | "missing_resource" | "link_not_found", _) | (_, 404) => AppError::NotFound(
                format!("Fintoc does not know this link token ({code}); it may have been deleted, or belong to the other mode (live vs test)"),
            ),
            ("invalid_api_key", _) | (_, 401) => {
                tracing::error!(status, code, "Fintoc refused this service's API key while {doing}: check FINTOC_SECRET_KEY");
                AppError::Upstream(
                    "Fintoc refused this service's API key; an operator must check FINTOC_SECRET_KEY".into(),
                )
            }
            _ if error_type == "authentication_error" => {
                tracing::error!(status, code, "Fintoc refused this service's credentials while {doing}");
                AppError::Upstream(
                    "Fintoc refused this service's API key; an operator must check FINTOC_SECRET_KEY".into(),
                )
            }
            (_, 402 | 403) => {
                tracing::error!(status, code, "Fintoc refused the request while {doing}");
                AppError::Upstream(format!(
                    "Fintoc refused the request while {doing} (HTTP {status} {code}); the organization may lack the on-demand refresh policy"
                ))
            }
            (_, 429) | (_, 500..) => AppError::Unavailable(format!(
                "Fintoc kept failing while {doing} (HTTP {status}{}); try again later",
                if code.is_empty() { String::new() } else { format!(" {code}") }
            )),
            _ => {
                tracing::error!(status, code, error_type, "Fintoc rejected our request while {doing}");
                AppError::Upstream(format!("Fintoc rejected the request while {doing} (HTTP {status} {code})"))
            }
        },
        FintocError::Unreachable(why) => AppError::Unavailable(format!("Fintoc is unavailable while {doing}: {why}")),
        FintocError::Malformed(why) => {
            AppError::Unavailable(format!("Fintoc's answer while {doing} could not be read: {why}; try again later"))
        }
        FintocError::TypeMismatch { .. } => {
            tracing::error!(error = %err, "Fintoc's answer does not match the request while {doing}");
            AppError::Upstream(format!("{err}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("S"), None);
        assert_eq!(parse_grpc_timeout("123456789S"), None);
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

    fn api(status: u16, code: &str) -> FintocError {
        FintocError::Api {
            status,
            error_type: "invalid_request_error".into(),
            code: code.into(),
            message: "secret-bearing text".into(),
        }
    }

    #[test]
    fn upstream_failures_map_to_precise_codes() {
        use tonic::Code;
        let table = [
            (
                api(400, "rejected_refresh_intent"),
                Code::FailedPrecondition,
            ),
            (api(404, "invalid_link_token"), Code::NotFound),
            (api(400, "invalid_link_token"), Code::NotFound),
            (api(401, "invalid_api_key"), Code::Internal),
            (api(403, "forbidden"), Code::Internal),
            (api(503, ""), Code::Unavailable),
            (api(429, "too_many_requests"), Code::Unavailable),
            (api(400, "missing_parameter"), Code::Internal),
            (
                FintocError::Unreachable("connection refused".into()),
                Code::Unavailable,
            ),
            (
                FintocError::Malformed("not valid JSON".into()),
                Code::Unavailable,
            ),
        ];
        for (err, code) in table {
            let mapped = upstream(err.clone(), "testing");
            assert_eq!(mapped.code(), code, "{err:?}");
            assert!(!mapped.to_string().contains("secret-bearing"), "{mapped}");
        }
    }

    #[test]
    fn derived_fintoc_keys_are_stable_and_bounded() {
        let ask = |key: Option<&str>| Ask {
            token: Secret::new("t"),
            token_sha256: sha256_hex("t"),
            refresh_type: RefreshType::OnlyLast,
            key: key.map(str::to_owned),
        };
        assert_eq!(
            fintoc_idempotency_key(&ask(Some("k"))),
            fintoc_idempotency_key(&ask(Some("k")))
        );
        assert_ne!(
            fintoc_idempotency_key(&ask(Some("k"))),
            fintoc_idempotency_key(&ask(Some("j")))
        );
        assert_ne!(
            fintoc_idempotency_key(&ask(None)),
            fintoc_idempotency_key(&ask(None))
        );
        assert!(fintoc_idempotency_key(&ask(Some(&"x".repeat(255)))).len() <= 255);
    }
}
