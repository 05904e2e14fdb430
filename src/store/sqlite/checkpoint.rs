//! WAL checkpoints off the writer's thread. SQLite's automatic checkpoint runs inside the
//! committing connection, so every ~1,000 pages one unlucky group commit would also copy the
//! WAL into the database and fsync it (5% of the intake's time, and its latency spikes). The
//! writer turns that off; this thread runs PASSIVE checkpoints, which never block the writer
//! or readers, once a second, and a TRUNCATE one on close so the WAL file does not linger.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel::sqlite::SqliteConnection;

use crate::store::{StoreError, StoreResult};

const PERIOD: Duration = Duration::from_secs(1);

pub(super) struct Checkpointer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    pub(super) fn start(url: &str) -> StoreResult<Checkpointer> {
        let mut conn = SqliteConnection::establish(url)?;
        conn.batch_execute("PRAGMA busy_timeout = 5000; PRAGMA synchronous = FULL;")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("db-checkpoint".into())
            .spawn(move || {
                while !flag.load(Ordering::Acquire) {
                    std::thread::park_timeout(PERIOD);
                    if let Err(e) = conn.batch_execute("PRAGMA wal_checkpoint(PASSIVE);") {
                        tracing::warn!(error = %e, "WAL checkpoint failed; will retry");
                    }
                }
                if let Err(e) = conn.batch_execute("PRAGMA wal_checkpoint(TRUNCATE);") {
                    tracing::warn!(error = %e, "final WAL checkpoint failed");
                }
            })
            .map_err(|source| StoreError::Io {
                doing: "starting the checkpoint thread",
                source,
            })?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
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
