//! One WatchRefresh stream: replay from the database, then live entries from the hub, with
//! heartbeats when idle, until the intent completes, the client goes away or the server
//! shuts down.
//!
//! The stream is a state machine polled by the connection's own task: no task or channel of
//! its own, so an idle stream costs only its hub mailbox and this state. It registers with the
//! hub *before* it reads the backlog, so nothing committed in between can fall through;
//! entries at or below its cursor are skipped, so nothing is delivered twice. If its mailbox
//! overflows (the client reads slower than results arrive) it re-reads from the database from
//! its cursor: a slow watcher is late, never wrong. If a read fails mid-stream, the stream
//! ends UNAVAILABLE naming its cursor; if retention pruned past the cursor meanwhile, it ends
//! OUT_OF_RANGE (`CURSOR_EXPIRED`) rather than skip anything.
//!
//! Streams end on purpose too: after `--max-stream-age` (each stream ±10 %, so a crowd that
//! connected together does not reconnect together) a stream sends a heartbeat — a safe
//! cursor — and ends UNAVAILABLE with ErrorInfo `STREAM_MAX_AGE`, so clients reconnect, and
//! after a deploy or a scale-up spread over the replicas instead of staying where they
//! first landed.
//!
//! With traces on, each result sent is a `push` span linked to the webhook that brought it
//! (when this process took that webhook: see `telemetry`).

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tonic::Status;

use super::convert;
use crate::app::App;
use crate::clock::Millis;
use crate::domain::{IntentView, ResultRow, ResultStatus, Selection, Target};
use crate::error::AppError;
use crate::hub::{Next, Subscription};
use crate::pb::watch_refresh_request::Target as PbTarget;
use crate::pb::{self, watch_refresh_response::Event};
use crate::store::{Seek, StoreError};
use crate::telemetry;

/// Rows read from the database per catch-up query.
const PAGE: i64 = 256;

pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchRefreshResponse, Status>> + Send>>;

/// Validates the request and opens the stream (errors here end the call before any message).
pub async fn open(
    app: Arc<App>,
    mut request: pb::WatchRefreshRequest,
) -> Result<WatchStream, AppError> {
    let target = match request.target.take() {
        None => {
            return Err(AppError::InvalidArgument(
                "set exactly one target: refresh_intent_id, link_id, account_id or selection"
                    .into(),
            ));
        }
        Some(PbTarget::RefreshIntentId(id)) => {
            non_empty("refresh_intent_id", id).map(Target::Intent)?
        }
        Some(PbTarget::LinkId(id)) => non_empty("link_id", id).map(Target::Link)?,
        Some(PbTarget::AccountId(id)) => non_empty("account_id", id).map(Target::Account)?,
        Some(PbTarget::Selection(selection)) => self::selection(selection)?,
    };
    let statuses = statuses(&request.statuses)?;
    let movements = request.include_movements;
    if movements && app.config.link_token_keys.is_none() {
        return Err(AppError::MovementsDisabled(
            "stream movements (include_movements)",
        ));
    }
    let start_ms = start_time(&app, &target, &request)?;
    if let Some(after) = request.after_sequence {
        check_cursor(&app, after).await?;
    }
    if let Target::Intent(id) = &target
        && app.store.get_intent(id.clone()).await?.is_none()
    {
        return Err(AppError::NotFound(format!(
            "refresh intent {id:?} is not known to this service"
        )));
    }
    // Register first, then decide where to start: see the module docs.
    let subscription = app.hub.subscribe(target.clone());
    let limit = app.config.max_watch_streams;
    if app.hub.open_streams() > limit as u64 {
        return Err(AppError::Exhausted(format!(
            "the server already has {limit} open watch streams (--max-watch-streams); \
             close some or retry later"
        )));
    }
    let (cursor, catch_up) = match (&target, request.after_sequence, start_ms) {
        (_, Some(after), _) => (after as i64, true),
        // After the subscription, as a cursor: anything committed since is queued.
        (_, None, Some(at_ms)) => match app.store.seek(at_ms).await? {
            Seek::After(after) => (after, true),
            Seek::Expired { oldest } => {
                return Err(AppError::SeekExpired {
                    start: crate::clock::format_rfc3339_ms(at_ms),
                    oldest: oldest as u64,
                });
            }
        },
        (Target::Intent(_), None, None) => (0, true),
        // A feed "from now" starts after everything the hub has already handed out.
        (_, None, None) => (app.hub.high_water(), false),
    };
    // Heartbeats count from the moment the stream opened, not from when it is first polled.
    let opened_at = app.config.clock.now_ms();
    let ends_at = opened_at.saturating_add(lifetime(app.config.max_stream_age));
    let start = Start {
        target,
        cursor,
        catch_up,
        opened_at,
        ends_at,
        statuses,
        movements,
    };
    Ok(Box::pin(run(app, subscription, start)))
}

