//! Following the log on every replica: whatever any replica commits reaches this replica's
//! sink (its hub) once, in sequence order.
//!
//! Writers send `NOTIFY` on `log::CHANNEL` in the committing transaction (delivered only once
//! it commits). The tail LISTENs on its own connection and, on each notification, reads
//! every entry after the last one it handed over. Notifications are only a wake-up: one sent
//! while this connection was down is lost, so the tail also reads every [`POLL`], and after
//! each reconnect. Because the log commits in sequence order (see `log_counter`), reading
//! "after the last sequence seen" never steps over an entry still to come.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use diesel_async::RunQueryDsl;
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::connect::{Pool, connect};
use crate::domain::ResultRow;
use crate::store::{Publish, StoreResult};

/// How often the log is read even without a notification.
const POLL: Duration = Duration::from_millis(500);
/// Pause before reconnecting after the listening connection failed.
const RECONNECT: Duration = Duration::from_millis(500);
/// Entries read per query.
const PAGE: i64 = 1000;

/// The tail's task: runs until `stop`.
pub(super) async fn run(
    url: String,
    pool: Pool,
    tailed: Arc<AtomicI64>,
    publish: Publish,
    stop: CancellationToken,
) {
    let tail = Tail {
        pool,
        tailed,
        publish,
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tail.run(&url) => {}
    }
}

struct Tail {
    pool: Pool,
    tailed: Arc<AtomicI64>,
    publish: Publish,
}

impl Tail {
    async fn run(&self, url: &str) {
        loop {
            if let Err(e) = self.listen(url).await {
                tracing::warn!(error = %e, "following the log: connection lost; reconnecting");
            }
            tokio::time::sleep(RECONNECT).await;
        }
    }

    /// LISTENs and catches up on every wake-up, until the connection fails.
    async fn listen(&self, url: &str) -> StoreResult<()> {
        let mut conn = connect(url).await.map_err(super::unavailable)?;
        diesel::sql_query(format!("LISTEN {}", super::log::CHANNEL))
            .execute(&mut conn)
            .await?;
        // Anything committed while we were not listening.
        self.catch_up().await?;
        let mut notes = std::pin::pin!(conn.notifications_stream());
        loop {
            tokio::select! {
                note = notes.next() => match note {
                    Some(Ok(_)) => {
                        // One read covers every notification already here: under load they
                        // come faster than one read each could follow, and a backlog of them
                        // would delay every watcher on this replica by its length.
                        loop {
                            match notes.next().now_or_never() {
                                Some(Some(Ok(_))) => continue,
                                Some(Some(Err(e))) => return Err(e.into()),
                                Some(None) => return Ok(()),
                                None => break,
                            }
                        }
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => return Ok(()),
                },
                _ = tokio::time::sleep(POLL) => {}
            }
            self.catch_up().await?;
        }
    }

    /// Hands every entry after the last one handed over to the sink, in order.
    async fn catch_up(&self) -> StoreResult<()> {
        let mut conn = super::get(&self.pool).await?;
        loop {
            let after = AtomicI64::load(&self.tailed, Ordering::Acquire);
            let rows = super::log::entries_after(&mut conn, after, PAGE).await?;
            let Some(last) = rows.last().map(|r| r.sequence) else {
                return Ok(());
            };
            let full = rows.len() as i64 == PAGE;
            let entries: Vec<Arc<ResultRow>> = rows.into_iter().map(Arc::new).collect();
            // Readers are capped by this mark: it moves before the sink hears of the entries,
            // so a watcher's catch-up never runs ahead of what its hub will have.
            self.tailed.store(last, Ordering::Release);
            (self.publish)(&entries);
            if !full {
                return Ok(());
            }
        }
    }
}
