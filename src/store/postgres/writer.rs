//! This replica's writer: one task, one connection, group commits.
//!
//! Every write that touches the log or an intent's progress comes here. The task takes
//! everything queued (up to [`MAX_BATCH`]) and commits it in one transaction that first
//! locks the log's counter: writers on every replica wait for each other there, so the log
//! commits in sequence order, and the wait is paid once per batch. Consecutive webhooks in a
//! batch are taken in together, set-based (`ingest.rs`). Callers are answered after COMMIT
//! returns, which with `synchronous_commit = on` means durable.
//!
//! When a batch fails, what happens next depends on why (`store::error::classify`):
//! - **a conflict** (the counter's lock not granted within `lock_timeout` because its holder
//!   froze, a deadlock, a serialization failure): the whole batch runs again after a short
//!   pause, until the earliest deadline of its jobs; the frozen holder's session is ended by
//!   the server meanwhile (`session.rs`), so the retry gets the lock;
//! - **the database out of reach** (no answer within the bound, a lost connection, a
//!   read-only database): the batch runs once more on a fresh connection if it failed on one
//!   opened earlier (a connection the server ended), else every job fails at once as
//!   unavailable (webhooks get 503 and Fintoc retries) — never job by job, which against a
//!   black-holed database would take one timeout per job;
//! - **anything else**: the jobs run one by one, each in its own transaction, so one bad job
//!   fails alone.
//!
//! Under the counter's lock the writer also checks the log was not rewound (a failover that
//! lost commits, a restored backup): see `log::Rewind`.
//!
//! With traces on, each batch is a `commit` span linked to the span of every job in it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::log::{Appender, LOCK_COUNTER, Rewind};
use super::session::{Bounds, conflict_pause};
use super::tail::Published;
use super::{connect, ingest, intents, links, movements};
use crate::clock::{Clock, Millis};
use crate::domain::{IntentView, NewIntent};
use crate::fintoc::event::Decoded;
use crate::metrics::Metrics;
use crate::store::{
    FetchDone, FetchJob, FetchOutcome, IngestOutcome, KeyRecord, StoreError, StoreResult,
};
use crate::telemetry;

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
        /// The create call's mark to clear (its holder), if it was made through one.
        mark: Option<String>,
        reply: Reply<IntentView>,
    },
    TimedOut {
        id: String,
        reply: Reply<Option<IntentView>>,
    },
    /// Clears one create call's mark, (Link, holder) (or, with `None`, every expired one)
    /// and logs the events held for it.
    Settle {
        mark: Option<(String, String)>,
        reply: Reply<usize>,
    },
    /// Takes the counter's lock and commits nothing: whether this replica can commit now.
    Probe { reply: Reply<()> },
    /// Moves the counter to at least this sequence (the log was found rewound).
    Raise { to: i64, reply: Reply<()> },
    /// Forgets a Link's token and movements; its owed fetches end TOKEN_NOT_KEPT.
    Forget { link_id: String, reply: Reply<bool> },
    /// Settles one account's leased fetches with what they found.
    Fetched {
        owner: String,
        jobs: Vec<FetchJob>,
        outcome: FetchOutcome,
        reply: Reply<FetchDone>,
    },
}

/// A job and by when its caller needs the answer.
struct Queued {
    job: Job,
    deadline: Instant,
    /// Where it was submitted from (a webhook's span, an RPC's): the group commit's span
    /// links to it.
    span: tracing::Span,
}

/// What a job produced, held until its transaction commits.
enum Done {
    Ingested(Vec<IngestOutcome>),
    Registered(IntentView),
    TimedOut(Option<IntentView>),
    Settled(usize),
    Forgot(bool),
    Fetched(FetchDone),
    Nothing,
}

enum Msg {
    /// Boxed: a job is far larger than a close, and the queue holds thousands of messages.
    Job(Box<Queued>),
    Close(oneshot::Sender<()>),
}

#[derive(Clone)]
pub(super) struct Writer {
    tx: mpsc::Sender<Msg>,
    /// How long a job may take from submission to answer.
    budget: Duration,
}

/// What the writer's task works with.
pub(super) struct Setup {
    pub url: String,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    pub bounds: Bounds,
    /// The longest a caller waits for a write (`--request-timeout`).
    pub budget: Duration,
    /// What this replica's tail has handed to watchers: the log must never be below it.
    pub published: Arc<Published>,
    /// Cancelled when the log is found rewound: this replica must stop serving streams.
    pub broken: CancellationToken,
    /// Whether movements are fetched (`LINK_TOKEN_KEYS` is set).
    pub movements: bool,
    pub stop: CancellationToken,
}

