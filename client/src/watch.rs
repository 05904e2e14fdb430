//! [`Watcher`]: WatchRefresh as a stream that never misses a result.
//!
//! The rules, in the order they apply to a stream that stops:
//! 1. Every message moves the cursor (heartbeats too: the server sends them with a safe
//!    cursor), and a resumed stream asks for `after_sequence = cursor`.
//! 2. A stream the server ends on purpose (`STREAM_MAX_AGE`, a feed closed OK) is resumed at
//!    once, without a word.
//! 3. `OUT_OF_RANGE` / `CURSOR_EXPIRED` (the cursor is older than the server retains): the
//!    target's state is read again (`GetLink` for a Link, `ListLinks` otherwise, the first
//!    page's `as_of_sequence` as the cursor), handed over as [`WatchEvent::Resynced`], and the
//!    stream resumes after it. An intent is replayed from its start instead (what it still
//!    has, then its `refresh_completed`); what was already handed over is not again.
//! 4. A definitive answer (`INVALID_ARGUMENT`, `NOT_FOUND`, `UNAUTHENTICATED`,
//!    `PERMISSION_DENIED`, `FAILED_PRECONDITION`) ends the watch with that error.
//! 5. Anything else (`UNAVAILABLE`, transport errors, the `INTERNAL`/`UNKNOWN` a load
//!    balancer reports when it loses a backend mid-stream, …) is a failure: the watcher says
//!    so ([`WatchEvent::Reconnecting`]), waits a jittered, doubling backoff (100 ms to 5 s),
//!    moves to the next address if the service could not be reached, and resumes. Any message
//!    resets the count; [`Watcher::max_attempts`] bounds it (unbounded by default).
//!
//! A watch of one refresh intent ends after its `refresh_completed`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use futures_util::stream::BoxStream;
use tonic::{Code, Status, Streaming};

use crate::connect::{Client, unreachable};
use crate::error::{Error, definitive, reason_of};
use crate::pb;
use crate::pb::watch_refresh_request::Target as PbTarget;
use crate::pb::watch_refresh_response::Event;

/// What to follow.
#[derive(Debug, Clone, PartialEq)]
pub struct Target(PbTarget);

impl Target {
    /// One refresh intent: its results, then its `refresh_completed`, then the end.
    pub fn intent(id: impl Into<String>) -> Target {
        Target(PbTarget::RefreshIntentId(id.into()))
    }

    /// Every result of one Link's accounts.
    pub fn link(id: impl Into<String>) -> Target {
        Target(PbTarget::LinkId(id.into()))
    }

    /// Every result of one account.
    pub fn account(id: impl Into<String>) -> Target {
        Target(PbTarget::AccountId(id.into()))
    }

    /// Every result of these Links (at most 1,000 ids with [`Target::selection`]).
    pub fn links<I: IntoIterator<Item = S>, S: Into<String>>(ids: I) -> Target {
        Target::selection(ids, Vec::<String>::new())
    }

    /// Every result of these Links and these accounts, as one feed.
    pub fn selection<L, A, S, T>(link_ids: L, account_ids: A) -> Target
    where
        L: IntoIterator<Item = S>,
        S: Into<String>,
        A: IntoIterator<Item = T>,
        T: Into<String>,
    {
        Target(PbTarget::Selection(pb::Selection {
            link_ids: link_ids.into_iter().map(Into::into).collect(),
            account_ids: account_ids.into_iter().map(Into::into).collect(),
            all: false,
        }))
    }

    /// Every result of every Link.
    pub fn all() -> Target {
        Target(PbTarget::Selection(pb::Selection {
            all: true,
            ..Default::default()
        }))
    }

    /// The wire form.
    pub fn into_pb(self) -> PbTarget {
        self.0
    }

    fn is_intent(&self) -> bool {
        matches!(self.0, PbTarget::RefreshIntentId(_))
    }
}

