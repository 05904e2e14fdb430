//! A Link's state, to re-sync from (GetLink, ListLinks): each account's latest retained
//! result, the pending intent, and whether a refresh of each type may be asked for now.
//! Eligibility is not a second copy of the rules: it is what [`local::decide`] — the
//! function RequestRefresh answers by — says, with the same reasons and times.
//!
//! Consistency: `as_of_sequence` is the hub's high water read *before* the store: every
//! result up to it was committed and handed out, so the read that follows sees it. Watching
//! after it therefore misses nothing (it may repeat a result the state already showed;
//! sequences tell them apart). The same holds on every replica: the hub of each starts
//! where its log tail is.

use std::time::Duration;

use super::local::{self, Local};
use crate::app::App;
use crate::clock::{Millis, millis};
use crate::domain::RefreshType;
use crate::error::{AppError, reason};
use crate::store::{KnownLink, LinkSnapshot, LinkState, LinksFrom};

/// The largest page ListLinks returns, and the one it returns when none is asked for.
pub const MAX_PAGE: u32 = 500;
pub const DEFAULT_PAGE: u32 = 100;

/// Whether RequestRefresh would ask Fintoc for a refresh of one type now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eligibility {
    pub allowed: bool,
    /// When a cooldown or a credentials hold ends.
    pub next_allowed_at_ms: Option<Millis>,
    /// `REFRESH_COOLDOWN`, `CREDENTIALS_REJECTED` or `IN_PROGRESS`; empty when allowed.
    pub reason: &'static str,
}

/// A Link as GetLink and ListLinks show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkView {
    pub snapshot: LinkSnapshot,
    pub only_last: Eligibility,
    pub historical: Eligibility,
}

/// One Link's state and the sequence it is current to; `NotFound` for a Link never seen.
pub async fn get_link(app: &App, link_id: String) -> Result<(LinkView, u64), AppError> {
    let as_of = app.hub.high_water();
    let found = app
        .store
        .link_snapshots(LinksFrom::One(link_id.clone()), 1)
        .await?;
    let Some(snapshot) = found.into_iter().next() else {
        return Err(AppError::NotFound(format!(
            "link {link_id:?} is not known to this service"
        )));
    };
    Ok((view(app, snapshot), as_of.max(0) as u64))
}

/// One page of Links in id order, after the Link `after` (`""`: from the first); the id to
/// continue after when there are more; and the sequence the page is current to.
pub async fn list_links(
    app: &App,
    after: String,
    page_size: u32,
) -> Result<(Vec<LinkView>, Option<String>, u64), AppError> {
    let as_of = app.hub.high_water();
    // One more than the page, to know whether another follows.
    let limit = i64::from(page_size) + 1;
    let mut found = app
        .store
        .link_snapshots(LinksFrom::After(after), limit)
        .await?;
    let more = found.len() > page_size as usize;
    found.truncate(page_size as usize);
    let next = more.then(|| found.last().map(|s| s.link.link_id.clone()));
    let views = found.into_iter().map(|s| view(app, s)).collect();
    Ok((views, next.flatten(), as_of.max(0) as u64))
}

fn view(app: &App, snapshot: LinkSnapshot) -> LinkView {
    let now = app.config.clock.now_ms();
    let hold = app.config.rejected_hold;
    let of = |kind, state: &LinkState| eligibility(kind, state, &snapshot.link, hold, now);
    LinkView {
        only_last: of(RefreshType::OnlyLast, &snapshot.only_last),
        historical: of(RefreshType::Historical, &snapshot.historical),
        snapshot,
    }
}

/// What [`local::decide`] says of a refresh of `kind` now, as an eligibility.
fn eligibility(
    kind: RefreshType,
    state: &LinkState,
    link: &KnownLink,
    hold: Duration,
    now_ms: Millis,
) -> Eligibility {
    let refused = |reason, left: Option<Duration>| Eligibility {
        allowed: false,
        next_allowed_at_ms: left.map(|l| now_ms + millis(l)),
        reason,
    };
    match local::decide(kind, state.clone(), link.rejected_at_ms, hold, now_ms) {
        None => Eligibility {
            allowed: true,
            next_allowed_at_ms: None,
            reason: "",
        },
        Some(Local::Join(_)) => refused(reason::IN_PROGRESS, None),
        Some(Local::Held { left }) => refused(reason::CREDENTIALS_REJECTED, Some(left)),
        Some(Local::Cooldown { left, .. }) => refused(reason::REFRESH_COOLDOWN, Some(left)),
    }
}