impl Writer {
    /// The writer's handle and the task to run for it.
    pub(super) fn new(setup: Setup) -> (Writer, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::channel(QUEUE);
        // Answered a little before the caller's own limit, so it gets a status, not a 408.
        let budget = setup.budget - (setup.budget / 10).min(Duration::from_secs(1));
        (Writer { tx, budget }, run(setup, rx))
    }

    async fn submit<T>(&self, job: impl FnOnce(Reply<T>) -> Job) -> StoreResult<T> {
        let (reply, answer) = oneshot::channel();
        let queued = Queued {
            job: job(reply),
            deadline: Instant::now() + self.budget,
            span: tracing::Span::current(),
        };
        self.tx
            .send(Msg::Job(Box::new(queued)))
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
        mark: Option<String>,
    ) -> StoreResult<IntentView> {
        self.submit(|reply| Job::Register {
            new,
            key,
            mark,
            reply,
        })
        .await
    }

    pub(super) async fn timed_out(&self, id: String) -> StoreResult<Option<IntentView>> {
        self.submit(|reply| Job::TimedOut { id, reply }).await
    }

    pub(super) async fn settle(&self, mark: Option<(String, String)>) -> StoreResult<usize> {
        self.submit(|reply| Job::Settle { mark, reply }).await
    }

    /// Whether this replica can commit now: takes the counter's lock like any batch (behind
    /// whatever is queued) and commits nothing.
    pub(super) async fn probe(&self) -> StoreResult<()> {
        self.submit(|reply| Job::Probe { reply }).await
    }

    pub(super) async fn forget(&self, link_id: String) -> StoreResult<bool> {
        self.submit(|reply| Job::Forget { link_id, reply }).await
    }

    pub(super) async fn fetched(
        &self,
        owner: String,
        jobs: Vec<FetchJob>,
        outcome: FetchOutcome,
    ) -> StoreResult<FetchDone> {
        self.submit(|reply| Job::Fetched {
            owner,
            jobs,
            outcome,
            reply,
        })
        .await
    }

    /// Moves the log's counter to at least `to`, so no sequence up to it is handed out again.
    pub(super) async fn raise(&self, to: i64) -> StoreResult<()> {
        self.submit(|reply| Job::Raise { to, reply }).await
    }

