//! The movements fetcher (CONTRACT.md §7): every replica runs one. It leases one Link's owed
//! fetches at a time (`Store::claim_fetches`), opens the Link's sealed token, lists each
//! account's movements at Fintoc once for all that account's owed results, and hands what it
//! found to the store, which compares, logs and settles the jobs in one commit
//! (`store::decide::movements` decides). So:
//!
//! - **Bounded.** One Link at a time per replica, at most `FETCH_RATE` listings a second
//!   per replica, Fintoc's 429 schedule honoured inside each listing (`fintoc::client`).
//! - **Once.** A job is deleted in the commit that logs its entries, and that commit checks
//!   the job is still leased to this process: a replica that froze past its lease, or
//!   crashed mid-fetch, pushes nothing (another one redoes the fetch; what it finds is
//!   compared with what was stored, so nothing is pushed twice).
//! - **Never silent.** A refused token, a token gone, or a Fintoc that keeps failing ends
//!   each owed result with `movements_unavailable`.
//!
//! It wakes when a result that owes a fetch is published (the hub pokes it) and polls every
//! `POLL` otherwise (retries come due with time; another replica's results).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::clock::{Millis, millis};
use crate::custody::OpenError;
use crate::refresh::custody::{stored, unsealed};
use crate::store::{FetchClaim, FetchDone, FetchJob, FetchOutcome, MOVEMENTS_WINDOW_DAYS};

/// How long a claim is leased: longer than a listing with a full 429 schedule (~36 s).
const LEASE: Duration = Duration::from_secs(120);
/// How long one account's listing may take.
const LISTING_BUDGET: Duration = Duration::from_secs(60);
/// How often the fetcher looks for due work without being woken.
const POLL: Duration = Duration::from_millis(500);
/// Listings per second per replica, at most (Fintoc allows 100 requests a second per
/// organization, shared with everything else the organization does).
pub const FETCH_RATE: u32 = 20;

/// Runs the fetcher until `stop`.
pub async fn run(app: Arc<App>, stop: CancellationToken) {
    let owner = format!("fetch-{}", uuid::Uuid::new_v4());
    let mut pace = Pace::new(FETCH_RATE);
    loop {
        match step(&app, &owner, &mut pace).await {
            Ok(true) => continue,
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "the movements fetcher failed; it retries"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = app.fetch_wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Claims and runs one Link's due fetches; whether there was any.
pub async fn step(app: &App, owner: &str, pace: &mut Pace) -> anyhow::Result<bool> {
    let Some(claim) = app
        .store
        .claim_fetches(owner.to_owned(), millis(LEASE))
        .await?
    else {
        return Ok(false);
    };
    run_claim(app, claim, pace).await?;
    Ok(true)
}

async fn run_claim(app: &App, claim: FetchClaim, pace: &mut Pace) -> anyhow::Result<()> {
    let FetchClaim {
        owner,
        link_id,
        token,
        jobs,
    } = claim;
    let keys = app
        .config
        .link_token_keys
        .clone()
        .ok_or_else(|| anyhow::anyhow!("fetch jobs exist but LINK_TOKEN_KEYS is not set"))?;
    let token = match token {
        None => None,
        Some(sealed) => match keys.open(&link_id, &unsealed(&sealed)) {
            Ok(opened) => {
                if let Some(new) = opened.reseal {
                    // Rotation: the token moves to the sealing key as it is used.
                    app.store
                        .reseal_token(link_id.clone(), sealed.key_id.clone(), stored(new))
                        .await?;
                    app.metrics.link_tokens_resealed.inc();
                }
                Some(opened.token)
            }
            Err(e @ OpenError::UnknownKey { .. }) | Err(e @ OpenError::Corrupt) => {
                // Start-up refuses keys that cannot open what is kept; this is a token
                // damaged at rest. It cannot be used: its results are said unavailable.
                tracing::error!(link_id = %link_id, error = %e, "a kept link token cannot be opened");
                None
            }
        },
    };
    for account_jobs in crate::store::jobs_by_account(jobs) {
        let outcome = match &token {
            None => FetchOutcome::TokenGone,
            Some(token) => {
                pace.wait().await;
                list(app, token, &account_jobs).await
            }
        };
        let label = outcome_label(&outcome);
        let done = app
            .store
            .finish_fetches(owner.clone(), account_jobs, outcome)
            .await?;
        app.metrics.movement_fetch(label, done_label(done));
        if done == FetchDone::LeaseLost {
            tracing::warn!(link_id = %link_id, "a fetch outlived its lease; another process redoes it");
        }
    }
    Ok(())
}

/// Lists one account's movements over the window its owed results need.
async fn list(app: &App, token: &crate::secret::Secret, jobs: &[FetchJob]) -> FetchOutcome {
    let oldest: Millis = jobs.iter().map(|j| j.occurred_at_ms).min().unwrap_or(0);
    let since = window_start(oldest);
    let account_id = &jobs[0].account_id;
    let deadline = Instant::now() + LISTING_BUDGET;
    let started = Instant::now();
    let listed = app
        .fintoc
        .list_movements(token, account_id, since, None, deadline)
        .await;
    app.metrics
        .movement_listing_seconds
        .observe(started.elapsed().as_secs_f64());
    match listed {
        Ok(listing) => {
            app.metrics
                .movement_requests
                .inc_by(u64::from(listing.requests));
            FetchOutcome::Listed {
                movements: listing.movements,
                since: since.to_string(),
            }
        }
        Err(e) if e.is_invalid_link_token() => FetchOutcome::TokenInvalid,
        Err(e) => FetchOutcome::Failed(e.to_string()),
    }
}

/// The first day a fetch lists, for results produced from `oldest_ms` on.
fn window_start(oldest_ms: Millis) -> time::Date {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(oldest_ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    (at - time::Duration::days(MOVEMENTS_WINDOW_DAYS)).date()
}

fn outcome_label(outcome: &FetchOutcome) -> &'static str {
    match outcome {
        FetchOutcome::Listed { .. } => "listed",
        FetchOutcome::TokenInvalid => "token_invalid",
        FetchOutcome::TokenGone => "token_gone",
        FetchOutcome::Failed(_) => "failed",
    }
}

fn done_label(done: FetchDone) -> &'static str {
    match done {
        FetchDone::Written => "written",
        FetchDone::Retrying => "retrying",
        FetchDone::LeaseLost => "lease_lost",
    }
}

/// At most `rate` listings a second: each waits for its slot.
pub struct Pace {
    gap: Duration,
    next: tokio::time::Instant,
}

impl Pace {
    pub fn new(rate: u32) -> Pace {
        Pace {
            gap: Duration::from_secs(1) / rate.max(1),
            next: tokio::time::Instant::now(),
        }
    }

    async fn wait(&mut self) {
        let now = tokio::time::Instant::now();
        if self.next > now {
            tokio::time::sleep_until(self.next).await;
        }
        self.next = self.next.max(now) + self.gap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_reaches_a_month_back_from_the_oldest_result() {
        let day = 86_400_000;
        let at = 20_000 * day + 5_000; // 2024-10-04 00:00:05 UTC
        assert_eq!(window_start(at).to_string(), "2024-09-03");
    }

    #[tokio::test]
    async fn listings_are_paced() {
        // Real time, 50 ms apart: the test proves the gap, not a timing goal.
        let mut pace = Pace::new(20);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            pace.wait().await;
        }
        assert!(
            start.elapsed() >= Duration::from_millis(200),
            "{:?}",
            start.elapsed()
        );
    }
}
