//! Keeping Link tokens (CONTRACT.md §7): sealed with the first key of LINK_TOKEN_KEYS, the
//! Link id bound in (`crate::custody`), only when a caller asks — RequestRefresh with
//! keep_link_token, or RegisterLink — and dropped on ForgetLink. The movements of a kept
//! Link's results are fetched and pushed (`crate::fetch`).

use std::time::Instant;

use super::links::{self, LinkView};
use super::{Ask, create};
use crate::app::App;
use crate::custody::Sealed;
use crate::domain::RefreshType;
use crate::error::AppError;
use crate::secret::Secret;
use crate::store::{MovementsPage, SealedToken};

/// The store's form of a sealed token.
pub fn stored(sealed: Sealed) -> SealedToken {
    SealedToken {
        key_id: sealed.key_id,
        nonce: sealed.nonce,
        ciphertext: sealed.ciphertext,
    }
}

/// A stored token as `crate::custody` opens it.
pub fn unsealed(token: &SealedToken) -> Sealed {
    Sealed {
        key_id: token.key_id.clone(),
        nonce: token.nonce.clone(),
        ciphertext: token.ciphertext.clone(),
    }
}

/// Seals `token` for `link_id` and keeps it, given now (retention counts from here).
pub async fn keep(app: &App, link_id: &str, token: &Secret) -> Result<(), AppError> {
    let keys = app
        .config
        .link_token_keys
        .as_ref()
        .ok_or(AppError::MovementsDisabled("keep Link tokens"))?;
    let sealed = stored(keys.seal(link_id, token));
    let now = app.config.clock.now_ms();
    app.store
        .keep_token(link_id.to_owned(), sealed, now)
        .await?;
    Ok(())
}

/// RegisterLink: the Link is looked up at Fintoc (which proves the token and names the
/// accounts), recorded, and its token kept; its state comes back.
pub async fn register(app: &App, token: Secret, deadline: Instant) -> Result<LinkView, AppError> {
    if app.config.link_token_keys.is_none() {
        return Err(AppError::MovementsDisabled("register Links"));
    }
    let ask = Ask::new(token, RefreshType::OnlyLast, None);
    let link = create::resolve(app, &ask, deadline).await?;
    app.store
        .upsert_link(
            link.id.clone(),
            ask.token_sha256.clone(),
            link.accounts.clone(),
        )
        .await?;
    keep(app, &link.id, &ask.token).await?;
    Ok(links::get_link(app, link.id).await?.0)
}

/// ForgetLink: the token and the stored movements go; NOT_FOUND for a Link never seen.
pub async fn forget(app: &App, link_id: String) -> Result<(), AppError> {
    if app.store.forget_link(link_id.clone()).await? {
        Ok(())
    } else {
        Err(AppError::NotFound(format!(
            "link {link_id:?} is not known to this service"
        )))
    }
}

/// ListMovements: a page of the account's stored movements.
pub async fn list_movements(
    app: &App,
    account_id: String,
    after: Option<(String, String)>,
    page_size: u32,
) -> Result<MovementsPage, AppError> {
    app.store
        .list_movements(account_id.clone(), after, i64::from(page_size))
        .await?
        .ok_or_else(|| {
            AppError::NotFound(format!(
                "account {account_id:?} is not known to this service"
            ))
        })
}
