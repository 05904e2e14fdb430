//! Following the log on every replica: whatever any replica commits reaches this replica's
//! sink (its hub) once, in sequence order.
//!
//! Writers send `NOTIFY` on `log::CHANNEL` in the committing transaction (delivered only once
//! it commits). The tail LISTENs on its own connection and, on each notification, reads
//! every entry after the last one it handed over. Notifications are only a wake-up: one sent
//! while this connection was down is lost, so the tail also reads every [`POLL`], and after
//! each reconnect. Because the log commits in sequence order (see `log_counter`), reading
//! "after the last sequence seen" never steps over an entry still to come.
//!
//! Each read starts *at* the last entry handed over, which must still be the one handed
//! over: if it is not (a failover lost commits and other replicas reused its sequence, or a
//! backup was restored), the log was rewound under this replica, and what it told its
//! watchers no longer matches the log. The tail then stops and says so ([`Rewound`]) rather
//! than skip the reused sequences in silence.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel_async::RunQueryDsl;
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use super::connect::connect;
use super::db::Db;
use super::log::Rewind;
use crate::domain::ResultRow;
use crate::store::{Publish, StoreError, StoreResult};

/// How often the log is read even without a notification.
const POLL: Duration = Duration::from_millis(500);
/// Pause before reconnecting after the listening connection failed.
const RECONNECT: Duration = Duration::from_millis(500);
/// Entries read per query.
const PAGE: i64 = 1000;

/// How far this replica has handed the log to its sink, and which entry it handed last.
#[derive(Default)]
pub(super) struct Published {
    /// The newest sequence handed over: reads of the log stop there, and the hub starts
    /// there (so a watcher is never told of a cursor past what it can be given).
    through: AtomicI64,
    /// The entry at `through`, once this replica has read it.
    last: Mutex<Option<Identity>>,
}

/// What tells one log entry from another that took its sequence after a rewind.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    sequence: i64,
    account_id: String,
    event_id: String,
    committed_at_ms: i64,
}

impl Identity {
    fn of(row: &ResultRow) -> Identity {
        Identity {
            sequence: row.sequence,
            account_id: row.account_id.clone(),
            event_id: row.event_id.clone(),
            committed_at_ms: row.committed_at_ms,
        }
    }
}

impl Published {
    /// Starting from the log as it stands at `newest`.
    pub(super) fn starting_at(newest: i64) -> Published {
        Published {
            through: AtomicI64::new(newest),
            last: Mutex::new(None),
        }
    }

    /// The newest sequence handed to the sink.
    pub(super) fn through(&self) -> i64 {
        AtomicI64::load(&self.through, Ordering::Acquire)
    }
}

/// What the tail reports when it finds the log rewound; it stops after reporting.
pub(super) type Rewound = Box<dyn FnOnce(Rewind) + Send>;

/// The tail's task: runs until `stop`, or until it finds the log rewound.
pub(super) async fn run(
    url: String,
    db: Db,
    published: Arc<Published>,
    publish: Publish,
    rewound: Rewound,
    stop: CancellationToken,
) {
    let tail = Tail {
        db,
        published,
        publish,
    };
    let found = tokio::select! {
        _ = stop.cancelled() => return,
        found = tail.run(&url) => found,
    };
    rewound(found);
}

struct Tail {
    db: Db,
    published: Arc<Published>,
    publish: Publish,
}

/// Why listening ended.
enum Ended {
    Failed(StoreError),
    Rewound(Rewind),
}

impl From<StoreError> for Ended {
    fn from(e: StoreError) -> Self {
        Ended::Failed(e)
    }
}

impl Tail {
    /// Follows the log until it is found rewound.
    async fn run(&self, url: &str) -> Rewind {
        loop {
            match self.listen(url).await {
                Ended::Rewound(rewind) => return rewind,
                Ended::Failed(e) => {
                    tracing::warn!(error = %e, "following the log: connection lost; reconnecting")
                }
            }
            tokio::time::sleep(RECONNECT).await;
        }
    }

