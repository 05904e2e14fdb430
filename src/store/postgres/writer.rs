//! This replica's writer: one task, one connection, group commits.
//!
//! Every write that touches the log or an intent's progress comes here. The task takes
//! everything queued (up to [`MAX_BATCH`]) and commits it in one transaction that first
//! locks the log's counter (`log::Appender::lock`): writers on every replica wait for each
//! other there, so the log commits in sequence order, and the wait is paid once per batch.
//! Consecutive webhooks in a batch are taken in together, set-based (`ingest.rs`). Callers
//! are answered after COMMIT returns, which with `synchronous_commit = on` means durable.
//!
//! A batch that fails is retried job by job, each in its own transaction, so one bad job
//! fails alone. A lost connection fails the batch's callers with `StoreError::Unavailable`
//! (webhooks get 500 and Fintoc retries); the next batch connects again.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::log::Appender;
use super::{connect, ingest, intents, links};
use crate::clock::{Clock, Millis};
use crate::domain::{IntentView, NewIntent};
use crate::fintoc::event::Decoded;
use crate::metrics::Metrics;
use crate::store::{IngestOutcome, KeyRecord, StoreError, StoreResult};

/// Jobs committed together at most.
const MAX_BATCH: usize = 512;
/// Queue in front of the writer: senders wait (backpressure) when it is full.
const QUEUE: usize = 8192;

type Reply<T> = oneshot::Sender<StoreResult<T>>;

/// One unit of work for the writer.
enum Job {
    Ingest {
        events: Vec<(Bytes, Decoded)>,
        received_at_ms: Millis,
        reply: Reply<Vec<IngestOutcome>>,
    },
    Register {
        new: NewIntent,
        key: Option<KeyRecord>,
        reply: Reply<IntentView>,
    },
    TimedOut {
        id: String,
        reply: Reply<Option<IntentView>>,
    },
    /// Clears one Link's create mark (or, with `None`, every expired one) and logs the
    /// events held for it.
    Settle {
        link_id: Option<String>,
        reply: Reply<usize>,
    },
}

/// What a job produced, held until its transaction commits.
enum Done {
    Ingested(Vec<IngestOutcome>),
    Registered(IntentView),
    TimedOut(Option<IntentView>),
    Settled(usize),
}

enum Msg {
    Job(Job),
    Close(oneshot::Sender<()>),
}

#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Msg>,
}

impl Writer {
    /// The writer's handle and the task to run for it.
    pub(super) fn new(
        url: String,
        clock: Clock,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> (Writer, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE);
        (Writer { tx }, run(url, rx, clock, metrics, stop))
    }

