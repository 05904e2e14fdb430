//! The answers known without calling Fintoc: a repeated idempotency key is replayed, and a
//! known Link is joined (its intent is pending), held back (its credentials were rejected)
//! or in cooldown (refreshed successfully too recently).
//!
//! [`decide`] is the one place that orders join, hold and cooldown; it is pure, so anything
//! that must say what RequestRefresh *would* answer (a Link's eligibility) asks it rather
//! than repeating the rules. A replay is decided apart, before any Link is looked up: it is
//! keyed by the caller's key, not the Link, and wins over everything else.

use std::time::Duration;

use super::{Ask, Outcome, keys};
use crate::app::App;
use crate::clock::{Millis, millis};
use crate::domain::policy::{KEY_TTL, cooldown_remaining, hold_remaining};
use crate::domain::{IntentView, RefreshType};
use crate::error::{AppError, cooldown};
use crate::store::{KnownLink, LinkState};

/// What a known Link's state answers, before Fintoc is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Local {
    /// An intent of the Link is pending: join it (single flight).
    Join(IntentView),
    /// The bank rejected the Link's credentials: held back for this much longer.
    Held { left: Duration },
    /// A refresh of this type succeeded too recently: `intent_id` names it.
    Cooldown { left: Duration, intent_id: String },
}

/// Join, hold or cooldown, in that order, or `None` when Fintoc may be asked. A pending
/// intent is joined even when held or cooling down: the caller gets the refresh it wants.
pub fn decide(
    kind: RefreshType,
    state: LinkState,
    rejected_at_ms: Option<Millis>,
    rejected_hold: Duration,
    now_ms: Millis,
) -> Option<Local> {
    if let Some(view) = state.pending {
        return Some(Local::Join(view));
    }
    if let Some(left) = hold_remaining(rejected_at_ms, rejected_hold, now_ms) {
        return Some(Local::Held { left });
    }
    let (intent_id, completed_at) = state.last_success?;
    let left = cooldown_remaining(kind, Some(completed_at), now_ms)?;
    Some(Local::Cooldown { left, intent_id })
}

/// The first answer given for this idempotency key, in the intent's current state.
pub(super) async fn replay(app: &App, ask: &Ask) -> Result<Option<Outcome>, AppError> {
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
    Ok(intent.map(|intent| Outcome {
        intent,
        joined_existing: record.joined_existing,
    }))
}

/// Joined, held back or in cooldown: the answer for a known Link, if it needs no call to
/// Fintoc. A join is remembered under the caller's key; a hold or cooldown is an error and
/// is not (a retry after it ends must reach Fintoc).
pub(super) async fn answer(
    app: &App,
    ask: &Ask,
    link: &KnownLink,
) -> Result<Option<Outcome>, AppError> {
    let kind = ask.refresh_type;
    let state = app.store.link_state(link.link_id.clone(), kind).await?;
    let now = app.config.clock.now_ms();
    match decide(
        kind,
        state,
        link.rejected_at_ms,
        app.config.rejected_hold,
        now,
    ) {
        None => Ok(None),
        Some(Local::Join(intent)) => {
            if let Some(key) = keys::record(ask, &intent.id, true) {
                app.store.remember_key(key).await?;
            }
            Ok(Some(Outcome {
                intent,
                joined_existing: true,
            }))
        }
        Some(Local::Held { left }) => Err(AppError::CredentialsRejected(format!(
            "the bank rejected this Link's credentials; the Link must be reconnected through the Fintoc \
             widget (new refreshes are held back for another {} so retries cannot lock the user out)",
            crate::config::format_duration(Duration::from_secs(left.as_secs().max(1)))
        ))),
        Some(Local::Cooldown { left, intent_id }) => Err(cooldown(kind, left, intent_id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::IntentStatus;

    const T: Millis = 1_700_000_000_000;
    const MIN: Millis = 60_000;
    const HOLD: Duration = Duration::from_secs(3600);

    fn pending() -> IntentView {
        IntentView {
            id: "ri_pending".into(),
            link_id: "link_1".into(),
            refresh_type: RefreshType::OnlyLast,
            status: IntentStatus::Pending,
            mfa_widget_token: String::new(),
            created_at_ms: T,
            completed_at_ms: None,
            completed_sequence: None,
            accounts: Vec::new(),
        }
    }

    fn state(pending: Option<IntentView>, success_at: Option<Millis>) -> LinkState {
        LinkState {
            pending,
            last_success: success_at.map(|at| ("ri_done".to_owned(), at)),
        }
    }

    /// The asked type, the Link's state, when its credentials were rejected, now: the answer.
    type Case = (
        RefreshType,
        LinkState,
        Option<Millis>,
        Millis,
        Option<Local>,
    );

    #[test]
    fn join_then_hold_then_cooldown() {
        use RefreshType::{Historical, OnlyLast};
        let cool = |left_s: u64| {
            Some(Local::Cooldown {
                left: Duration::from_secs(left_s),
                intent_id: "ri_done".into(),
            })
        };
        let held = |left_s: u64| {
            Some(Local::Held {
                left: Duration::from_secs(left_s),
            })
        };
        #[rustfmt::skip]
        let table: &[Case] = &[
            // Nothing known against it: Fintoc is asked.
            (OnlyLast, state(None, None), None, T, None),
            // A pending intent is joined, whatever else holds.
            (OnlyLast, state(Some(pending()), Some(T)), Some(T), T, Some(Local::Join(pending()))),
            // The hold comes before the cooldown, and ends.
            (OnlyLast, state(None, Some(T)), Some(T), T + MIN, held(59 * 60)),
            (OnlyLast, state(None, None), Some(T), T + 60 * MIN, None),
            // The cooldown is per type, and ends.
            (OnlyLast, state(None, Some(T)), None, T + MIN, cool(4 * 60)),
            (OnlyLast, state(None, Some(T)), None, T + 5 * MIN, None),
            (Historical, state(None, Some(T)), None, T + 5 * MIN, cool(55 * 60)),
        ];
        for (kind, state, rejected_at, now, want) in table {
            let got = decide(*kind, state.clone(), *rejected_at, HOLD, *now);
            assert_eq!(
                &got, want,
                "{kind:?} {state:?} rejected {rejected_at:?} now {now}"
            );
        }
    }
}