/// This stream's life: `--max-stream-age`, ±10 % drawn for each stream.
fn lifetime(max_age: std::time::Duration) -> crate::clock::Millis {
    let base = crate::clock::millis(max_age);
    base - base / 10 + rand::random_range(0..=base / 5)
}

/// How far ahead of this server's clock a `start_time` may be and still mean "now": clocks
/// of callers and servers differ a little.
const START_TIME_SLACK_MS: Millis = 60_000;

/// A selection's target: `all`, or its ids (each checked, repeats counted once).
fn selection(selection: pb::Selection) -> Result<Target, AppError> {
    let pb::Selection {
        link_ids,
        account_ids,
        all,
    } = selection;
    if all {
        if !(link_ids.is_empty() && account_ids.is_empty()) {
            return Err(AppError::InvalidArgument(
                "selection: all follows every result; leave link_ids and account_ids empty".into(),
            ));
        }
        return Ok(Target::All);
    }
    let asked = link_ids.len() + account_ids.len();
    if asked > 2 * Selection::MAX_IDS {
        // Far past the limit even if half were repeats: refused before each id is checked
        // and hashed.
        return Err(too_many(asked));
    }
    for id in &link_ids {
        super::check_id("selection.link_ids", id)?;
    }
    for id in &account_ids {
        super::check_id("selection.account_ids", id)?;
    }
    let selection = Selection::new(link_ids, account_ids);
    if selection.is_empty() {
        return Err(AppError::InvalidArgument(
            "selection is empty: list link_ids and/or account_ids, or set all".into(),
        ));
    }
    if selection.len() > Selection::MAX_IDS {
        return Err(too_many(selection.len()));
    }
    Ok(Target::Selection(Arc::new(selection)))
}

fn too_many(ids: usize) -> AppError {
    AppError::InvalidArgument(format!(
        "selection lists {ids} ids; at most {} Links and accounts together are accepted: \
         split it over several streams, or set all",
        Selection::MAX_IDS
    ))
}

/// The time a feed seeks to, if it asked for one (see `START_TIME_SLACK_MS`).
fn start_time(
    app: &App,
    target: &Target,
    request: &pb::WatchRefreshRequest,
) -> Result<Option<Millis>, AppError> {
    let Some(start) = &request.start_time else {
        return Ok(None);
    };
    if let Target::Intent(_) = target {
        return Err(AppError::InvalidArgument(
            "start_time is for feeds (link_id, account_id, selection); an intent stream \
             always starts at the intent's first result"
                .into(),
        ));
    }
    if request.after_sequence.is_some() {
        return Err(AppError::InvalidArgument(
            "give start_time or after_sequence, not both: after_sequence resumes exactly \
             where a stream was, start_time seeks by time"
                .into(),
        ));
    }
    let at_ms = convert::millis(start)
        .ok_or_else(|| AppError::InvalidArgument("start_time is not a valid timestamp".into()))?;
    let now_ms = app.config.clock.now_ms();
    if at_ms > now_ms.saturating_add(START_TIME_SLACK_MS) {
        return Err(AppError::InvalidArgument(format!(
            "start_time {} is ahead of the server's clock ({}); to start now, leave it unset",
            crate::clock::format_rfc3339_ms(at_ms),
            crate::clock::format_rfc3339_ms(now_ms)
        )));
    }
    Ok(Some(at_ms))
}

