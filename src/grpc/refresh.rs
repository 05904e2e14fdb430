//! RequestRefresh: create a Fintoc refresh intent for a Link, or answer without calling Fintoc
//! when the answer is already known here.
//!
//! In order: a repeated idempotency key returns its first answer (in the intent's current
//! state); a Link with a pending intent is joined (single flight); a Link whose credentials
//! were rejected is held back for `--rejected-hold`; a Link refreshed successfully too
//! recently is in cooldown. Only then is Fintoc asked: the Link is resolved (its accounts are
//! what the intent waits for; an inactive Link, or one without accounts, has nothing to
//! refresh and is refused) and the intent created with an `Idempotency-Key` from a series
//! that moves past every key Fintoc has answered (see `fintoc::client::IdempotencyKeys`).
//! If Fintoc says an intent is already in progress (created elsewhere), that one is adopted
//! and joined; if it says the Link is in cooldown, the answer names the last success known
//! here.
//!
//! Requests for the same link token are serialized in-process, so concurrent callers make
//! one upstream POST. The work runs in its own task: a caller that hangs up does not leave a
//! created intent unrecorded. While the create call is in flight, account events for the Link
//! are held and matched once the intent is known (`domain::correlate`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::Request;

use super::convert;
use crate::app::App;
use crate::clock::{millis, parse_rfc3339_ms};
use crate::domain::policy::{KEY_TTL, cooldown_for, cooldown_remaining, hold_remaining};
use crate::domain::{IntentView, NewIntent, RefreshType};
use crate::error::{AppError, cooldown, fintoc_cooldown};
use crate::fintoc::client::{IdempotencyKeys, RefreshIntent};
use crate::pb;
use crate::secret::{Secret, sha256_hex};
use crate::store::{KeyRecord, KnownLink};

/// Kept back from the caller's deadline so the answer (an UNAVAILABLE that says why, say)
/// reaches the caller before its own timer gives up: a tenth of it, at most this much.
const ANSWER_MARGIN: Duration = Duration::from_millis(250);
/// Fintoc's limit on idempotency keys.
const MAX_KEY_LEN: usize = 255;
/// Link tokens are ~50 bytes; anything this long is not one (and is never echoed).
const MAX_TOKEN_LEN: usize = 1024;

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

impl Ask {
    /// What to remember under the caller's key (if it gave one) for this answer.
    fn key_record(&self, refresh_intent_id: &str, joined_existing: bool) -> Option<KeyRecord> {
        self.key.as_ref().map(|key| KeyRecord {
            key: key.clone(),
            token_sha256: self.token_sha256.clone(),
            refresh_type: self.refresh_type,
            refresh_intent_id: refresh_intent_id.to_owned(),
            joined_existing,
        })
    }
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
        .map_err(|e| AppError::Internal {
            what: "RequestRefresh task",
            detail: e.to_string(),
        })?
}