impl From<PbTarget> for Target {
    fn from(target: PbTarget) -> Target {
        Target(target)
    }
}

/// What a [`Watcher`] hands over.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// A message of the stream: a result, movements, a refresh's completion, a heartbeat.
    Message(pb::WatchRefreshResponse),
    /// The cursor had expired: the target's Links as they stand (each account's latest
    /// result), current to `as_of_sequence`, from which the watch goes on.
    Resynced {
        /// The target's Links, each with its accounts' latest retained results.
        links: Vec<pb::LinkState>,
        /// The state includes everything up to here; the watch goes on after it.
        as_of_sequence: u64,
    },
    /// The stream failed with `status`; the watcher resumes after `delay` (failure number
    /// `attempt` in a row).
    Reconnecting {
        /// How the stream failed.
        status: Status,
        /// How long the watcher waits before it resumes.
        delay: Duration,
        /// Failures in a row, this one included.
        attempt: u32,
    },
}

/// The stream of one target's events; see the module docs for its rules. Created by
/// [`Client::watch`]; set it up with the builder methods before the first poll.
pub struct Watcher {
    cursor: Arc<Mutex<Option<u64>>>,
    setup: Option<Setup>,
    stream: Option<BoxStream<'static, Result<WatchEvent, Error>>>,
}

/// What the stream is made from, until its first poll.
struct Setup {
    client: Client,
    target: Target,
    start_time: Option<prost_types::Timestamp>,
    statuses: Vec<i32>,
    include_movements: bool,
    max_attempts: Option<u32>,
}

impl Client {
    /// A watcher of `target`, from now for a feed (from its start for an intent) unless
    /// [`Watcher::after`] gives a cursor.
    pub fn watch(&self, target: Target) -> Watcher {
        Watcher {
            cursor: Arc::new(Mutex::new(None)),
            setup: Some(Setup {
                client: self.clone(),
                target,
                start_time: None,
                statuses: Vec::new(),
                include_movements: false,
                max_attempts: None,
            }),
            stream: None,
        }
    }
}

impl Watcher {
    fn setup(&mut self) -> &mut Setup {
        self.setup
            .as_mut()
            .expect("a watcher is set up before it is first polled")
    }

    /// Starts after this cursor (a stored one), or as the target's default with `None`.
    pub fn after(self, cursor: Option<u64>) -> Watcher {
        *self.cursor.lock().expect("cursor") = cursor;
        self
    }

    /// A feed starts at the first result stored at or after this time (until a message
    /// gives a cursor).
    pub fn start_time(mut self, at: prost_types::Timestamp) -> Watcher {
        self.setup().start_time = Some(at);
        self
    }

    /// Only account results with these statuses (`pb::RefreshStatus` values; heartbeats
    /// still move the cursor).
    pub fn statuses<I: IntoIterator<Item = i32>>(mut self, statuses: I) -> Watcher {
        self.setup().statuses = statuses.into_iter().collect();
        self
    }

    /// Movements too (`include_movements`; the server needs `LINK_TOKEN_KEYS`).
    pub fn include_movements(mut self, include: bool) -> Watcher {
        self.setup().include_movements = include;
        self
    }

    /// Gives up after this many failures in a row (default: never).
    pub fn max_attempts(mut self, attempts: Option<u32>) -> Watcher {
        self.setup().max_attempts = attempts;
        self
    }

    /// The cursor: the sequence of the last message handed over (or resynced to). Store it;
    /// a watcher started [`Watcher::after`] it misses nothing and repeats nothing.
    pub fn cursor(&self) -> Option<u64> {
        *self.cursor.lock().expect("cursor")
    }
}

impl Stream for Watcher {
    type Item = Result<WatchEvent, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.stream.is_none() {
            let setup = self.setup.take().expect("set up once");
            let cursor = self.cursor.clone();
            self.stream = Some(Box::pin(futures_util::stream::unfold(
                Run::new(setup, cursor),
                |mut run| async move { run.next().await.map(|item| (item, run)) },
            )));
        }
        self.stream
            .as_mut()
            .expect("made above")
            .as_mut()
            .poll_next(cx)
    }
}

