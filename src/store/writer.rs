//! The single writer: one thread owns the only write connection and commits in groups.
//!
//! SQLite has one writer at a time and, with `synchronous=FULL`, every commit costs an fsync
//! (~0.2 ms here, far more on real disks). So the thread takes every job waiting in its queue
//! (up to [`MAX_BATCH`]), runs each under its own savepoint inside one IMMEDIATE transaction,
//! commits once, hands the newly logged results to the hub, and only then answers every job.
//! Nobody is told "done" before the commit holding their work is durable, and under load the
//! fsync cost is shared by the whole batch.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use diesel::Connection;
use diesel::sqlite::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

use super::{ResultRow, StoreError, StoreResult};
use crate::clock::{Clock, Millis};
use crate::hub::Hub;

/// Jobs committed together at most. Large enough to amortize the fsync at any rate we can
/// receive; small enough that one transaction stays short for readers' WAL checkpoints.
const MAX_BATCH: usize = 1024;
/// Queue in front of the writer: senders wait (backpressure) when it is full.
const QUEUE: usize = 8192;

/// What a job hands back: called with the outcome of the commit that held its work.
type Finisher = Box<dyn FnOnce(StoreResult<()>) + Send>;
type Job = Box<dyn FnOnce(&mut Tx<'_>) -> Finisher + Send>;

enum Msg {
    Job(Job),
    Close(oneshot::Sender<()>),
}

/// A job's view of the open transaction.
pub struct Tx<'a> {
    pub conn: &'a mut SqliteConnection,
    now_ms: Millis,
    appended: &'a mut Vec<Arc<ResultRow>>,
}

impl Tx<'_> {
    /// The clock's reading when this group commit began.
    pub fn now_ms(&self) -> Millis {
        self.now_ms
    }

    /// Records a row just inserted into the result log, for the hub after commit.
    pub fn appended(&mut self, row: ResultRow) {
        self.appended.push(Arc::new(row));
    }

    /// Runs `f` under a savepoint: on error (or panic) its writes and its appended rows are
    /// undone and the rest of the group is unaffected.
    pub fn savepoint<T>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mark = self.appended.len();
        let now_ms = self.now_ms;
        let appended = &mut *self.appended;
        let result = self.conn.transaction(|conn| {
            let mut inner = Tx {
                conn,
                now_ms,
                appended,
            };
            catch_unwind(AssertUnwindSafe(|| f(&mut inner))).unwrap_or(Err(StoreError::Panicked))
        });
        if result.is_err() {
            self.appended.truncate(mark);
        }
        result
    }
}

#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Msg>,
}

impl Writer {
    pub(super) fn start(
        conn: SqliteConnection,
        hub: Arc<Hub>,
        clock: Clock,
    ) -> StoreResult<Writer> {
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || run(conn, rx, hub, clock))
            .map_err(|e| StoreError::Corrupt(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer { tx })
    }

    pub(super) async fn submit<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let span = tracing::Span::current();
        let job: Job = Box::new(move |tx| {
            let result = span.in_scope(|| tx.savepoint(f));
            Box::new(move |commit: StoreResult<()>| {
                let _ = reply.send(commit.and(result));
            })
        });
        self.tx
            .send(Msg::Job(job))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Commits what is queued, then stops the thread.
    pub(super) async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Msg>, hub: Arc<Hub>, clock: Clock) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut finishers: Vec<Finisher> = Vec::with_capacity(MAX_BATCH);
    let mut closing = None;
    while closing.is_none() {
        let Some(mut msg) = rx.blocking_recv() else {
            break;
        };
        loop {
            match msg {
                Msg::Job(job) => batch.push(job),
                // Everything sent before Close is in this batch; commit it, then stop.
                Msg::Close(done) => {
                    closing = Some(done);
                    break;
                }
            }
            if batch.len() == MAX_BATCH {
                break;
            }
            match rx.try_recv() {
                Ok(next) => msg = next,
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let mut appended = Vec::new();
        let now_ms = clock.now_ms();
        let commit = conn.immediate_transaction(|conn| {
            let mut tx = Tx {
                conn,
                now_ms,
                appended: &mut appended,
            };
            for job in batch.drain(..) {
                finishers.push(job(&mut tx));
            }
            Ok::<_, StoreError>(())
        });
        match &commit {
            Ok(()) => hub.publish(&appended),
            Err(e) => {
                tracing::error!(error = %e, jobs = finishers.len() + batch.len(), "group commit failed")
            }
        }
        // Jobs still here never ran (BEGIN failed). Dropping one drops its reply channel,
        // so its caller gets an error rather than waiting forever.
        batch.clear();
        for finish in finishers.drain(..) {
            finish(match &commit {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Commit(e.to_string())),
            });
        }
    }
    drop(conn);
    if let Some(done) = closing {
        let _ = done.send(());
    }
}