    /// LISTENs and catches up on every wake-up, until the connection fails. Every read is
    /// bounded, so a database that stops answering ends this (and the tail reconnects) rather
    /// than leaving it waiting for a notification that cannot come.
    async fn listen(&self, url: &str) -> Ended {
        let mut conn = match connect(url).await {
            Ok(conn) => conn,
            Err(e) => return Ended::Failed(super::unavailable(e)),
        };
        let listening = self
            .db
            .bounds
            .within(&mut conn, async |c| {
                diesel::sql_query(format!("LISTEN {}", super::log::CHANNEL))
                    .execute(c)
                    .await?;
                Ok(())
            })
            .await;
        if let Err(e) = listening {
            return Ended::Failed(e);
        }
        // Anything committed while we were not listening.
        if let Err(ended) = self.catch_up().await {
            return ended;
        }
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
                                Some(Some(Err(e))) => return Ended::Failed(e.into()),
                                Some(None) => return Ended::Failed(closed()),
                                None => break,
                            }
                        }
                    }
                    Some(Err(e)) => return Ended::Failed(e.into()),
                    None => return Ended::Failed(closed()),
                },
                _ = tokio::time::sleep(POLL) => {}
            }
            if let Err(ended) = self.catch_up().await {
                return ended;
            }
        }
    }

    /// Hands every entry after the last one handed over to the sink, in order.
    async fn catch_up(&self) -> Result<(), Ended> {
        loop {
            let through = self.published.through();
            let rows = self
                .db
                .read(async |c| super::log::entries_after(c, through - 1, PAGE).await)
                .await?;
            let fresh = self.check_continuity(through, &rows).await?;
            let Some(last) = fresh.last() else {
                return Ok(());
            };
            let full = rows.len() as i64 == PAGE;
            let identity = Identity::of(last);
            let last_sequence = last.sequence;
            let entries: Vec<Arc<ResultRow>> = fresh.iter().cloned().map(Arc::new).collect();
            *self.published.last.lock().expect("published") = Some(identity);
            // Readers are capped by this mark: it moves before the sink hears of the entries,
            // so a watcher's catch-up never runs ahead of what its hub will have.
            self.published
                .through
                .store(last_sequence, Ordering::Release);
            (self.publish)(&entries);
            if !full {
                return Ok(());
            }
        }
    }

    /// Checks that the entry at `through` is still the one handed over (when there is one),
    /// and returns the entries after it.
    async fn check_continuity<'r>(
        &self,
        through: i64,
        rows: &'r [ResultRow],
    ) -> Result<&'r [ResultRow], Ended> {
        let (at, after) = match rows.first() {
            Some(first) if first.sequence == through => (Some(first), &rows[1..]),
            _ => (None, rows),
        };
        let mut known = self.published.last.lock().expect("published").clone();
        if known.as_ref().is_some_and(|k| k.sequence != through) {
            known = None;
        }
        match (known, at) {
            (Some(known), Some(at)) if known != Identity::of(at) => {
                return Err(Ended::Rewound(Rewind {
                    counter: self.counter().await?,
                    published: through,
                }));
            }
            (_, Some(at)) => {
                *self.published.last.lock().expect("published") = Some(Identity::of(at));
            }
            // The entry at `through` is gone: pruned by retention (the counter is still at or
            // past it), or the log was rewound below it.
            (_, None) if through > 0 => {
                let counter = self.counter().await?;
                if counter < through {
                    return Err(Ended::Rewound(Rewind {
                        counter,
                        published: through,
                    }));
                }
            }
            (_, None) => {}
        }
        Ok(after)
    }

    async fn counter(&self) -> StoreResult<i64> {
        self.db
            .read(async |c| Ok(super::log::log_bounds(c).await?.newest))
            .await
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable("the listening connection closed".into())
}