/// The watch's state between events.
struct Run {
    setup: Setup,
    cursor: Arc<Mutex<Option<u64>>>,
    /// The newest sequence handed over: nothing at or below it is handed over again.
    delivered: Option<u64>,
    stream: Option<Streaming<pb::WatchRefreshResponse>>,
    /// Replay the intent from its start on the next connection (its cursor expired).
    from_start: bool,
    failures: u32,
    /// Wait this long before the next connection.
    pause: Option<Duration>,
    queued: VecDeque<WatchEvent>,
    done: bool,
}

impl Run {
    fn new(setup: Setup, cursor: Arc<Mutex<Option<u64>>>) -> Run {
        let delivered = *cursor.lock().expect("cursor");
        Run {
            setup,
            cursor,
            delivered,
            stream: None,
            from_start: false,
            failures: 0,
            pause: None,
            queued: VecDeque::new(),
            done: false,
        }
    }

    fn cursor(&self) -> Option<u64> {
        *self.cursor.lock().expect("cursor")
    }

    fn set_cursor(&self, at: u64) {
        let mut cursor = self.cursor.lock().expect("cursor");
        *cursor = Some(cursor.map_or(at, |c| c.max(at)));
    }

    fn request(&self) -> pb::WatchRefreshRequest {
        let cursor = if self.from_start { None } else { self.cursor() };
        pb::WatchRefreshRequest {
            target: Some(self.setup.target.0.clone()),
            after_sequence: cursor,
            // Only until a message gives a cursor: the server refuses both together.
            start_time: self.setup.start_time.filter(|_| cursor.is_none()),
            statuses: self.setup.statuses.clone(),
            include_movements: self.setup.include_movements,
        }
    }