    /// Commits what is queued, then stops the task.
    pub(super) async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(setup: Setup, mut rx: mpsc::Receiver<Msg>) {
    let mut conn: Option<AsyncPgConnection> = None;
    let mut closing = None;
    while closing.is_none() {
        let first = tokio::select! {
            _ = setup.stop.cancelled() => break,
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
                Msg::Job(job) => batch.push(*job),
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
        let span = telemetry::commit_span(jobs, batch.iter().map(|q| &q.span));
        commit_batch(&setup, &mut conn, batch)
            .instrument(span)
            .await;
        setup.metrics.commit_batch_size.observe(jobs as f64);
        setup
            .metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
    }
    if let Some(done) = closing {
        let _ = done.send(());
    }
}

/// Commits the batch and answers its jobs (see the module docs for what a failure leads to).
async fn commit_batch(setup: &Setup, conn: &mut Option<AsyncPgConnection>, batch: Vec<Queued>) {
    let outcomes = match commit(setup, conn, &batch).await {
        Ok(done) => done.into_iter().map(Ok).collect(),
        Err(e) if e.is_unavailable() || batch.len() == 1 => {
            batch.iter().map(|_| Err(again(&e))).collect()
        }
        Err(e) => {
            tracing::warn!(error = %e, jobs = batch.len(), "group commit failed; retrying its jobs one by one");
            let mut outcomes = Vec::with_capacity(batch.len());
            for job in &batch {
                let alone = commit(setup, conn, std::slice::from_ref(job)).await;
                outcomes.push(alone.map(|mut done| done.remove(0)));
            }
            outcomes
        }
    };
    answer(batch, outcomes);
}

/// Commits `jobs` in one transaction, running it again after a conflict (until the earliest
/// deadline) or once on a fresh connection after the old one failed. Every attempt, its
/// connect included, ends by that deadline: each caller is answered within its own.
async fn commit(
    setup: &Setup,
    conn: &mut Option<AsyncPgConnection>,
    jobs: &[Queued],
) -> StoreResult<Vec<Done>> {
    let deadline = jobs.iter().map(|q| q.deadline).min().expect("a batch");
    let mut attempt = 1;
    let mut reconnected = false;
    loop {
        if Instant::now() >= deadline {
            return Err(StoreError::Unavailable(
                "the database could not take the write in time".into(),
            ));
        }
        let fresh = conn.is_none();
        let tried = tokio::time::timeout_at(deadline.into(), transact(setup, conn, jobs)).await;
        let failed = match tried {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(e)) => e,
            Err(_) => {
                *conn = None;
                setup.bounds.no_answer()
            }
        };
        match failed {
            StoreError::Conflict(why) => {
                let pause = conflict_pause(attempt);
                if Instant::now() + pause >= deadline {
                    return Err(StoreError::Conflict(why));
                }
                tracing::debug!(%why, attempt, "the batch conflicted; running it again");
                setup.metrics.commit_retry("conflict");
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            e if e.is_unavailable() && !fresh && !reconnected => {
                tracing::debug!(error = %e, "the writer's connection failed; once more on a new one");
                setup.metrics.commit_retry("reconnect");
                reconnected = true;
            }
            e => return Err(e),
        }
    }
}

/// A failure as each of the batch's callers gets it.
fn again(e: &StoreError) -> StoreError {
    match e {
        StoreError::Conflict(why) => StoreError::Conflict(why.clone()),
        StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Runs `jobs` in one transaction on the writer's connection (opened if needed), bounded by
/// [`Bounds::answer`]. A failed attempt drops the connection: whatever state the
/// transaction was left in goes with it (rolled back by the server, at the latest when the
/// idle-in-transaction timeout ends the session).
async fn transact(
    setup: &Setup,
    conn: &mut Option<AsyncPgConnection>,
    jobs: &[Queued],
) -> StoreResult<Vec<Done>> {
    if conn.is_none() {
        *conn = Some(
            connect::connect(&setup.url)
                .await
                .map_err(super::unavailable)?,
        );
    }
    let live = conn.as_mut().expect("connected above");
    let now_ms = setup.clock.now_ms();
    let work = async {
        let begin = setup.bounds.begin();
        let floor = setup.published.through();
        let (done, rewound) = if jobs.iter().all(|q| matches!(q.job, Job::Probe { .. })) {
            live.batch_execute(&format!("{begin}; {LOCK_COUNTER}; COMMIT"))
                .await?;
            (jobs.iter().map(|_| Done::Nothing).collect(), None)
        } else if jobs
            .iter()
            .all(|q| matches!(q.job, Job::Ingest { .. } | Job::Probe { .. }))
        {
            // The intake's hot path: nothing but webhooks.
            ingest_alone(live, &begin, floor, jobs, now_ms, setup.movements).await?
        } else {
            mixed(live, &begin, floor, jobs, now_ms, setup.movements).await?
        };
        if let Some(rewind) = rewound {
            rewind.report(&setup.broken);
        }
        Ok(done)
    };
    let result = match tokio::time::timeout(setup.bounds.answer, work).await {
        Ok(result) => result,
        Err(_) => Err(setup.bounds.no_answer()),
    };
    if result.is_err() {
        *conn = None;
    }
    result
}

/// A batch of webhooks (and probes) alone: BEGIN, the counter's lock and the ingest's first
/// round trip in one (`ingest::begin_and_ingest`), its writes in a second, and the counter's
/// move with COMMIT in one message (a simple query runs its statements in order; pipelined
/// statements need not reach the server in the order they were started, and the move must
/// come before the COMMIT).
async fn ingest_alone(
    conn: &mut AsyncPgConnection,
    begin: &str,
    floor: i64,
    jobs: &[Queued],
    now_ms: Millis,
    movements: bool,
) -> StoreResult<(Vec<Done>, Option<Rewind>)> {
    let batch = Gathered::of(jobs);
    let (outcomes, log) = ingest::begin_and_ingest(
        conn,
        begin,
        floor,
        &batch.events,
        &batch.arrived,
        now_ms,
        movements,
    )
    .await?;
    let done = batch.split(outcomes);
    let rewound = log.rewound();
    conn.batch_execute(&log.finish_and_commit()).await?;
    Ok((done, rewound))
}

/// Jobs of every kind, in order, in one transaction holding the counter's lock; consecutive
/// ingests as one set.
async fn mixed(
    conn: &mut AsyncPgConnection,
    begin: &str,
    floor: i64,
    jobs: &[Queued],
    now_ms: Millis,
    movements: bool,
) -> StoreResult<(Vec<Done>, Option<Rewind>)> {
    conn.batch_execute(&format!("{begin}; {LOCK_COUNTER}"))
        .await?;
    let newest: (i64, Millis) = Appender::newest_query().get_result(conn).await?;
    let mut log = Appender::after(newest, floor);
    let mut done = Vec::with_capacity(jobs.len());
    let mut i = 0;
    while i < jobs.len() {
        if let Job::Ingest { .. } = &jobs[i].job {
            // One set-based ingest for the run of consecutive ingest jobs.
            let run_end = jobs[i..]
                .iter()
                .position(|q| !matches!(q.job, Job::Ingest { .. }))
                .map_or(jobs.len(), |n| i + n);
            let batch = Gathered::of(&jobs[i..run_end]);
            let outcomes = ingest::ingest(
                conn,
                &mut log,
                &batch.events,
                &batch.arrived,
                now_ms,
                movements,
            )
            .await?;
            done.extend(batch.split(outcomes));
            i = run_end;
            continue;
        }
        done.push(match &jobs[i].job {
            Job::Ingest { .. } => unreachable!("handled above"),
            Job::Register { new, key, mark, .. } => {
                intents::register(conn, new, mark.as_deref(), now_ms).await?;
                ingest::process_held(conn, &mut log, now_ms, movements).await?;
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
            Job::Settle { mark, .. } => {
                links::clear_creates(conn, mark.as_ref()).await?;
                Done::Settled(ingest::process_held(conn, &mut log, now_ms, movements).await?)
            }
            Job::Forget { link_id, .. } => {
                Done::Forgot(movements::forget_link(conn, &mut log, link_id, now_ms).await?)
            }
            Job::Fetched {
                owner,
                jobs,
                outcome,
                ..
            } => Done::Fetched(
                movements::finish(conn, &mut log, owner, jobs, outcome.clone(), now_ms).await?,
            ),
            Job::Probe { .. } => Done::Nothing,
            Job::Raise { to, .. } => {
                log.raise_to(*to);
                Done::Nothing
            }
        });
        i += 1;
    }
    let rewound = log.rewound();
    conn.batch_execute(&log.finish_and_commit()).await?;
    Ok((done, rewound))
}

/// The events of consecutive ingest jobs, gathered into one set. Jobs with different arrival
/// times (reconciliation's) keep their own. Probes among them carry no event.
struct Gathered {
    events: Vec<(Bytes, Decoded)>,
    arrived: Vec<Millis>,
    /// Events per job, to split the outcomes back (`None`: a probe).
    sizes: Vec<Option<usize>>,
}

impl Gathered {
    fn of(jobs: &[Queued]) -> Gathered {
        let mut batch = Gathered {
            events: Vec::new(),
            arrived: Vec::new(),
            sizes: Vec::new(),
        };
        for queued in jobs {
            match &queued.job {
                Job::Ingest {
                    events,
                    received_at_ms,
                    ..
                } => {
                    batch.sizes.push(Some(events.len()));
                    batch
                        .arrived
                        .extend(std::iter::repeat_n(*received_at_ms, events.len()));
                    batch.events.extend(events.iter().cloned());
                }
                _ => batch.sizes.push(None),
            }
        }
        batch
    }

    fn split(&self, outcomes: Vec<IngestOutcome>) -> Vec<Done> {
        let mut outcomes = outcomes.into_iter();
        self.sizes
            .iter()
            .map(|n| match n {
                Some(n) => Done::Ingested(outcomes.by_ref().take(*n).collect()),
                None => Done::Nothing,
            })
            .collect()
    }
}

/// Answers each job with its outcome.
fn answer(batch: Vec<Queued>, outcomes: Vec<StoreResult<Done>>) {
    fn send<T>(reply: Reply<T>, outcome: StoreResult<Done>, take: impl FnOnce(Done) -> Option<T>) {
        let _ = reply.send(outcome.and_then(|d| take(d).ok_or_else(mismatch)));
    }
    for (queued, outcome) in batch.into_iter().zip(outcomes) {
        match queued.job {
            Job::Ingest { reply, .. } => send(reply, outcome, |d| match d {
                Done::Ingested(v) => Some(v),
                _ => None,
            }),
            Job::Register { reply, .. } => send(reply, outcome, |d| match d {
                Done::Registered(v) => Some(v),
                _ => None,
            }),
            Job::TimedOut { reply, .. } => send(reply, outcome, |d| match d {
                Done::TimedOut(v) => Some(v),
                _ => None,
            }),
            Job::Settle { reply, .. } => send(reply, outcome, |d| match d {
                Done::Settled(v) => Some(v),
                _ => None,
            }),
            Job::Forget { reply, .. } => send(reply, outcome, |d| match d {
                Done::Forgot(v) => Some(v),
                _ => None,
            }),
            Job::Fetched { reply, .. } => send(reply, outcome, |d| match d {
                Done::Fetched(v) => Some(v),
                _ => None,
            }),
            Job::Probe { reply } | Job::Raise { reply, .. } => send(reply, outcome, |d| match d {
                Done::Nothing => Some(()),
                _ => None,
            }),
        }
    }
}

fn mismatch() -> StoreError {
    StoreError::Corrupt("a job's outcome does not match the job".into())
}
