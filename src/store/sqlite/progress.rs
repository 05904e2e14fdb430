//! How far the writer has got, for the readers and for health.
//!
//! **Reads never show what is not durable.** A read-only connection sees every committed
//! group at once, a moment before the sync thread has made it durable (`durable.rs`). So
//! every group gets a number, taken by the writer just *before* its COMMIT, and the sync
//! thread settles numbers once their groups are fsynced (or failed, leaving nothing
//! visible). A read runs its queries, then notes the newest number taken: every commit its
//! queries could have seen had taken its number before it became visible, so it is covered.
//! The read answers only once that number is settled. While no group is in flight this
//! costs one atomic load; otherwise the reader waits for the fsync under way (and at most
//! the one after it), about a millisecond.
//!
//! "Read, then note the number" rather than "wait for the writer, then read": a read that
//! waited first could still see a group committed between its wait and its snapshot.
//!
//! **Storage that stops, stops for good.** If the writer or the sync thread ends without
//! being asked (a panic, a lost sync thread), nothing can be written or made durable any
//! more: [`Progress::fail`] records it, waiting readers give up, and the service learns it
//! through `Store::failed` and stops rather than sit half-dead.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::{StoreError, StoreResult};

pub(super) struct Progress {
    /// Numbers taken: bumped by the writer right before each group's COMMIT.
    taken: AtomicU64,
    /// The highest number whose group is durable (or failed): moved by the sync thread.
    settled: watch::Sender<u64>,
    /// Cancelled once storage has stopped for good.
    failed: CancellationToken,
    /// Reads currently waiting for `settled` (for tests to see a read held back).
    #[cfg(test)]
    pub(super) waiting: std::sync::atomic::AtomicUsize,
}

impl Progress {
    pub(super) fn new() -> Progress {
        Progress {
            taken: AtomicU64::new(0),
            settled: watch::Sender::new(0),
            failed: CancellationToken::new(),
            #[cfg(test)]
            waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The writer, right before a group's COMMIT: that group's number.
    pub(super) fn take_number(&self) -> u64 {
        self.taken.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The newest number taken so far.
    pub(super) fn taken(&self) -> u64 {
        self.taken.load(Ordering::SeqCst)
    }

    /// The sync thread: every group up to `number` is durable, or failed.
    pub(super) fn settle(&self, number: u64) {
        self.settled.send_if_modified(|settled| {
            let moved = number > *settled;
            *settled = (*settled).max(number);
            moved
        });
    }

    /// Waits until every group up to `number` is settled; an error if storage stopped first.
    pub(super) async fn until_settled(&self, number: u64) -> StoreResult<()> {
        if *self.settled.borrow() >= number {
            return Ok(());
        }
        #[cfg(test)]
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut settled = self.settled.subscribe();
        let outcome = tokio::select! {
            result = settled.wait_for(|s| *s >= number) => {
                result.map(|_| ()).map_err(|_| StoreError::WriterGone)
            }
            _ = self.failed.cancelled() => Err(StoreError::WriterGone),
        };
        #[cfg(test)]
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        outcome
    }

    /// Storage has stopped for good.
    pub(super) fn fail(&self) {
        self.failed.cancel();
    }

    pub(super) fn has_failed(&self) -> bool {
        self.failed.is_cancelled()
    }

    /// Resolves once storage has stopped for good.
    pub(super) async fn failed(&self) {
        self.failed.cancelled().await;
    }
}

/// Lives on a storage thread and reports, when that thread ends while still armed (by a
/// panic, or by returning from a failure), that storage has stopped for good.
pub(super) struct Watchdog {
    thread: &'static str,
    progress: std::sync::Arc<Progress>,
    armed: bool,
}

impl Watchdog {
    pub(super) fn new(thread: &'static str, progress: std::sync::Arc<Progress>) -> Watchdog {
        Watchdog {
            thread,
            progress,
            armed: true,
        }
    }

    /// The thread ends as asked: nothing to report.
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if self.armed {
            tracing::error!(
                thread = self.thread,
                panicked = std::thread::panicking(),
                "a storage thread stopped unexpectedly: nothing can be committed any more"
            );
            self.progress.fail();
        }
    }
}
