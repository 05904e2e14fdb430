//! The single writer: one thread owns the only write connection and commits in groups.
//!
//! SQLite has one writer at a time and every durable commit costs an fsync (~0.2–0.5 ms here,
//! far more on real disks). So the thread takes every job waiting in its queue (up to
//! [`MAX_BATCH`]), runs them all inside one IMMEDIATE transaction and commits once; the
//! committed group then goes to the syncer thread (`durable.rs`), which fsyncs the WAL, hands
//! the newly logged results to the hub and only then answers every job, while this thread
//! already runs the next group. Nobody is told "done" before the commit holding their work is
//! durable, and under load the fsync cost is shared by every group it covers.
//!
//! A failing job must not take its neighbours down, so each job's writes can be undone alone.
//! One-off jobs ([`Writer::submit`]) get a savepoint each. Repeatable jobs
//! ([`Writer::submit_repeatable`], the webhook intake's) share one savepoint per run of
//! consecutive ones, which saves two parsed statements per event on the hot path; if any of
//! them fails, the run is rolled back and each is re-run under its own savepoint.
//!
//! With traces on, each group is a `commit` span, linked to the span every job in it was
//! submitted from (the webhooks' and RPCs'), lasting until the group is durable and answered.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use diesel::Connection;
use diesel::sqlite::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

use super::InFlight;
use super::checkpoint::WalBound;
use super::durable::{Group, SyncFn};
use super::progress::{Progress, Watchdog};
use crate::clock::{Clock, Millis};
use crate::domain::ResultRow;
use crate::metrics::Metrics;
use crate::store::decide;
use crate::store::{Publish, StoreError, StoreResult};
use crate::telemetry;

/// Jobs committed together at most. Large enough to amortize the fsync at any rate we can
/// receive; small enough that one transaction stays short for readers' WAL checkpoints.
const MAX_BATCH: usize = 1024;
/// Queue in front of the writer: senders wait (backpressure) when it is full.
const QUEUE: usize = 8192;