/// The result statuses a stream is limited to (empty: all), each one an account result's.
fn statuses(asked: &[i32]) -> Result<Vec<ResultStatus>, AppError> {
    let mut wanted = Vec::new();
    for &value in asked {
        let status = match pb::RefreshStatus::try_from(value) {
            Ok(pb::RefreshStatus::Succeeded) => ResultStatus::Succeeded,
            Ok(pb::RefreshStatus::Failed) => ResultStatus::Failed,
            Ok(pb::RefreshStatus::Rejected) => ResultStatus::Rejected,
            Ok(pb::RefreshStatus::TimedOut) => ResultStatus::TimedOut,
            other => {
                let name = other.map_or(value.to_string(), |s| s.as_str_name().to_owned());
                return Err(AppError::InvalidArgument(format!(
                    "statuses: {name} is not a status an account result has; use \
                     REFRESH_STATUS_SUCCEEDED, _FAILED, _REJECTED or _TIMED_OUT"
                )));
            }
        };
        if !wanted.contains(&status) {
            wanted.push(status);
        }
    }
    Ok(wanted)
}

/// Whether `row` is sent on a stream limited to `statuses` (empty: every result) that asked
/// for movements or not: `statuses` limits account results only.
fn wanted(statuses: &[ResultStatus], movements: bool, row: &ResultRow) -> bool {
    if !row.is_result() {
        return movements;
    }
    statuses.is_empty() || row.status().is_ok_and(|s| statuses.contains(&s))
}

fn non_empty(field: &str, id: String) -> Result<String, AppError> {
    super::check_id(field, &id)?;
    Ok(id)
}

async fn check_cursor(app: &App, after: u64) -> Result<(), AppError> {
    if after == 0 {
        return Ok(());
    }
    let bounds = app.store.log_bounds().await?;
    let after_i = i64::try_from(after).unwrap_or(i64::MAX);
    if after_i < bounds.pruned_through() {
        return Err(AppError::CursorExpired {
            after,
            oldest: bounds.oldest as u64,
        });
    }
    if after_i > bounds.newest {
        return Err(AppError::CursorAhead {
            after,
            newest: bounds.newest as u64,
        });
    }
    Ok(())
}

fn message(sequence: i64, event: Event) -> pb::WatchRefreshResponse {
    pb::WatchRefreshResponse {
        sequence: sequence.max(0) as u64,
        event: Some(event),
    }
}

fn heartbeat(app: &App, sequence: i64) -> pb::WatchRefreshResponse {
    message(
        sequence,
        Event::Heartbeat(pb::Heartbeat {
            server_time: Some(convert::timestamp(app.config.clock.now_ms())),
        }),
    )
}

fn shutting_down(cursor: i64) -> Status {
    Status::unavailable(format!(
        "the server is shutting down; reconnect and resume with after_sequence = {cursor}"
    ))
}

/// The stream reached its age: it ends resumable (see the module docs).
fn aged(cursor: i64) -> Status {
    AppError::StreamMaxAge {
        after: cursor.max(0) as u64,
    }
    .into()
}

fn result_message(row: &ResultRow) -> pb::WatchRefreshResponse {
    message(row.sequence, convert::entry_event(row))
}

/// The stream cannot read the store mid-way (a pool timeout, a failing disk): it ends
/// UNAVAILABLE with its cursor, so the client reconnects and resumes exactly there. The
/// cause goes to the log, not to the client.
fn read_failed(cursor: i64, error: &StoreError) -> Status {
    tracing::warn!(%error, cursor, "a watch stream could not read the store; it ends resumable");
    Status::unavailable(format!(
        "the server could not read the result log; reconnect and resume with after_sequence = {cursor}"
    ))
}

/// Where an intent stream stands once it has read the log up to now.
enum Settled {
    /// Still pending (or not an intent stream): go on live.
    Open,
    /// Completed: end with this summary.
    Ended(pb::WatchRefreshResponse),
    /// Completed by the result at this sequence, after the cursor, which this stream has not
    /// read yet: go on live until the hub has handed out everything up to it.
    Unread(i64),
}

/// The stream's last message after delivering `row`, if `row` completed the intent it
/// follows (with `movements`: or concluded the last movements its results owed).
async fn completed_by(
    app: &App,
    target: &Target,
    row: &ResultRow,
    movements: bool,
) -> Result<Option<pb::WatchRefreshResponse>, Status> {
    if !(row.completes_intent || (movements && row.concludes_movements())) {
        return Ok(None);
    }
    Ok(
        match completion(app, target, row.sequence, false, movements).await? {
            Settled::Ended(summary) => Some(summary),
            Settled::Open | Settled::Unread(_) => None,
        },
    )
}