    async fn next(&mut self) -> Option<Result<WatchEvent, Error>> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return Some(Ok(event));
            }
            if self.done {
                return None;
            }
            if let Some(pause) = self.pause.take() {
                tokio::time::sleep(pause).await;
            }
            let Some(stream) = self.stream.as_mut() else {
                let request = self.request();
                match self.setup.client.stub().watch_refresh(request).await {
                    Ok(response) => {
                        self.stream = Some(response.into_inner());
                        self.from_start = false;
                    }
                    Err(status) => {
                        if let Some(error) = self.failed(status).await {
                            return Some(Err(error));
                        }
                    }
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(message)) => {
                    self.failures = 0;
                    if let Some(event) = self.accept(message) {
                        return Some(Ok(event));
                    }
                }
                Ok(None) => {
                    // The service never ends a stream OK but after a completed intent's
                    // refresh_completed (handled above): whatever closed it, resume, as
                    // after a failure, counted.
                    self.stream = None;
                    let ended = Status::unavailable("the stream ended without an error");
                    if let Some(error) = self.failed(ended).await {
                        return Some(Err(error));
                    }
                }
                Err(status) => {
                    self.stream = None;
                    if let Some(error) = self.failed(status).await {
                        return Some(Err(error));
                    }
                }
            }
        }
    }

    /// Moves the cursor with `message` and hands it over, unless it repeats one already
    /// handed over (an intent replayed from its start).
    fn accept(&mut self, message: pb::WatchRefreshResponse) -> Option<WatchEvent> {
        let completes = matches!(message.event, Some(Event::RefreshCompleted(_)));
        let repeated = !completes
            && !matches!(message.event, Some(Event::Heartbeat(_)))
            && self.delivered.is_some_and(|d| message.sequence <= d);
        self.set_cursor(message.sequence);
        if completes && self.setup.target.is_intent() {
            self.done = true;
        }
        if repeated {
            return None;
        }
        self.delivered = Some(
            self.delivered
                .map_or(message.sequence, |d| d.max(message.sequence)),
        );
        Some(WatchEvent::Message(message))
    }

    /// What a failed connection or stream leads to: `Some(error)` ends the watch; `None`
    /// goes on (resumed, re-synced or after a pause, with any event queued).
    async fn failed(&mut self, status: Status) -> Option<Error> {
        let reason = reason_of(&status);
        if status.code() == Code::Unavailable && reason.as_deref() == Some("STREAM_MAX_AGE") {
            return None;
        }
        if status.code() == Code::OutOfRange && reason.as_deref() == Some("CURSOR_EXPIRED") {
            return self.resync().await.err();
        }
        if definitive(&status) {
            self.done = true;
            return Some(Error::from(status));
        }
        self.failures += 1;
        if self
            .setup
            .max_attempts
            .is_some_and(|max| self.failures > max)
        {
            self.done = true;
            return Some(Error::from(status));
        }
        if unreachable(&status) || status.code() == Code::Unknown {
            self.setup.client.rotate();
        }
        let delay = backoff(self.failures);
        self.pause = Some(delay);
        self.queued.push_back(WatchEvent::Reconnecting {
            status,
            delay,
            attempt: self.failures,
        });
        None
    }

    /// Reads the target's state again after its cursor expired (see the module docs).
    async fn resync(&mut self) -> Result<(), Error> {
        let client = self.setup.client.clone();
        let (links, as_of_sequence) = match &self.setup.target.0 {
            PbTarget::RefreshIntentId(_) => {
                self.from_start = true;
                return Ok(());
            }
            PbTarget::LinkId(id) => {
                let state = client.get_link(id).await?;
                (state.link.into_iter().collect(), state.as_of_sequence)
            }
            PbTarget::AccountId(id) => {
                let ids = [id.clone()];
                every_link(&client, |link| has_account(link, &ids)).await?
            }
            PbTarget::Selection(selection) => {
                let selection = selection.clone();
                every_link(&client, |link| {
                    selection.all
                        || selection.link_ids.contains(&link.link_id)
                        || has_account(link, &selection.account_ids)
                })
                .await?
            }
        };
        {
            let mut cursor = self.cursor.lock().expect("cursor");
            *cursor = Some(as_of_sequence);
        }
        self.delivered = Some(as_of_sequence);
        self.queued.push_back(WatchEvent::Resynced {
            links,
            as_of_sequence,
        });
        Ok(())
    }
}

fn has_account(link: &pb::LinkState, ids: &[String]) -> bool {
    link.accounts.iter().any(|a| ids.contains(&a.account_id))
}

/// Every Link `keep` wants, over all of ListLinks' pages, and the first page's
/// `as_of_sequence` (watching after it misses nothing any page showed).
async fn every_link(
    client: &Client,
    keep: impl Fn(&pb::LinkState) -> bool,
) -> Result<(Vec<pb::LinkState>, u64), Error> {
    let mut links = Vec::new();
    let mut as_of = None;
    let mut page_token = String::new();
    loop {
        let page = client
            .list_links(pb::ListLinksRequest {
                page_size: 500,
                page_token,
            })
            .await?;
        as_of.get_or_insert(page.as_of_sequence);
        links.extend(page.links.into_iter().filter(|l| keep(l)));
        if page.next_page_token.is_empty() {
            return Ok((links, as_of.unwrap_or(0)));
        }
        page_token = page.next_page_token;
    }
}

/// 100 ms doubling to 5 s, each ±20 % so a crowd of watchers does not come back together.
fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(100) * 2u32.pow(failures.clamp(1, 7) - 1);
    let base = base.min(Duration::from_secs(5));
    base.mul_f64(rand::random_range(0.8..1.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_seconds_with_jitter() {
        let first = backoff(1);
        assert!(first >= Duration::from_millis(80) && first <= Duration::from_millis(120));
        let later = backoff(30);
        assert!(later >= Duration::from_secs(4) && later <= Duration::from_secs(6));
    }
}