    async fn submit<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Job(job(reply)))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    pub(super) async fn ingest(
        &self,
        events: Vec<(Bytes, Decoded)>,
        received_at_ms: Millis,
    ) -> StoreResult<Vec<IngestOutcome>> {
        self.submit(|reply| Job::Ingest {
            events,
            received_at_ms,
            reply,
        })
        .await
    }

    pub(super) async fn register(
        &self,
        new: NewIntent,
        key: Option<KeyRecord>,
    ) -> StoreResult<IntentView> {
        self.submit(|reply| Job::Register { new, key, reply }).await
    }

    pub(super) async fn timed_out(&self, id: String) -> StoreResult<Option<IntentView>> {
        self.submit(|reply| Job::TimedOut { id, reply }).await
    }

    pub(super) async fn settle(&self, link_id: Option<String>) -> StoreResult<usize> {
        self.submit(|reply| Job::Settle { link_id, reply }).await
    }

    /// Commits what is queued, then stops the task.
    pub(super) async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(
    url: String,
    mut rx: mpsc::Receiver<Msg>,
    clock: Clock,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) {
    let mut conn: Option<AsyncPgConnection> = None;
    let mut closing = None;
    while closing.is_none() {
        let first = tokio::select! {
            _ = stop.cancelled() => break,
            msg = rx.recv() => match msg {
                Some(msg) => msg,
                None => break,
            },
        };
        let mut batch = Vec::new();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                // Everything sent before Close is in this batch; commit it, then stop.
                Msg::Close(done) => {
                    closing = Some(done);
                    break;
                }
                Msg::Job(job) => batch.push(job),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if batch.is_empty() {
            continue;
        }
        let started = Instant::now();
        let jobs = batch.len();
        commit_batch(&url, &mut conn, batch, &clock).await;
        metrics.commit_batch_size.observe(jobs as f64);
        metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Commits the batch and answers its jobs; retries them one by one if it failed.
async fn commit_batch(
    url: &str,
    conn: &mut Option<AsyncPgConnection>,
    batch: Vec<Job>,
    clock: &Clock,
) {
    let together = transact(url, conn, &batch, clock).await;
    match together {
        Ok(done) => answer(batch, done.into_iter().map(Ok).collect()),
        Err(e) if batch.len() == 1 => answer(batch, vec![Err(e)]),
        Err(e) => {
            tracing::warn!(error = %e, jobs = batch.len(), "group commit failed; retrying its jobs one by one");
            let mut outcomes = Vec::with_capacity(batch.len());
            for job in &batch {
                let alone = transact(url, conn, std::slice::from_ref(job), clock).await;
                outcomes.push(alone.map(|mut done| done.remove(0)));
            }
            answer(batch, outcomes);
        }
    }
}

/// Runs `jobs` in one transaction on the writer's connection (opened if needed).
async fn transact(
    url: &str,
    conn: &mut Option<AsyncPgConnection>,
    jobs: &[Job],
    clock: &Clock,
) -> StoreResult<Vec<Done>> {
    if conn.is_none() {
        *conn = Some(connect::connect(url).await.map_err(super::unavailable)?);
    }
    let live = conn.as_mut().expect("connected above");
    let now_ms = clock.now_ms();
    let result = if jobs.iter().all(|j| matches!(j, Job::Ingest { .. })) {
        // The intake's hot path: nothing but webhooks.
        ingest_alone(live, jobs, now_ms).await
    } else {
        live.transaction::<_, StoreError, _>(async |tx| run_jobs(tx, jobs, now_ms).await)
            .await
    };
    if result.is_err() {
        // The connection may be gone or broken in a way no error kind says (a restart's
        // admin shutdown, a cut network): a fresh one for the next batch is cheap, a stuck
        // one would fail every batch from now on.
        *conn = None;
    }
    result
}

/// Runs the jobs in order inside the transaction; consecutive ingests as one set.
async fn run_jobs(
    conn: &mut AsyncPgConnection,
    jobs: &[Job],
    now_ms: Millis,
) -> StoreResult<Vec<Done>> {
    let mut log = Appender::lock(conn).await?;
    let mut done = Vec::with_capacity(jobs.len());
    let mut i = 0;
    while i < jobs.len() {
        if let Job::Ingest { .. } = &jobs[i] {
            // One set-based ingest for the run of consecutive ingest jobs.
            let run_end = jobs[i..]
                .iter()
                .position(|j| !matches!(j, Job::Ingest { .. }))
                .map_or(jobs.len(), |n| i + n);
            done.extend(ingest_run(conn, &mut log, &jobs[i..run_end], now_ms).await?);
            i = run_end;
            continue;
        }
        done.push(match &jobs[i] {
            Job::Ingest { .. } => unreachable!("handled above"),
            Job::Register { new, key, .. } => {
                intents::register(conn, new, now_ms).await?;
                ingest::process_held(conn, &mut log, now_ms).await?;
                if let Some(key) = key {
                    let mut key = key.clone();
                    key.refresh_intent_id = new.id.clone();
                    links::remember_key(conn, &key, now_ms).await?;
                }
                Done::Registered(intents::get_written(conn, &new.id).await?)
            }
            Job::TimedOut { id, .. } => {
                Done::TimedOut(intents::complete_timed_out(conn, &mut log, id, now_ms).await?)
            }
            Job::Settle { link_id, .. } => {
                links::clear_creates(conn, link_id.as_deref(), now_ms).await?;
                Done::Settled(ingest::process_held(conn, &mut log, now_ms).await?)
            }
        });
        i += 1;
    }
    if let Some(moved) = log.finish() {
        moved.execute(conn).await?;
    }
    Ok(done)
}

/// A batch of webhooks alone: BEGIN, the counter's lock and the ingest's first round trip
/// in one (`ingest::begin_and_ingest`), its writes in a second, and the counter's move with
/// COMMIT in one message (a simple query runs its statements in order; pipelined statements
/// need not reach the server in the order they were started, and the move must come before
/// the COMMIT). Any failure leaves the transaction open, and the caller drops the
/// connection, which rolls it back.
async fn ingest_alone(
    conn: &mut AsyncPgConnection,
    jobs: &[Job],
    now_ms: Millis,
) -> StoreResult<Vec<Done>> {
    let batch = Gathered::of(jobs);
    let (outcomes, log) =
        ingest::begin_and_ingest(conn, &batch.events, &batch.arrived, now_ms).await?;
    let done = batch.split(outcomes);
    let finish = match log.finish_inline() {
        Some(moved) => format!("{moved}; COMMIT"),
        None => "COMMIT".to_owned(),
    };
    conn.batch_execute(&finish).await?;
    Ok(done)
}

/// Ingests the events of consecutive ingest jobs as one set, in a transaction holding the
/// counter's lock; splits the outcomes back per job.
async fn ingest_run(
    conn: &mut AsyncPgConnection,
    log: &mut Appender,
    jobs: &[Job],
    now_ms: Millis,
) -> StoreResult<Vec<Done>> {
    let batch = Gathered::of(jobs);
    let outcomes = ingest::ingest(conn, log, &batch.events, &batch.arrived, now_ms).await?;
    Ok(batch.split(outcomes))
}

/// The events of consecutive ingest jobs, gathered into one set. Jobs with different arrival
/// times (reconciliation's) keep their own.
struct Gathered {
    events: Vec<(Bytes, Decoded)>,
    arrived: Vec<Millis>,
    /// Events per job, to split the outcomes back.
    sizes: Vec<usize>,
}

impl Gathered {
    fn of(jobs: &[Job]) -> Gathered {
        let mut batch = Gathered {
            events: Vec::new(),
            arrived: Vec::new(),
            sizes: Vec::new(),
        };
        for job in jobs {
            if let Job::Ingest {
                events,
                received_at_ms,
                ..
            } = job
            {
                batch.sizes.push(events.len());
                batch
                    .arrived
                    .extend(std::iter::repeat_n(*received_at_ms, events.len()));
                batch.events.extend(events.iter().cloned());
            }
        }
        batch
    }

    fn split(&self, outcomes: Vec<IngestOutcome>) -> Vec<Done> {
        let mut outcomes = outcomes.into_iter();
        self.sizes
            .iter()
            .map(|n| Done::Ingested(outcomes.by_ref().take(*n).collect()))
            .collect()
    }
}

/// Answers each job with its outcome.
fn answer(batch: Vec<Job>, outcomes: Vec<StoreResult<Done>>) {
    for (job, outcome) in batch.into_iter().zip(outcomes) {
        match job {
            Job::Ingest { reply, .. } => {
                let _ = reply.send(outcome.and_then(|d| match d {
                    Done::Ingested(v) => Ok(v),
                    _ => Err(mismatch()),
                }));
            }
            Job::Register { reply, .. } => {
                let _ = reply.send(outcome.and_then(|d| match d {
                    Done::Registered(v) => Ok(v),
                    _ => Err(mismatch()),
                }));
            }
            Job::TimedOut { reply, .. } => {
                let _ = reply.send(outcome.and_then(|d| match d {
                    Done::TimedOut(v) => Ok(v),
                    _ => Err(mismatch()),
                }));
            }
            Job::Settle { reply, .. } => {
                let _ = reply.send(outcome.and_then(|d| match d {
                    Done::Settled(v) => Ok(v),
                    _ => Err(mismatch()),
                }));
            }
        }
    }
}

fn mismatch() -> StoreError {
    StoreError::Corrupt("a job's outcome does not match the job".into())
}
