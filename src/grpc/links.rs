//! GetLink and ListLinks at the edge: validate, run `crate::refresh::links`, convert. Page
//! tokens are opaque to callers (the hex of the last Link id of the page), and a token this
//! service did not give out is refused.

use super::{check_id, convert};
use crate::app::App;
use crate::error::AppError;
use crate::pb;
use crate::refresh::custody;
use crate::refresh::links::{self, DEFAULT_PAGE, Eligibility, LinkView, MAX_PAGE};

pub async fn get_link(
    app: &App,
    request: pb::GetLinkRequest,
) -> Result<pb::GetLinkResponse, AppError> {
    check_id("link_id", &request.link_id)?;
    let (view, as_of) = links::get_link(app, request.link_id).await?;
    Ok(pb::GetLinkResponse {
        link: Some(link_state(view)),
        as_of_sequence: as_of,
    })
}

pub async fn list_links(
    app: &App,
    request: pb::ListLinksRequest,
) -> Result<pb::ListLinksResponse, AppError> {
    let page_size = page_size(request.page_size)?;
    let after = after_token(&request.page_token)?;
    let (views, next, as_of) = links::list_links(app, after, page_size).await?;
    Ok(pb::ListLinksResponse {
        links: views.into_iter().map(link_state).collect(),
        next_page_token: next
            .map(|id| hex::encode(id.as_bytes()))
            .unwrap_or_default(),
        as_of_sequence: as_of,
    })
}

/// RegisterLink: keep a Link's token without refreshing it.
pub async fn register_link(
    app: &App,
    request: pb::RegisterLinkRequest,
    deadline: std::time::Instant,
) -> Result<pb::RegisterLinkResponse, AppError> {
    let token = super::refresh::checked_token(request.link_token)?;
    let view = custody::register(app, token, deadline).await?;
    Ok(pb::RegisterLinkResponse {
        link: Some(link_state(view)),
    })
}

/// ForgetLink: drop a Link's token and stored movements.
pub async fn forget_link(
    app: &App,
    request: pb::ForgetLinkRequest,
) -> Result<pb::ForgetLinkResponse, AppError> {
    check_id("link_id", &request.link_id)?;
    custody::forget(app, request.link_id).await?;
    Ok(pb::ForgetLinkResponse {})
}

/// ListMovements: an account's stored movements, a page at a time. The page token is the
/// hex of the last movement's (post_date, id).
pub async fn list_movements(
    app: &App,
    request: pb::ListMovementsRequest,
) -> Result<pb::ListMovementsResponse, AppError> {
    check_id("account_id", &request.account_id)?;
    let page_size = page_size(request.page_size)?;
    let after = if request.page_token.is_empty() {
        None
    } else {
        Some(movements_token(&request.page_token)?)
    };
    let page = custody::list_movements(app, request.account_id, after, page_size).await?;
    let next = match (page.more, page.movements.last()) {
        (true, Some(last)) => hex::encode(format!("{}\0{}", last.post_date, last.id)),
        _ => String::new(),
    };
    Ok(pb::ListMovementsResponse {
        movements: page.movements.iter().map(convert::movement).collect(),
        next_page_token: next,
        as_of_sequence: page.as_of_sequence.max(0) as u64,
    })
}

fn movements_token(token: &str) -> Result<(String, String), AppError> {
    hex::decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            let (date, id) = text.split_once('\0')?;
            (!id.is_empty()).then(|| (date.to_owned(), id.to_owned()))
        })
        .ok_or_else(|| {
            AppError::InvalidArgument(
                "page_token is not one this service gave out; start again with an empty one".into(),
            )
        })
}

/// A page size as asked: 1 to MAX_PAGE, 0 meaning the default.
fn page_size(asked: u32) -> Result<u32, AppError> {
    match asked {
        0 => Ok(DEFAULT_PAGE),
        n if n <= MAX_PAGE => Ok(n),
        n => Err(AppError::InvalidArgument(format!(
            "page_size is {n}; it must be 1 to {MAX_PAGE} (0 means {DEFAULT_PAGE})"
        ))),
    }
}

/// The Link id a page token continues after (`""` for the first page).
fn after_token(token: &str) -> Result<String, AppError> {
    if token.is_empty() {
        return Ok(String::new());
    }
    hex::decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .filter(|id| check_id("page_token", id).is_ok())
        .ok_or_else(|| {
            AppError::InvalidArgument(
                "page_token is not one this service gave out; start again with an empty one".into(),
            )
        })
}

pub fn link_state(view: LinkView) -> pb::LinkState {
    let snapshot = view.snapshot;
    pb::LinkState {
        link_token_kept: snapshot.token_kept,
        link_id: snapshot.link.link_id,
        accounts: snapshot
            .accounts
            .into_iter()
            .map(|(account_id, last)| pb::AccountState {
                account_id,
                last_sequence: last.as_ref().map_or(0, |r| r.sequence.max(0) as u64),
                last_result: last.as_ref().map(convert::account_result),
            })
            .collect(),
        pending_intent: snapshot
            .only_last
            .pending
            .as_ref()
            .map(convert::refresh_intent),
        only_last: Some(eligibility(view.only_last)),
        historical: Some(eligibility(view.historical)),
    }
}

fn eligibility(e: Eligibility) -> pb::Eligibility {
    pb::Eligibility {
        allowed: e.allowed,
        next_allowed_at: e.next_allowed_at_ms.map(convert::timestamp),
        reason: e.reason.to_owned(),
    }
}
