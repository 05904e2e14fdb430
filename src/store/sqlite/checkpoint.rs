//! Keeping the WAL small: checkpoints off the writer's thread, and WAL restarts between two
//! group commits.
//!
//! SQLite's automatic checkpoint runs inside the committing connection, so every ~1,000 pages
//! one unlucky group commit would also copy the WAL into the database and fsync it (5% of the
//! intake's time, and its latency spikes). The writer turns that off; the checkpoint thread
//! here runs PASSIVE checkpoints, which never block the writer or readers, every 250 ms, and
//! a TRUNCATE one on close so the WAL file does not linger.
//!
//! A PASSIVE checkpoint copies WAL frames into the database but never rewinds the WAL. SQLite
//! writes the WAL from its start again only when a write transaction begins after a checkpoint
//! has copied every frame and no reader still reads one; while group commits run back to back
//! that moment never comes, and the WAL grows until the disk is full. So the writer makes it
//! come ([`WalBound::between_groups`], after each group commit):
//! - past a quarter of the limit, it asks the checkpoint thread for a PASSIVE checkpoint now;
//!   once that has run (little is left to copy), the writer runs a RESTART checkpoint itself,
//!   between two group commits: it copies the rest, waits for readers still on old frames
//!   (briefly: reads here are one page each), and the next commit writes from the file's
//!   start. `journal_size_limit` (a quarter of the limit) then cuts the file back;
//! - past half the limit, it restarts at once without waiting for the checkpoint thread:
//!   the hard bound. The file stays below half the limit plus one group commit's frames.
//!
//! A restart readers refused (a read transaction held past the wait: the service's own reads
//! are one statement each, but `copy-store` reads one long snapshot) is tried again a second
//! later, so a long reader costs the writer one short wait a second, not one per commit;
//! past three quarters of the limit, after every group commit, which slows the intake (each
//! try waits up to 200 ms) rather than let the file grow. Durability is untouched: a checkpoint first syncs the
//! WAL, then copies, then syncs the database, so frames the syncer has not yet synced are
//! durable in the database before the restart lets them be overwritten.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer};
use diesel::sqlite::SqliteConnection;

use super::BUSY_TIMEOUT;
use crate::metrics::Metrics;
use crate::store::{StoreError, StoreResult};

/// How often the checkpoint thread copies WAL frames into the database unasked.
const PERIOD: Duration = Duration::from_millis(250);
/// How long a restart waits for readers still on old WAL frames.
const RESTART_WAIT: Duration = Duration::from_millis(200);
/// After a restart that could not complete, the next attempt waits this long.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// One `PRAGMA wal_checkpoint` answer.
#[derive(QueryableByName, Debug, Clone, Copy)]
struct Outcome {
    /// 1 when a RESTART could not finish (readers, or another checkpoint, were in the way).
    #[diesel(sql_type = Integer)]
    busy: i32,
    /// Frames in the WAL.
    #[diesel(sql_type = BigInt)]
    log: i64,
    /// Of those, frames copied into the database.
    #[diesel(sql_type = BigInt)]
    checkpointed: i64,
}

fn checkpoint(conn: &mut SqliteConnection, mode: &str) -> QueryResult<Outcome> {
    diesel::sql_query(format!("PRAGMA wal_checkpoint({mode})")).get_result(conn)
}

/// What the writer and the checkpoint thread share.
#[derive(Default)]
struct Shared {
    /// Catch-up checkpoints asked for by the writer, counted.
    asked: AtomicU64,
    /// The newest ask a PASSIVE checkpoint begun after it has answered.
    served: AtomicU64,
    /// Held while either side checkpoints: two at once would only refuse each other.
    running: Mutex<()>,
}

impl Shared {
    fn record(&self, metrics: &Metrics, outcome: Outcome) {
        metrics.wal_frames.set(outcome.log);
        metrics.wal_checkpointed_frames.set(outcome.checkpointed);
    }
}