/// Whether the intent this stream follows has completed, `cursor` being the last sequence
/// delivered. Completed by a result at or before the cursor (or `regardless`), the stream
/// ends with the summary. Completed by one after it, that result may not be readable yet:
/// the intent's state is read straight from the database, while reads of the log stop at
/// what the hub has been handed (on SQLite a commit is readable a moment before it is
/// published; on PostgreSQL another replica's commit reaches this one's hub through its log
/// tail). So the stream goes on live (`Unread`): the hub delivers the rest, and once it has
/// handed out everything up to the completing sequence, whatever of it was meant for this
/// stream has been delivered, and the stream ends with its summary (`regardless`) even when
/// the completing result is not in its range (retention pruned it, or an old database
/// completed it elsewhere).
///
/// With `movements`, the intent is complete for this stream once every fetch its results
/// owed is settled too, and "the completing sequence" is the newest of its movements entries
/// when that is later: they are all delivered before refresh_completed, whose sequence is
/// then a cursor past them.
async fn completion(
    app: &App,
    target: &Target,
    cursor: i64,
    regardless: bool,
    movements: bool,
) -> Result<Settled, Status> {
    let Target::Intent(id) = target else {
        return Ok(Settled::Open);
    };
    let intent: Option<IntentView> = app
        .store
        .get_intent(id.clone())
        .await
        .map_err(|e| read_failed(cursor, &e))?;
    let Some(intent) = intent.filter(|i| i.status.is_final()) else {
        return Ok(Settled::Open);
    };
    let mut completed = intent.completed_sequence.unwrap_or_default();
    if movements {
        let settled = app
            .store
            .movements_settled(id.clone())
            .await
            .map_err(|e| read_failed(cursor, &e))?;
        match settled {
            // A fetch is still owed: its entries come live, and the one that concludes the
            // last looks again.
            None => return Ok(Settled::Open),
            Some(newest) => completed = completed.max(newest),
        }
    }
    if completed > cursor && !regardless {
        return Ok(Settled::Unread(completed));
    }
    Ok(Settled::Ended(message(
        completed,
        Event::RefreshCompleted(convert::refresh_intent(&intent)),
    )))
}

/// Where and how a stream starts, as `open` decided.
struct Start {
    target: Target,
    /// The last sequence it counts as delivered.
    cursor: i64,
    /// Whether it reads the log from the cursor before going live.
    catch_up: bool,
    /// When it opened: heartbeats count from here.
    opened_at: i64,
    /// When it ends on purpose (`--max-stream-age`).
    ends_at: i64,
    /// Only results with these statuses are sent (empty: all).
    statuses: Vec<ResultStatus>,
    /// Movements entries are sent too (include_movements).
    movements: bool,
}