async fn run(
    app: &App,
    ask: Ask,
    deadline: Instant,
) -> Result<pb::RequestRefreshResponse, AppError> {
    if let Some(answer) = replay(app, &ask).await? {
        return Ok(answer);
    }
    let _turn = app.store.link_turn(&ask.token_sha256, deadline).await?;
    // A caller with the same key may have finished while we waited.
    if let Some(answer) = replay(app, &ask).await? {
        return Ok(answer);
    }
    let known = app.store.link_by_token(ask.token_sha256.clone()).await?;
    if let Some(link) = known
        && let Some(answer) = local_answer(app, &ask, &link).await?
    {
        return Ok(answer);
    }

    let link = app
        .fintoc
        .get_link(&ask.token, deadline)
        .await
        .map_err(|e| e.into_app_error("looking up the Link"))?;
    if !link.active {
        return Err(AppError::NothingToRefresh {
            reason: "LINK_INACTIVE",
            message: format!(
                "Link {} is inactive at Fintoc (active: false), and Fintoc does not refresh \
                 inactive Links; it must be reactivated (reconnected) first",
                link.id
            ),
        });
    }
    let listed = match link.accounts {
        Some(accounts) => accounts,
        // Not included in the Link's answer: Fintoc lists them on their own.
        None => app
            .fintoc
            .list_accounts(&ask.token, deadline)
            .await
            .map_err(|e| e.into_app_error("listing the Link's accounts"))?,
    };
    let mut accounts: Vec<String> = listed.into_iter().map(|a| a.id).collect();
    accounts.sort();
    accounts.dedup();
    if accounts.is_empty() {
        // A refresh would have no account to report on: no result would ever come.
        return Err(AppError::NothingToRefresh {
            reason: "LINK_WITHOUT_ACCOUNTS",
            message: format!(
                "Link {} has no accounts at Fintoc, so there is nothing to refresh",
                link.id
            ),
        });
    }
    app.store
        .upsert_link(link.id.clone(), ask.token_sha256.clone(), accounts.clone())
        .await?;
    // First time this token is seen: the Link may still be known by its id.
    let known = app.store.link_by_id(link.id.clone()).await?;
    if let Some(known) = known
        && let Some(answer) = local_answer(app, &ask, &known).await?
    {
        return Ok(answer);
    }

    let create = app.store.begin_create(&link.id).await?;
    let mut keys = fintoc_keys(app, &ask).await?;
    let spent_before = keys.spent();
    let created = app
        .fintoc
        .create_refresh_intent(&ask.token, ask.refresh_type, &mut keys, deadline)
        .await;
    if let Some(caller_key) = &ask.key
        && keys.spent() > spent_before
    {
        // Fintoc answered some of this caller key's Fintoc keys: a later call with the same
        // caller key starts after them, instead of being replayed their answers for a day.
        let kept = app
            .store
            .remember_fintoc_keys_spent(caller_key.clone(), keys.spent())
            .await;
        if let Err(e) = kept {
            // Not fatal: the series is deterministic, so a later call replays the answered
            // keys (spending them again) until it reaches a fresh one.
            tracing::warn!(error = %e, "could not record the Fintoc keys spent");
        }
    }
    let (intent, joined) = match created {
        Ok(intent) => (intent, false),
        Err(e) if e.code() == Some("refresh_intent_in_progress") => {
            (adopt(app, &ask, deadline).await?, true)
        }
        Err(e) if e.code() == Some("rate_limit_exceeded") => {
            return Err(fintoc_says_cooldown(app, &ask, &link.id).await?);
        }
        Err(e) => return Err(e.into_app_error("creating the refresh intent")),
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
    let key = ask.key_record(&new.id, joined);
    let view = create.register(new, key).await?;
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
    let Some((record, intent)) = app.store.idempotency(key).await? else {
        return Ok(None);
    };
    let expired = app.config.clock.now_ms() - record.created_at_ms > millis(KEY_TTL);
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
    let kind = ask.refresh_type;
    let state = app.store.link_state(link.link_id.clone(), kind).await?;
    if let Some(view) = state.pending {
        if let Some(key) = ask.key_record(&view.id, true) {
            app.store.remember_key(key).await?;
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
    if let Some((intent_id, completed_at)) = state.last_success
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
        .map_err(|e| e.into_app_error("finding the refresh intent already in progress"))?;
    intents
        .into_iter()
        .find(|i| !matches!(i.status.as_deref(), Some("succeeded" | "failed" | "rejected")))
        .ok_or_else(|| {
            AppError::Unavailable(
                "Fintoc says a refresh of this Link is in progress but lists none; try again shortly".into(),
            )
        })
}

/// Fintoc refused with `rate_limit_exceeded`: the cooldown answer, naming the last success
/// known here for this Link and type, with the time its completion leaves if that is known
/// (else Fintoc's full spacing: Fintoc knows of a success we do not, or counts differently).
async fn fintoc_says_cooldown(app: &App, ask: &Ask, link_id: &str) -> Result<AppError, AppError> {
    let kind = ask.refresh_type;
    let state = app.store.link_state(link_id.to_owned(), kind).await?;
    let now = app.config.clock.now_ms();
    Ok(match state.last_success {
        Some((intent_id, completed_at)) => {
            let left = cooldown_remaining(kind, Some(completed_at), now)
                .unwrap_or_else(|| cooldown_for(kind));
            fintoc_cooldown(kind, left, intent_id)
        }
        None => fintoc_cooldown(kind, cooldown_for(kind), String::new()),
    })
}

/// The `Idempotency-Key` series sent to Fintoc. With a caller key it is derived from it
/// (a retry after a crash, or of a call whose outcome was unknown, replays Fintoc's answer
/// rather than creating a second intent), past the keys Fintoc already answered for it;
/// without one it is random.
async fn fintoc_keys(app: &App, ask: &Ask) -> Result<IdempotencyKeys, AppError> {
    Ok(match &ask.key {
        Some(key) => {
            let spent = app.store.fintoc_keys_spent(key.clone()).await?;
            IdempotencyKeys::new(fintoc_key_base(ask), spent)
        }
        None => IdempotencyKeys::new(uuid::Uuid::new_v4().to_string(), 0),
    })
}

/// The first key of a caller key's series: a digest of the caller key, the token and the
/// type (so a key reused elsewhere can never collide), short enough for Fintoc's 255.
fn fintoc_key_base(ask: &Ask) -> String {
    let key = ask.key.as_deref().unwrap_or_default();
    format!(
        "fintoc-refresh-{}",
        &sha256_hex(&format!(
            "{key}\n{}\n{}",
            ask.token_sha256, ask.refresh_type
        ))[..48]
    )
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

    #[test]
    fn derived_fintoc_keys_are_stable_and_bounded() {
        let ask = |key: Option<&str>| Ask {
            token: Secret::new("t"),
            token_sha256: sha256_hex("t"),
            refresh_type: RefreshType::OnlyLast,
            key: key.map(str::to_owned),
        };
        assert_eq!(
            fintoc_key_base(&ask(Some("k"))),
            fintoc_key_base(&ask(Some("k")))
        );
        assert_ne!(
            fintoc_key_base(&ask(Some("k"))),
            fintoc_key_base(&ask(Some("j")))
        );
        // The series: the base first, then a new key for each one Fintoc answered.
        let base = fintoc_key_base(&ask(Some(&"x".repeat(255))));
        assert_eq!(IdempotencyKeys::new(base.clone(), 0).current(), base);
        let later = IdempotencyKeys::new(base.clone(), 12).current();
        assert_eq!(later, format!("{base}-12"));
        assert!(later.len() <= 255);
    }
}
