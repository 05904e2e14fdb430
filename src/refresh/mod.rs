//! RequestRefresh, the use case: create a Fintoc refresh intent for a Link, or answer without
//! calling Fintoc when the answer is already known here. It speaks domain types only; the
//! gRPC edge (`grpc/refresh.rs`) validates the wire request into an [`Ask`] and turns the
//! [`Outcome`] back into a wire answer, so another edge can run the same flow.
//!
//! In order: a repeated idempotency key returns its first answer (in the intent's current
//! state); a Link with a pending intent is joined (single flight); a Link whose credentials
//! were rejected is held back for `--rejected-hold`; a Link refreshed successfully too
//! recently is in cooldown (all in `local.rs`). Only then is Fintoc asked (`create.rs`): the
//! Link is resolved (its accounts are what the intent waits for; an inactive Link, or one
//! without accounts, has nothing to refresh and is refused) and the intent created with an
//! `Idempotency-Key` from a series that moves past every key Fintoc has answered
//! (`keys.rs`, `fintoc::client::IdempotencyKeys`). If Fintoc says an intent is already in
//! progress (created elsewhere), that one is adopted and joined; if it says the Link is in
//! cooldown, the answer names the last success known here.
//!
//! Requests for the same link token take turns ([`Store::link_turn`], across replicas on
//! PostgreSQL), so concurrent callers make one upstream POST. The work runs in its own task:
//! a caller that hangs up does not leave a created intent unrecorded. While the create call
//! is in flight, account events for the Link are held and matched once the intent is known
//! (`domain::correlate`).
//!
//! [`Store::link_turn`]: crate::store::Store::link_turn

mod create;
pub mod custody;
mod keys;
pub mod links;
pub mod local;

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use crate::app::App;
use crate::domain::{IntentView, RefreshType};
use crate::error::AppError;
use crate::secret::{Secret, sha256_hex};

/// A validated request: what the edge checked (lengths, a known refresh type) and nothing
/// wire-specific.
pub struct Ask {
    token: Secret,
    /// The token's digest: how the token is known here, as it is never stored in plain text.
    token_sha256: String,
    refresh_type: RefreshType,
    /// The caller's idempotency key, if it gave one.
    key: Option<String>,
    /// Seal and keep the token (keep_link_token).
    keep: bool,
}

impl Ask {
    /// The digest is taken here, once, so it always belongs to the token it travels with.
    pub fn new(token: Secret, refresh_type: RefreshType, key: Option<String>) -> Ask {
        Ask {
            token_sha256: sha256_hex(token.expose()),
            token,
            refresh_type,
            key,
            keep: false,
        }
    }

    /// The same ask, keeping the token (keep_link_token) when `keep`.
    pub fn keeping_token(mut self, keep: bool) -> Ask {
        self.keep = keep;
        self
    }
}

/// The answer: the intent (created, joined or replayed) in its current state, and whether
/// the caller joined one that already existed.
#[derive(Debug)]
pub struct Outcome {
    pub intent: IntentView,
    pub joined_existing: bool,
}

/// Runs RequestRefresh until `deadline`. The flow runs in its own task, so a caller that
/// hangs up mid-call (dropping this future) does not stop it between the create at Fintoc
/// and the record here.
pub async fn run(app: &Arc<App>, ask: Ask, deadline: Instant) -> Result<Outcome, AppError> {
    let app = app.clone();
    // In the caller's span, so the flow's Fintoc calls belong to the RPC's trace.
    let span = tracing::Span::current();
    tokio::spawn(async move { flow(&app, ask, deadline).await }.instrument(span))
        .await
        .map_err(|e| AppError::Internal {
            what: "RequestRefresh task",
            detail: e.to_string(),
        })?
}

async fn flow(app: &App, ask: Ask, deadline: Instant) -> Result<Outcome, AppError> {
    if let Some(outcome) = local::replay(app, &ask).await? {
        return Ok(outcome);
    }
    let _turn = app.store.link_turn(&ask.token_sha256, deadline).await?;
    // A caller with the same key may have finished while we waited.
    if let Some(outcome) = local::replay(app, &ask).await? {
        return Ok(outcome);
    }
    let known = app.store.link_by_token(ask.token_sha256.clone()).await?;
    if let Some(link) = known {
        // The token is this Link's (its digest matched): kept whatever the answer is.
        if ask.keep {
            custody::keep(app, &link.link_id, &ask.token).await?;
        }
        if let Some(outcome) = local::answer(app, &ask, &link).await? {
            return Ok(outcome);
        }
    }

    let link = create::resolve(app, &ask, deadline).await?;
    app.store
        .upsert_link(
            link.id.clone(),
            ask.token_sha256.clone(),
            link.accounts.clone(),
        )
        .await?;
    if ask.keep {
        custody::keep(app, &link.id, &ask.token).await?;
    }
    // First time this token is seen: the Link may still be known by its id.
    let known = app.store.link_by_id(link.id.clone()).await?;
    if let Some(known) = known
        && let Some(outcome) = local::answer(app, &ask, &known).await?
    {
        return Ok(outcome);
    }

    create::create(app, &ask, link, deadline).await
}