fn run(
    app: Arc<App>,
    subscription: Subscription,
    start: Start,
) -> impl Stream<Item = Result<pb::WatchRefreshResponse, Status>> + Send {
    let Start {
        target,
        mut cursor,
        catch_up: mut catching_up,
        opened_at: mut last_sent,
        ends_at,
        statuses,
        movements,
    } = start;
    let interval = crate::clock::millis(app.config.heartbeat_interval);
    async_stream::try_stream! {
        let clock = app.config.clock.clone();
        // The sequence of the result that completed the intent, once seen completed by a
        // result this stream has not delivered yet.
        let mut completed_at: Option<i64> = None;
        if !catching_up {
            // A feed from now opens with the cursor it starts after.
            yield heartbeat(&app, cursor);
        }
        loop {
            if app.hub.is_closed() {
                Err::<(), Status>(shutting_down(cursor))?;
            }
            if catching_up {
                // The store reads only what is durable.
                let page = app
                    .store
                    .results_after(target.clone(), cursor, PAGE)
                    .await
                    .map_err(|e| read_failed(cursor, &e))?;
                // Retention may have pruned past the cursor since the stream opened (or since
                // the last page): refuse rather than skip what was there. A cursor of 0 asks
                // only for what is still retained.
                if cursor > 0 && page.pruned_through > cursor {
                    Err::<(), Status>(
                        AppError::CursorExpired {
                            after: cursor as u64,
                            oldest: (page.pruned_through + 1) as u64,
                        }
                        .into(),
                    )?;
                }
                let rows = page.rows;
                let done = (rows.len() as i64) < PAGE;
                for row in rows {
                    // A result filtered out still moves the cursor (and may complete the
                    // intent): heartbeats then carry the stream past it.
                    cursor = row.sequence;
                    if wanted(&statuses, movements, &row) {
                        last_sent = clock.now_ms();
                        // Until the message is taken: read from the log, linked to its webhook.
                        let push = telemetry::push_span(row.sequence, &row.event_id, true, &row.trace_context);
                        yield result_message(&row);
                        drop(push);
                    }
                    if let Some(done) = completed_by(&app, &target, &row, movements).await? {
                        yield done;
                        return;
                    }
                }
                if done {
                    match completion(&app, &target, cursor, false, movements).await? {
                        Settled::Ended(summary) => {
                            yield summary;
                            return;
                        }
                        Settled::Unread(at) => {
                            completed_at = Some(at);
                            catching_up = false;
                        }
                        Settled::Open => catching_up = false,
                    }
                }
                continue;
            }
            match subscription.try_next() {
                Next::Entry(row) => {
                    if row.sequence <= cursor {
                        continue;
                    }
                    cursor = row.sequence;
                    if wanted(&statuses, movements, &row) {
                        last_sent = clock.now_ms();
                        // Until the message is taken: live from the hub, linked to its webhook.
                        let push = telemetry::push_span(row.sequence, &row.event_id, false, &row.trace_context);
                        yield result_message(&row);
                        drop(push);
                    }
                    if let Some(done) = completed_by(&app, &target, &row, movements).await? {
                        yield done;
                        return;
                    }
                    if clock.now_ms() >= ends_at {
                        // A stream kept busy past its age ends too; everything up to the
                        // cursor was delivered, so it is a safe place to resume.
                        yield heartbeat(&app, cursor);
                        Err::<(), Status>(aged(cursor))?;
                    }
                }
                Next::Lagged => {
                    app.metrics.watch_lagged.inc();
                    subscription.recover();
                    catching_up = true;
                }
                Next::Closed => Err::<(), Status>(shutting_down(cursor))?,
                Next::Idle { high_water } => {
                    if completed_at.is_some_and(|at| high_water >= at) {
                        // Everything up to the completing result meant for this stream has
                        // been delivered: whatever is missing is not in its range.
                        if let Settled::Ended(summary) =
                            completion(&app, &target, cursor, true, movements).await?
                        {
                            yield summary;
                            return;
                        }
                    }
                    if clock.now_ms() >= ends_at {
                        // As below: the high water is a safe cursor once idle.
                        cursor = cursor.max(high_water);
                        yield heartbeat(&app, cursor);
                        Err::<(), Status>(aged(cursor))?;
                    }
                    if clock.now_ms() >= last_sent.saturating_add(interval) {
                        // Everything up to the high water meant for us was delivered, so it
                        // is a safe cursor; read it fresh so the cursor keeps moving.
                        cursor = cursor.max(high_water);
                        last_sent = clock.now_ms();
                        yield heartbeat(&app, cursor);
                        continue;
                    }
                    let wake = last_sent.saturating_add(interval).min(ends_at);
                    tokio::select! {
                        _ = subscription.changed() => {}
                        _ = clock.sleep_until(wake) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    /// Streams opened together do not end together: each lives its age ±10 %, spread over
    /// that whole range.
    #[test]
    fn each_stream_lives_its_age_give_or_take_a_tenth() {
        let lives: Vec<i64> = (0..2_000)
            .map(|_| super::lifetime(Duration::from_secs(1_800)))
            .collect();
        let (min, max) = (lives.iter().min().unwrap(), lives.iter().max().unwrap());
        assert!(*min >= 1_620_000 && *max <= 1_980_000, "{min}..{max}");
        assert!(max - min > 300_000, "spread over the range: {min}..{max}");
    }
}