pub(super) struct Checkpointer {
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(super) fn start(url: &str, metrics: Arc<Metrics>) -> StoreResult<Checkpointer> {
        let mut conn = SqliteConnection::establish(url)?;
        conn.batch_execute(&format!(
            "PRAGMA busy_timeout = {}; PRAGMA synchronous = FULL;",
            BUSY_TIMEOUT.as_millis()
        ))?;
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let thread = std::thread::Builder::new()
            .name("db-checkpoint".into())
            .spawn({
                let (stop, shared) = (stop.clone(), shared.clone());
                move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(PERIOD);
                        // Read before the checkpoint begins: it answers asks made until now.
                        let asked = shared.asked.load(Ordering::Acquire);
                        let outcome = {
                            let _running = shared.running.lock().expect("checkpoint lock");
                            checkpoint(&mut conn, "PASSIVE")
                        };
                        match outcome {
                            Ok(outcome) => shared.record(&metrics, outcome),
                            Err(e) => {
                                tracing::warn!(error = %e, "WAL checkpoint failed; will retry")
                            }
                        }
                        shared.served.store(asked, Ordering::Release);
                    }
                    if let Err(e) = checkpoint(&mut conn, "TRUNCATE") {
                        tracing::warn!(error = %e, "final WAL checkpoint failed");
                    }
                }
            })
            .map_err(|source| StoreError::Io {
                doing: "starting the checkpoint thread",
                source,
            })?;
        Ok(Checkpointer {
            stop,
            shared,
            thread: Some(thread),
        })
    }

    /// The writer's side: keeps the WAL at `path` below `limit` bytes (`None`: a database
    /// without a file, nothing to bound).
    pub(super) fn bound(
        &self,
        path: Option<PathBuf>,
        limit: u64,
        metrics: Arc<Metrics>,
    ) -> WalBound {
        if path.is_some() {
            metrics.wal_limit_bytes.set(limit as i64);
        }
        WalBound {
            path,
            soft: limit / 4,
            hard: limit / 2,
            urgent: limit / 4 * 3,
            shared: self.shared.clone(),
            helper: self.thread.as_ref().map(|t| t.thread().clone()),
            asked: None,
            not_before: None,
            metrics,
        }
    }

    /// Runs a last checkpoint and stops the thread.
    pub(super) fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The writer's handle on the WAL's size: see the module docs.
pub(super) struct WalBound {
    path: Option<PathBuf>,
    /// Past this the writer asks for a catch-up checkpoint, then restarts; the file is cut
    /// back to this size when the WAL rewinds.
    soft: u64,
    /// Past this the writer restarts at once.
    hard: u64,
    /// Past this it tries again after every group even when readers refused the last try.
    urgent: u64,
    shared: Arc<Shared>,
    /// The checkpoint thread, woken for a catch-up.
    helper: Option<Thread>,
    /// The writer's pending ask for a catch-up, if any.
    asked: Option<u64>,
    /// No restart before this (the last one could not complete).
    not_before: Option<Instant>,
    metrics: Arc<Metrics>,
}

impl WalBound {
    /// The SQL the writer's connection runs once: a rewound WAL file is cut back to this.
    pub(super) fn size_limit_pragma(&self) -> String {
        format!("PRAGMA journal_size_limit = {};", self.soft)
    }

    /// Called by the writer between two group commits: restarts the WAL when it has grown
    /// past its bound (see the module docs). Never fails: a WAL that cannot be restarted now
    /// is tried again later, and said so in the metrics and the log.
    pub(super) fn between_groups(&mut self, conn: &mut SqliteConnection) {
        let Some(path) = &self.path else { return };
        let size = match std::fs::metadata(path) {
            Ok(meta) => meta.len(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the WAL file's size");
                return;
            }
        };
        self.metrics.wal_bytes.set(size as i64);
        if size <= self.soft {
            self.asked = None;
            return;
        }
        if size <= self.urgent && self.not_before.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let caught_up = self
            .asked
            .is_some_and(|n| self.shared.served.load(Ordering::Acquire) >= n);
        if size > self.hard || caught_up {
            self.asked = None;
            self.restart(conn);
        } else if self.asked.is_none() {
            self.asked = Some(self.shared.asked.fetch_add(1, Ordering::AcqRel) + 1);
            if let Some(helper) = &self.helper {
                helper.unpark();
            }
        }
    }

    fn restart(&mut self, conn: &mut SqliteConnection) {
        let started = Instant::now();
        let outcome = {
            let _running = self.shared.running.lock().expect("checkpoint lock");
            let outcome = conn
                .batch_execute(&format!(
                    "PRAGMA busy_timeout = {};",
                    RESTART_WAIT.as_millis()
                ))
                .and_then(|()| checkpoint(conn, "RESTART"));
            let restored = conn.batch_execute(&format!(
                "PRAGMA busy_timeout = {};",
                BUSY_TIMEOUT.as_millis()
            ));
            outcome.and_then(|outcome| restored.map(|()| outcome))
        };
        self.metrics
            .wal_restart_seconds
            .observe(started.elapsed().as_secs_f64());
        let label = match outcome {
            Ok(outcome) if outcome.busy == 0 => {
                self.shared.record(&self.metrics, outcome);
                self.not_before = None;
                "restarted"
            }
            Ok(outcome) => {
                self.shared.record(&self.metrics, outcome);
                tracing::debug!("a WAL restart waited for readers in vain; trying again soon");
                self.not_before = Some(Instant::now() + RETRY_AFTER);
                "busy"
            }
            Err(e) => {
                tracing::warn!(error = %e, "WAL restart failed; trying again soon");
                self.not_before = Some(Instant::now() + RETRY_AFTER);
                "failed"
            }
        };
        self.metrics.wal_restart(label);
    }
}
