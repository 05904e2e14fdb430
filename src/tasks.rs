//! Background work: the deadline keeper (lost-webhook reconciliation and timeouts) and
//! retention. Both read time from the injected clock, so tests drive them by moving it.
//!
//! Deadlines, for each pending intent: at `--reconcile-after` past creation (and again every
//! `--reconcile-after`) Fintoc's events endpoint is read for results whose webhook never
//! came, through the same ingestion path and dedupe as the intake; at `--refresh-timeout` it
//! is read once more, then every account still missing gets a TIMED_OUT result and the intent
//! completes, so no watcher waits forever. If Fintoc is down, timeouts still happen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use bytes::Bytes;

use crate::app::App;
use crate::clock::{Millis, millis};
use crate::domain::correlate::CLOCK_SLACK_MS;
use crate::domain::policy::KEY_TTL;
use crate::store::{DueIntent, IngestOutcome};

/// How often deadlines are checked (on the system clock).
const DEADLINE_TICK: Duration = Duration::from_secs(1);
/// How often retention runs.
const RETENTION_TICK: Duration = Duration::from_secs(600);
/// Rows per retention job: short enough that the intake barely notices it.
const PRUNE_CHUNK: i64 = 2_000;
/// Time allowed for one reconciliation's calls to Fintoc. How far back it reads is set by
/// time too: down to the oldest pending intent's creation.
const RECONCILE_BUDGET: Duration = Duration::from_secs(60);

/// The running background tasks.
pub struct Background {
    tasks: tokio::task::JoinSet<()>,
}

/// Starts the background tasks; they stop when `stop` is cancelled, dropping the work in
/// progress (see [`Background::stop_by`]).
pub fn spawn(app: Arc<App>, stop: CancellationToken) -> Background {
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(every(
        app.clone(),
        stop.clone(),
        DEADLINE_TICK,
        |app| async move { keep_deadlines(&app).await },
    ));
    if app.config.link_token_keys.is_some() {
        // Every replica fetches (one Link at a time each); leases keep them apart.
        tasks.spawn(crate::fetch::run(app.clone(), stop.clone()));
    }
    tasks.spawn(every(app, stop, RETENTION_TICK, |app| async move {
        prune(&app).await
    }));
    Background { tasks }
}

impl Background {
    /// Waits for the tasks to end (their `stop` token must be cancelled), but no later than
    /// `deadline`: then they are aborted, so a call stuck on a slow Fintoc cannot hold the
    /// shutdown past its grace. Cutting one short loses nothing: every step is a store write
    /// that commits whole or not at all, and is redone on the next run (the next start).
    pub async fn stop_by(mut self, deadline: tokio::time::Instant) {
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout_at(deadline, all).await.is_err() {
            tracing::warn!("background work still running at the end of the grace; abandoned");
            self.tasks.abort_all();
        }
    }
}

async fn every<F, Fut>(app: Arc<App>, stop: CancellationToken, period: Duration, work: F)
where
    F: Fn(Arc<App>) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = app.config.clock.tick(period) => {}
        }
        // Several replicas share the work's subject (one database): only the one holding
        // the leader lock does it, and another takes over when that one is gone.
        if !app.store.leads() {
            continue;
        }
        // The work itself is raced against `stop` too: a reconciliation may wait on Fintoc for
        // up to a minute, and nothing it leaves half done is lost (see `Background::stop_by`).
        // And against the lease: a leader that could not renew it stops before another
        // replica may start the same work.
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = app.store.leadership_lost() => {
                tracing::warn!("background work cut short: this replica no longer leads");
            }
            result = work(app.clone()) => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "background task failed; will retry");
                }
            }
        }
    }
}

/// Runs both deadline checks once (also called by tests through the clock).
pub async fn keep_deadlines(app: &App) -> anyhow::Result<()> {
    let settled = app.store.settle_abandoned_creates().await?;
    if settled > 0 {
        tracing::info!(
            settled,
            "logged events held for create calls that never returned"
        );
    }
    let now = app.config.clock.now_ms();
    let reconcile_after = millis(app.config.reconcile_after);
    let timeout = millis(app.config.refresh_timeout);
    let due = app.store.pending_intents_due(now - reconcile_after).await?;
    if due.is_empty() {
        return Ok(());
    }
    let to_reconcile: Vec<(String, Millis)> = due
        .iter()
        .filter(|d| {
            let deadline = d.created_at_ms + timeout;
            match d.reconciled_at_ms {
                None => true,
                // Once more right at the final deadline, else every reconcile_after.
                Some(at) => (now >= deadline && at < deadline) || at + reconcile_after <= now,
            }
        })
        .map(|d| (d.id.clone(), d.created_at_ms))
        .collect();
    if let Some(since) = to_reconcile.iter().map(|(_, created)| *created).min() {
        match reconcile(app, since).await {
            Ok(found) => {
                let ids: Vec<String> = to_reconcile.into_iter().map(|(id, _)| id).collect();
                app.store.mark_reconciled(ids).await?;
                if found > 0 {
                    tracing::info!(found, "recovered results whose webhook never arrived");
                }
            }
            Err(e) => tracing::warn!(error = %e, "reconciliation with Fintoc failed; will retry"),
        }
    }
    for DueIntent {
        id, created_at_ms, ..
    } in due.into_iter().filter(|d| now >= d.created_at_ms + timeout)
    {
        if let Some(intent) = app.store.complete_timed_out(id).await? {
            app.metrics.timed_out_intents.inc();
            tracing::warn!(intent = %intent.id, created_ms = created_at_ms, status = intent.status.as_str(), "refresh timed out");
        }
    }
    Ok(())
}

/// Reads Fintoc's events created since `since_ms` and ingests them like webhooks. Returns how
/// many of them were new results.
async fn reconcile(app: &App, since_ms: Millis) -> anyhow::Result<usize> {
    let deadline = Instant::now() + RECONCILE_BUDGET;
    let mut pages = app.fintoc.events_since(since_ms - CLOCK_SLACK_MS, deadline);
    let mut found = 0;
    while let Some(fresh) = pages.next_page().await? {
        let bodies = fresh.into_iter().map(|e| Bytes::from(e.raw)).collect();
        let now = app.config.clock.now_ms();
        let outcomes = app.store.ingest_reconciled(bodies, now).await?;
        found += outcomes
            .iter()
            .filter(|o| matches!(o, IngestOutcome::Logged(_)))
            .count();
    }
    app.metrics.reconciled_events.inc_by(found as u64);
    Ok(found)
}

/// Removes what is older than `--retention`, chunk by chunk.
pub async fn prune(app: &App) -> anyhow::Result<()> {
    let now = app.config.clock.now_ms();
    let cutoff = now - millis(app.config.retention);
    let key_cutoff = now - millis(KEY_TTL);
    let dropped = app
        .store
        .drop_expired_tokens(now - millis(app.config.link_token_retention))
        .await?;
    if dropped > 0 {
        tracing::info!(
            dropped,
            "kept link tokens dropped after --link-token-retention"
        );
    }
    loop {
        let pruned = app.store.prune(cutoff, key_cutoff, PRUNE_CHUNK).await?;
        app.metrics.pruned_rows.inc_by(pruned.total() as u64);
        if pruned.total() == 0 {
            return Ok(());
        }
        tracing::debug!(?pruned, "retention pruned rows");
        // Let the intake's jobs in between chunks.
        tokio::task::yield_now().await;
    }
}