/// What a job hands back: called with the outcome of the commit that held its work.
type Finisher = Box<dyn FnOnce(StoreResult<()>) + Send>;
type Job = Box<dyn FnOnce(&mut Tx<'_>) -> Finisher + Send>;

/// A job that can run again from scratch (after its group was rolled back).
trait Repeatable: Send {
    /// Runs the job; its result is kept for [`Repeatable::finish`]. True on success.
    fn run(&mut self, tx: &mut Tx<'_>) -> bool;
    /// Answers the caller with the job's result, given the commit's outcome.
    fn finish(self: Box<Self>, commit: StoreResult<()>);
    /// Where it was submitted from, for the group commit's span.
    fn span(&self) -> &tracing::Span;
}

struct RepeatableJob<T, F> {
    f: F,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
    span: tracing::Span,
}

impl<T, F> Repeatable for RepeatableJob<T, F>
where
    T: Send,
    F: Fn(&mut Tx<'_>) -> StoreResult<T> + Send,
{
    fn run(&mut self, tx: &mut Tx<'_>) -> bool {
        let result = self.span.in_scope(|| {
            catch_unwind(AssertUnwindSafe(|| (self.f)(tx))).unwrap_or(Err(StoreError::Panicked))
        });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: StoreResult<()>) {
        let result = self.result.unwrap_or(Err(StoreError::WriterGone));
        let _ = self.reply.send(commit.and(result));
    }

    fn span(&self) -> &tracing::Span {
        &self.span
    }
}

enum Msg {
    /// A one-off job and the span it was submitted from.
    Job(Job, tracing::Span),
    Repeatable(Box<dyn Repeatable>),
    Close(oneshot::Sender<()>),
}

/// A job's view of the open transaction.
pub(super) struct Tx<'a> {
    pub(super) conn: &'a mut SqliteConnection,
    now_ms: Millis,
    /// Whether movements are fetched (`LINK_TOKEN_KEYS` is set).
    movements: bool,
    in_flight: &'a InFlight,
    appended: &'a mut Vec<Arc<ResultRow>>,
}

impl Tx<'_> {
    /// The Links with a create call in flight (changed only inside jobs, or before one is
    /// queued, so what a job sees is ordered with the commits).
    pub(super) fn in_flight(&self) -> &InFlight {
        self.in_flight
    }

    /// Whether movements are fetched and pushed (`LINK_TOKEN_KEYS` is set).
    pub(super) fn movements(&self) -> bool {
        self.movements
    }

    /// The clock's reading when this group commit began (never earlier than the log's
    /// newest stamp: see [`LogClock`]).
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
        let (now_ms, in_flight, movements) = (self.now_ms, self.in_flight, self.movements);
        let appended = &mut *self.appended;
        let result = self.conn.transaction(|conn| {
            let mut inner = Tx {
                conn,
                now_ms,
                movements,
                in_flight,
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
    /// Starts the writer and its sync thread. Commits are made durable by fsyncing the WAL,
    /// unless `sync` says how (tests hold it back). Between group commits the writer keeps
    /// the WAL within `bound`. Both threads report through `progress` how far commits have
    /// got, and whether they stopped unasked.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        mut conn: SqliteConnection,
        sync: Option<SyncFn>,
        bound: WalBound,
        in_flight: InFlight,
        publish: Publish,
        clock: Clock,
        metrics: Arc<Metrics>,
        progress: Arc<Progress>,
        movements: bool,
    ) -> StoreResult<Writer> {
        let sync = match sync {
            Some(sync) => Some(sync),
            None => super::durable::WalFile::open(&mut conn)?.map(|wal| wal.into_sync()),
        };
        let clock = LogClock {
            stamped_ms: super::log::newest_stamp(&mut conn)?,
            clock,
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        // Unbounded: it holds at most what the writer committed during one fsync, and the
        // writer's own queue above is what pushes back on callers.
        let (to_syncer, committed) = std::sync::mpsc::channel();
        let syncer = std::thread::Builder::new()
            .name("db-sync".into())
            .spawn({
                let progress = progress.clone();
                move || {
                    let watchdog = Watchdog::new("db-sync", progress.clone());
                    // It returns once the writer hung up: by then the writer's own watchdog
                    // has said whether that was asked for.
                    super::durable::run(committed, sync, publish, metrics, progress);
                    watchdog.disarm();
                }
            })
            .map_err(|source| StoreError::Io {
                doing: "starting the WAL sync thread",
                source,
            })?;
        std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || {
                let watchdog = Watchdog::new("db-writer", progress.clone());
                let ends = Ends { to_syncer, syncer };
                if run(
                    conn, rx, ends, bound, in_flight, clock, &progress, movements,
                ) {
                    watchdog.disarm();
                }
            })
            .map_err(|source| StoreError::Io {
                doing: "starting the writer thread",
                source,
            })?;
        Ok(Writer { tx })
    }

    /// Test hook: queues a job whose answer panics on the sync thread, as a bug there would,
    /// so the sync thread dies and storage stops for good. Never used by the service.
    pub(super) fn break_for_test(&self) {
        let job: Job =
            Box::new(|_tx| Box::new(|_commit| panic!("storage broken on purpose by a test hook")));
        let _ = self.tx.try_send(Msg::Job(job, tracing::Span::none()));
    }

    pub(super) async fn submit<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let span = tracing::Span::current();
        let from = span.clone();
        let job: Job = Box::new(move |tx| {
            let result = span.in_scope(|| tx.savepoint(f));
            Box::new(move |commit: StoreResult<()>| {
                let _ = reply.send(commit.and(result));
            })
        });
        self.tx
            .send(Msg::Job(job, from))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Like [`Writer::submit`] for a job that may run twice (it must only touch the database):
    /// it shares a savepoint with its neighbours, which is cheaper.
    pub(super) async fn submit_repeatable<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut Tx<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = RepeatableJob {
            f,
            result: None,
            reply,
            span: tracing::Span::current(),
        };
        self.tx
            .send(Msg::Repeatable(Box::new(job)))
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

/// A group the writer committed (or failed to), on its way to the syncer.
struct Committed {
    commit: StoreResult<()>,
    /// The number it took before its COMMIT (see `progress.rs`).
    number: u64,
    appended: Vec<Arc<ResultRow>>,
    finishers: Vec<Finisher>,
    repeatables: Vec<Box<dyn Repeatable>>,
    started: Instant,
    /// The group's `commit` span: it ends once the group is durable, published and answered.
    span: tracing::Span,
}

impl Group for Committed {
    fn committed(&self) -> bool {
        self.commit.is_ok()
    }

    fn number(&self) -> u64 {
        self.number
    }

    /// Publishes the group's results and answers every job in it.
    fn finish(self, publish: &Publish, metrics: &Metrics) {
        let jobs = self.finishers.len() + self.repeatables.len();
        metrics.commit_batch_size.observe(jobs as f64);
        metrics
            .commit_seconds
            .observe(self.started.elapsed().as_secs_f64());
        let outcome = match &self.commit {
            Ok(()) => {
                publish(&self.appended);
                Ok(())
            }
            Err(e) => {
                self.span.record("error", true);
                tracing::error!(error = %e, jobs, "group commit failed");
                Err(e.to_string())
            }
        };
        let outcome = || outcome.clone().map_err(StoreError::Commit);
        for finish in self.finishers {
            finish(outcome());
        }
        for job in self.repeatables {
            job.finish(outcome());
        }
    }
}

/// The writer's clock: the injected one, except that it never reads earlier than the
/// newest stamp in the log, so results are stamped in log order (`decide::log_time`) even
/// if the system clock steps back.
struct LogClock {
    clock: Clock,
    stamped_ms: Millis,
}

impl LogClock {
    fn now_ms(&mut self) -> Millis {
        self.stamped_ms = decide::log_time(self.clock.now_ms(), self.stamped_ms);
        self.stamped_ms
    }
}

/// The sync thread, as the writer holds it.
struct Ends {
    to_syncer: std::sync::mpsc::Sender<Committed>,
    syncer: std::thread::JoinHandle<()>,
}

/// The writer thread's loop. True when it stopped as asked (closed, or every handle gone);
/// false when it had to stop (the sync thread is gone).
#[allow(clippy::too_many_arguments)] // the thread's whole state, handed over once
fn run(
    mut conn: SqliteConnection,
    mut rx: mpsc::Receiver<Msg>,
    Ends { to_syncer, syncer }: Ends,
    mut bound: WalBound,
    in_flight: InFlight,
    mut clock: LogClock,
    progress: &Progress,
    movements: bool,
) -> bool {
    let mut asked = true;
    let mut batch: Vec<Msg> = Vec::with_capacity(MAX_BATCH);
    let mut closing = None;
    while closing.is_none() {
        let Some(mut msg) = rx.blocking_recv() else {
            break;
        };
        loop {
            match msg {
                // Everything sent before Close is in this batch; commit it, then stop.
                Msg::Close(done) => {
                    closing = Some(done);
                    break;
                }
                work => batch.push(work),
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
        let mut group = Committed {
            commit: Ok(()),
            number: 0,
            appended: Vec::new(),
            finishers: Vec::new(),
            repeatables: Vec::with_capacity(batch.len()),
            started: Instant::now(),
            span: telemetry::commit_span(
                batch.len(),
                batch.iter().filter_map(|msg| match msg {
                    Msg::Job(_, span) => Some(span),
                    Msg::Repeatable(job) => Some(job.span()),
                    Msg::Close(_) => None,
                }),
            ),
        };
        let now_ms = clock.now_ms();
        group.commit = conn.immediate_transaction(|conn| {
            let mut tx = Tx {
                conn,
                now_ms,
                movements,
                in_flight: &in_flight,
                appended: &mut group.appended,
            };
            let mut items = batch.drain(..).peekable();
            while let Some(item) = items.next() {
                match item {
                    Msg::Job(job, _) => group.finishers.push(job(&mut tx)),
                    Msg::Repeatable(first) => {
                        let start = group.repeatables.len();
                        group.repeatables.push(first);
                        while let Some(Msg::Repeatable(_)) = items.peek() {
                            if let Some(Msg::Repeatable(next)) = items.next() {
                                group.repeatables.push(next);
                            }
                        }
                        run_group(&mut tx, &mut group.repeatables[start..]);
                    }
                    Msg::Close(_) => unreachable!("Close never enters a batch"),
                }
            }
            // Before COMMIT makes the group visible to readers (see `progress.rs`).
            progress.take_number();
            Ok::<_, StoreError>(())
        });
        // This thread alone takes numbers: the newest is this group's, or the previous
        // group's if this one never reached its COMMIT.
        group.number = progress.taken();
        // Jobs still here never ran (BEGIN failed). Dropping one drops its reply channel,
        // so its caller gets an error rather than waiting forever.
        batch.clear();
        if to_syncer.send(group).is_err() {
            // The syncer only stops when told to; without it nothing can be answered.
            tracing::error!("the WAL sync thread is gone; the writer stops");
            asked = false;
            break;
        }
        // Between this group and the next: the moment a WAL restart costs the least.
        bound.between_groups(&mut conn);
    }
    // Everything committed is synced and answered before the connection (and so the WAL)
    // closes.
    drop(to_syncer);
    let _ = syncer.join();
    drop(conn);
    if let Some(done) = closing {
        let _ = done.send(());
    }
    asked
}

/// Runs consecutive repeatable jobs under one savepoint; if one fails, undoes them all and
/// runs each under its own, so only the failing one loses its writes.
fn run_group(tx: &mut Tx<'_>, group: &mut [Box<dyn Repeatable>]) {
    let failed = || StoreError::Commit("a job of the group failed".into());
    let together = tx.savepoint(|tx| {
        for job in group.iter_mut() {
            if !job.run(tx) {
                return Err(failed());
            }
        }
        Ok(())
    });
    if together.is_err() {
        for job in group.iter_mut() {
            let _ = tx.savepoint(|tx| if job.run(tx) { Ok(()) } else { Err(failed()) });
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;

    use std::sync::atomic::{AtomicI64, Ordering};

    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::sqlite::tests::open;

    /// The group-commit promise itself: a job's caller is answered, and its results reach
    /// watchers, only after the fsync that covers its commit has returned. The sync is held
    /// back by hand, so this needs no timing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_is_answered_or_published_before_its_commit_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("g.db").to_string_lossy().into_owned();
        let mut conn = SqliteConnection::establish(&url).unwrap();
        // The writer reads the log's newest stamp when it starts.
        diesel_migrations::MigrationHarness::run_pending_migrations(
            &mut conn,
            crate::store::sqlite::MIGRATIONS,
        )
        .unwrap();
        let (began, sync_began) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let released = std::sync::Mutex::new(released);
        let sync: SyncFn = Box::new(move || {
            began.send(()).unwrap();
            released.lock().unwrap().recv().unwrap();
            Ok(())
        });
        let published = Arc::new(AtomicI64::new(0));
        let sink: Publish = {
            let published = published.clone();
            Arc::new(move |rows: &[Arc<ResultRow>]| {
                published.store(rows.last().unwrap().sequence, Ordering::SeqCst)
            })
        };
        let metrics = Arc::new(Metrics::new());
        let checkpointer =
            super::super::checkpoint::Checkpointer::start(&url, metrics.clone()).unwrap();
        let writer = Writer::start(
            conn,
            Some(sync),
            checkpointer.bound(None, 1 << 26, metrics.clone()),
            InFlight::default(),
            sink,
            Clock::System,
            Arc::new(Metrics::new()),
            Arc::new(Progress::new()),
            false,
        )
        .unwrap();
        let job = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .submit(|tx| {
                        tx.conn
                            .batch_execute("CREATE TABLE t (x); INSERT INTO t VALUES (1);")?;
                        tx.appended(ResultRow::example(1, "acc"));
                        Ok(7)
                    })
                    .await
            }
        });
        // The group is committed and its fsync has begun, but not returned.
        tokio::task::spawn_blocking(move || sync_began.recv().unwrap())
            .await
            .unwrap();
        tokio::task::yield_now().await;
        assert!(!job.is_finished(), "answered before the fsync returned");
        assert_eq!(
            published.load(Ordering::SeqCst),
            0,
            "published before the fsync returned"
        );
        release.send(()).unwrap();
        assert_eq!(job.await.unwrap().unwrap(), 7);
        assert_eq!(published.load(Ordering::SeqCst), 1);
        writer.close().await;
    }

    fn insert_link(tx: &mut Tx<'_>, id: &str) -> StoreResult<()> {
        use crate::store::sqlite::schema::links;
        diesel::insert_into(links::table)
            .values((
                links::link_id.eq(id),
                links::token_sha256.eq("x"),
                links::resolved_at_ms.eq(0i64),
            ))
            .execute(tx.conn)?;
        Ok(())
    }

    async fn link_ids(store: &SqliteStore) -> Vec<String> {
        use crate::store::sqlite::schema::links;
        store
            .read(|c| {
                Ok(links::table
                    .select(links::link_id)
                    .order(links::link_id)
                    .load(c)?)
            })
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_job_loses_only_its_own_writes() {
        let (_dir, store) = open().await;
        let mut calls = Vec::new();
        for i in 0..20 {
            let store = store.clone();
            calls.push(tokio::spawn(async move {
                store
                    .writer
                    .submit_repeatable(move |tx| {
                        insert_link(tx, &format!("link_{i:02}"))?;
                        if i == 7 {
                            return Err(StoreError::Corrupt("job 7 fails after writing".into()));
                        }
                        Ok(i)
                    })
                    .await
            }));
        }
        let once = store
            .write(|tx| {
                insert_link(tx, "link_once")?;
                Err::<(), _>(StoreError::Corrupt("fails too".into()))
            })
            .await;
        assert!(once.is_err());
        for (i, call) in calls.into_iter().enumerate() {
            let result = call.await.unwrap();
            assert_eq!(result.is_ok(), i != 7, "job {i}: {result:?}");
        }
        let ids = link_ids(&store).await;
        assert_eq!(ids.len(), 19);
        assert!(!ids.contains(&"link_07".to_owned()) && !ids.contains(&"link_once".to_owned()));
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_writer_lives_on() {
        let (_dir, store) = open().await;
        let panicked = store
            .writer
            .submit_repeatable(|_tx| -> StoreResult<()> { panic!("boom") })
            .await;
        assert!(matches!(panicked, Err(StoreError::Panicked)));
        store
            .write(|tx| insert_link(tx, "link_after"))
            .await
            .unwrap();
        assert_eq!(link_ids(&store).await, vec!["link_after".to_owned()]);
    }
}
