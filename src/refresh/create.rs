//! The part of RequestRefresh that asks Fintoc: resolve the Link to the accounts an intent
//! will wait for, create the intent (or adopt the one Fintoc says is in progress), and
//! record it. Fintoc's own cooldown refusal is answered here too, since only Fintoc's
//! answer reveals it.

use std::time::Instant;

use super::{Ask, Outcome, keys};
use crate::app::App;
use crate::clock::parse_rfc3339_ms;
use crate::domain::policy::{cooldown_for, cooldown_remaining};
use crate::domain::{NewIntent, RefreshType};
use crate::error::{AppError, fintoc_cooldown};
use crate::fintoc::client::RefreshIntent;

/// A Link as Fintoc describes it, reduced to what an intent needs.
pub(super) struct Resolved {
    pub id: String,
    /// Sorted and without duplicates; never empty.
    pub accounts: Vec<String>,
}

/// Looks the Link up at Fintoc. An inactive Link, or one without accounts, is refused:
/// Fintoc would not refresh it, or no result would ever come.
pub(super) async fn resolve(app: &App, ask: &Ask, deadline: Instant) -> Result<Resolved, AppError> {
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
    Ok(Resolved {
        id: link.id,
        accounts,
    })
}

/// Creates the intent at Fintoc (or adopts the one in progress) and records it. The create
/// is marked in flight first, so results that beat Fintoc's answer are held, not lost.
pub(super) async fn create(
    app: &App,
    ask: &Ask,
    link: Resolved,
    deadline: Instant,
) -> Result<Outcome, AppError> {
    let create = app.store.begin_create(&link.id).await?;
    let mut fintoc_keys = keys::fintoc_keys(app, ask).await?;
    let spent_before = fintoc_keys.spent();
    let created = app
        .fintoc
        .create_refresh_intent(&ask.token, ask.refresh_type, &mut fintoc_keys, deadline)
        .await;
    keys::remember_spent(app, ask, &fintoc_keys, spent_before).await;
    let (intent, joined) = match created {
        Ok(intent) => (intent, false),
        Err(e) if e.code() == Some("refresh_intent_in_progress") => {
            (adopt(app, ask, deadline).await?, true)
        }
        Err(e) if e.code() == Some("rate_limit_exceeded") => {
            return Err(fintoc_says_cooldown(app, ask, &link.id).await?);
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
        accounts: link.accounts,
    };
    let key = keys::record(ask, &new.id, joined);
    let view = create.register(new, key).await?;
    tracing::info!(intent = %view.id, link = %view.link_id, joined, "refresh intent recorded");
    Ok(Outcome {
        intent: view,
        joined_existing: joined,
    })
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
