//! The human gRPC clients: `refresh` (request a refresh, then follow it to its outcome),
//! `watch` (follow an intent, or a feed of Links, accounts or every Link) and `link` (a
//! Link's state, once), with reconnect-and-resume when the server goes away, Ctrl-C, exit
//! codes, and the display that picks live, plain or JSON output. The strings themselves are
//! built by the pure functions in `super::render`; how the connection is made (TLS, client
//! certificate, bearer token) is `super::connect`.
//!
//! Exit codes: 0 the refresh SUCCEEDED (for `link`: the state was shown); 1 it ended FAILED,
//! REJECTED or TIMED_OUT; 2 a usage or RPC error (one line on stderr); 130 interrupted.

use std::future::Future;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use fintoc_refresh_client::{Client, WatchEvent};
use futures_util::StreamExt;
use tonic::Status;

use super::connect::{self, ConnectArgs, Connection, Credentials};
use super::render::{self, Board};
use super::{LinkArgs, RefreshArgs, WatchArgs};
use crate::pb::watch_refresh_request::Target;
use crate::pb::watch_refresh_response::Event;
use crate::pb::{self, RefreshStatus, RefreshType};

/// Reconnects in a row without a message in between before giving up: enough to ride out a
/// server restart, few enough that a dead server is reported within seconds.
const RECONNECT_ATTEMPTS: u32 = 5;
/// Move up one line and clear it: a live `watch` overwrites its previous heartbeat.
const REPLACE_LINE: &str = "\x1b[1A\r\x1b[2K";

/// `fintoc-refresh refresh`: request a refresh and show each account's result as it arrives.
pub async fn refresh(args: RefreshArgs) -> ExitCode {
    interruptible(run_refresh(args)).await
}

/// `fintoc-refresh watch`: follow an intent until it completes, or a Link/account forever.
pub async fn watch(args: WatchArgs) -> ExitCode {
    interruptible(run_watch(args)).await
}

/// `fintoc-refresh link`: show a Link's state once.
pub async fn link(args: LinkArgs) -> ExitCode {
    interruptible(run_link(args)).await
}

/// Ctrl-C ends the work (dropping the stream, which tells the server at once) and exits 130.
async fn interruptible(work: impl Future<Output = ExitCode>) -> ExitCode {
    tokio::select! {
        code = work => code,
        Ok(()) = tokio::signal::ctrl_c() => ExitCode::from(130),
    }
}

async fn run_refresh(args: RefreshArgs) -> ExitCode {
    if args.link_token.trim().is_empty() {
        return fail("error: --link-token is empty");
    }
    let Connection {
        stub: mut client,
        library,
    } = match connect(&args.connection).await {
        Ok(connection) => connection,
        Err(code) => return code,
    };
    let response = match client.request_refresh(refresh_request(&args)).await {
        Ok(response) => response.into_inner(),
        Err(status) => return fail(&render::error_line("refresh request failed", &status)),
    };
    let Some(intent) = response.refresh_intent else {
        return fail("error: the server answered RequestRefresh without a refresh intent");
    };
    let mut display = Display::stdout(args.json, false);
    if display
        .requested(&intent, response.joined_existing)
        .is_err()
    {
        return ExitCode::from(2);
    }
    // No cursor: an intent replays from its start, so results that beat us here still show.
    let spec = WatchSpec {
        movements: args.movements,
        ..WatchSpec::target(Target::RefreshIntentId(intent.id))
    };
    follow(&library, &spec, None, &mut display).await
}

async fn run_watch(args: WatchArgs) -> ExitCode {
    let Some(spec) = watch_spec(&args, crate::clock::system_now_ms()) else {
        return fail("error: give one of --link-id, --account-id, --all or --refresh-intent-id");
    };
    let library = match connect(&args.connection).await {
        Ok(connection) => connection.library,
        Err(code) => return code,
    };
    let mut display = Display::stdout(args.json, true);
    follow(&library, &spec, args.after, &mut display).await
}

async fn run_link(args: LinkArgs) -> ExitCode {
    if args.link_id.trim().is_empty() {
        return fail("error: the Link id is empty");
    }
    let mut client = match connect(&args.connection).await {
        Ok(connection) => connection.stub,
        Err(code) => return code,
    };
    let request = pb::GetLinkRequest {
        link_id: args.link_id,
    };
    let response = match client.get_link(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return fail(&render::error_line("link lookup failed", &status)),
    };
    let Some(link) = &response.link else {
        return fail("error: the server answered GetLink without a Link");
    };
    let text = if args.json {
        render::link_json(&response)
    } else {
        render::link_lines(link, response.as_of_sequence).join("\n")
    };
    // A closed pipe is nobody reading, as for the streams: exit 2 without a panic.
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(2),
    }
}

/// The request for `refresh`; the link token goes only into this message, never to output.
fn refresh_request(args: &RefreshArgs) -> pb::RequestRefreshRequest {
    let refresh_type = if args.historical {
        RefreshType::Historical
    } else {
        RefreshType::OnlyLast
    };
    pb::RequestRefreshRequest {
        link_token: args.link_token.clone(),
        refresh_type: refresh_type.into(),
        idempotency_key: args.idempotency_key.clone().unwrap_or_default(),
        keep_link_token: args.movements,
    }
}

/// What every (re)connection of one stream asks for; only the cursor changes between them.
#[derive(Debug, Clone, PartialEq)]
struct WatchSpec {
    target: Target,
    /// `--since`, resolved once when the command started.
    start_time: Option<prost_types::Timestamp>,
    /// `--status`, as the wire's enum numbers.
    statuses: Vec<i32>,
    /// `--movements`.
    movements: bool,
}

impl WatchSpec {
    /// The target alone: from its start (an intent) or from now (a feed), every status.
    fn target(target: Target) -> WatchSpec {
        WatchSpec {
            target,
            start_time: None,
            statuses: Vec::new(),
            movements: false,
        }
    }
}

/// The stream `watch` asks for, with `--since` resolved against `now_ms`. clap's group
/// makes a target present; `None` only if that contract breaks.
fn watch_spec(args: &WatchArgs, now_ms: crate::clock::Millis) -> Option<WatchSpec> {
    let statuses = args
        .statuses
        .iter()
        .map(|&s| i32::from(RefreshStatus::from(s)))
        .collect();
    Some(WatchSpec {
        target: watch_target(args)?,
        start_time: args
            .since
            .map(|since| crate::grpc::convert::timestamp(since.at(now_ms))),
        statuses,
        movements: args.movements,
    })
}

/// One id alone keeps the single `link_id`/`account_id` target that servers older than
/// `Selection` understand; more ids, or both kinds, become one selection. A repeated id
/// counts once, so `--link-id a --link-id a` is still the single target.
fn watch_target(args: &WatchArgs) -> Option<Target> {
    if let Some(id) = &args.refresh_intent_id {
        return Some(Target::RefreshIntentId(id.clone()));
    }
    if args.all {
        return Some(Target::Selection(pb::Selection {
            all: true,
            ..Default::default()
        }));
    }
    let (links, accounts) = (distinct(&args.link_ids), distinct(&args.account_ids));
    match (links.as_slice(), accounts.as_slice()) {
        ([], []) => None,
        ([link], []) => Some(Target::LinkId(link.clone())),
        ([], [account]) => Some(Target::AccountId(account.clone())),
        _ => Some(Target::Selection(pb::Selection {
            link_ids: links,
            account_ids: accounts,
            all: false,
        })),
    }
}

/// The ids in the order given, each once.
fn distinct(ids: &[String]) -> Vec<String> {
    let mut seen = Vec::with_capacity(ids.len());
    for id in ids {
        if !seen.contains(id) {
            seen.push(id.clone());
        }
    }
    seen
}

/// Connects with the TLS settings of `args` and the token of `FINTOC_REFRESH_TOKEN`.
async fn connect(args: &ConnectArgs) -> Result<Connection, ExitCode> {
    let credentials = Credentials::from_env().map_err(|line| fail(&format!("error: {line}")))?;
    connect::connect(args, credentials)
        .await
        .map_err(|line| fail(&format!("error: {line}")))
}

fn fail(line: &str) -> ExitCode {
    eprintln!("{line}");
    ExitCode::from(2)
}

/// Streams the target until its intent completes (or forever for a feed), through the client
/// library's [`Watcher`](fintoc_refresh_client::Watcher): it resumes after the last sequence
/// seen, so nothing is missed or repeated (the start time goes only until a message gives a
/// cursor: the server refuses both together), re-syncs an expired cursor, and gives up after [`RECONNECT_ATTEMPTS`]
/// failures in a row; each reconnection is noted on stderr.
async fn follow<O: Write, E: Write>(
    client: &Client,
    spec: &WatchSpec,
    cursor: Option<u64>,
    display: &mut Display<O, E>,
) -> ExitCode {
    let mut watcher = client
        .watch(spec.target.clone().into())
        .after(cursor)
        .statuses(spec.statuses.iter().copied())
        .include_movements(spec.movements)
        .max_attempts(Some(RECONNECT_ATTEMPTS));
    if let Some(at) = spec.start_time {
        watcher = watcher.start_time(at);
    }
    while let Some(event) = watcher.next().await {
        let shown = match event {
            Ok(WatchEvent::Message(msg)) => {
                if display.message(&msg).is_err() {
                    return ExitCode::from(2);
                }
                if let Some(Event::RefreshCompleted(intent)) = &msg.event {
                    return outcome_code(intent.status);
                }
                Ok(())
            }
            Ok(WatchEvent::Reconnecting {
                status,
                delay,
                attempt,
            }) => display.note(&reconnect_note(&status, delay, attempt, watcher.cursor())),
            Ok(WatchEvent::Resynced {
                links,
                as_of_sequence,
            }) => display.note(&format!(
                "the cursor had expired: re-synced {} Link(s) as of #{as_of_sequence}; \
                 results before it are not shown",
                links.len()
            )),
            Err(error) => {
                return fail(&render::error_line("watch failed", &error.into_status()));
            }
        };
        if shown.is_err() {
            return ExitCode::from(2);
        }
    }
    fail("error: the stream ended before the refresh completed")
}

fn outcome_code(status: i32) -> ExitCode {
    if status == i32::from(RefreshStatus::Succeeded) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn reconnect_note(status: &Status, delay: Duration, attempt: u32, cursor: Option<u64>) -> String {
    let resume = cursor.map_or(String::new(), |c| format!(", resuming after #{c}"));
    format!(
        "connection lost ({}: {}); reconnecting in {} (attempt {attempt} of {RECONNECT_ATTEMPTS}{resume})",
        render::code_name(status.code()),
        status.message(),
        crate::config::format_duration(delay),
    )
}

/// What the output looks like: chosen once from `--json` and whether stdout is a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A terminal: the in-place board (`refresh`) or colored lines (`watch`).
    Live,
    /// Piped or redirected: one plain line per event, no escape codes.
    Plain,
    /// `--json`: one JSON object per line.
    Json,
}

/// Writes each event in the chosen mode. Notes (reconnecting) go to stderr so stdout stays
/// data only, except on the live board, where they take the footer so the board stays intact.
struct Display<O: Write, E: Write> {
    mode: Mode,
    out: O,
    err: E,
    /// `watch` shows heartbeats; `refresh` only uses them as cursors.
    heartbeats: bool,
    /// The live board of a terminal `refresh`, once requested.
    board: Option<Board>,
    /// Live `watch`: the last line written is a heartbeat, so the next one replaces it.
    heartbeat_on_screen: bool,
    /// Color escapes on a terminal, unless NO_COLOR (https://no-color.org) asks otherwise;
    /// cursor moves stay, they are what makes the live display work.
    color: bool,
}

impl Display<io::Stdout, io::Stderr> {
    fn stdout(json: bool, heartbeats: bool) -> Self {
        let mode = match (json, io::stdout().is_terminal()) {
            (true, _) => Mode::Json,
            (false, true) => Mode::Live,
            (false, false) => Mode::Plain,
        };
        let mut display = Display::new(mode, io::stdout(), io::stderr(), heartbeats);
        display.color &= std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        display
    }
}

impl<O: Write, E: Write> Display<O, E> {
    fn new(mode: Mode, out: O, err: E, heartbeats: bool) -> Self {
        Display {
            mode,
            out,
            err,
            heartbeats,
            board: None,
            heartbeat_on_screen: false,
            color: mode == Mode::Live,
        }
    }

    fn requested(&mut self, intent: &pb::RefreshIntent, joined: bool) -> io::Result<()> {
        let mfa = &intent.mfa_widget_token;
        match self.mode {
            Mode::Json => writeln!(self.out, "{}", render::json_requested(intent, joined))?,
            Mode::Plain => writeln!(self.out, "{}", render::plain_requested(intent, joined))?,
            Mode::Live => writeln!(self.out, "{}", render::requested_line(intent, joined))?,
        }
        if !mfa.is_empty() && self.mode != Mode::Json {
            writeln!(self.out, "{}", render::mfa_line(mfa))?;
        }
        if self.mode == Mode::Live {
            let mut board = Board::new(&intent.accounts, self.color);
            write!(self.out, "{}", board.frame())?;
            self.board = Some(board);
        }
        self.out.flush()
    }

    fn message(&mut self, msg: &pb::WatchRefreshResponse) -> io::Result<()> {
        let heartbeat = matches!(msg.event, Some(Event::Heartbeat(_)));
        if let Some(board) = &mut self.board {
            update_board(board, msg);
            write!(self.out, "{}", board.frame())?;
            return self.out.flush();
        }
        if heartbeat && !self.heartbeats {
            return Ok(());
        }
        let line = match self.mode {
            Mode::Json => render::json_message(msg),
            Mode::Plain => render::message_line(msg, false),
            Mode::Live => render::message_line(msg, self.color),
        };
        let Some(line) = line else { return Ok(()) };
        if self.mode == Mode::Live && self.heartbeat_on_screen {
            write!(self.out, "{REPLACE_LINE}")?;
        }
        self.heartbeat_on_screen = self.mode == Mode::Live && heartbeat;
        writeln!(self.out, "{line}")?;
        self.out.flush()
    }

    fn note(&mut self, text: &str) -> io::Result<()> {
        if let Some(board) = &mut self.board {
            board.set_footer(Some(text.to_owned()));
            write!(self.out, "{}", board.frame())?;
            return self.out.flush();
        }
        // A note on the same terminal sits below the heartbeat: never overwrite it.
        self.heartbeat_on_screen = false;
        writeln!(self.err, "{text}")
    }
}

/// Any message means the stream is healthy again, so a reconnect note leaves the footer.
fn update_board(board: &mut Board, msg: &pb::WatchRefreshResponse) {
    match &msg.event {
        Some(Event::AccountResult(result)) => {
            board.apply(result);
            board.set_footer(None);
        }
        Some(Event::RefreshCompleted(intent)) => {
            // The final intent is authoritative, timed-out accounts included.
            intent.accounts.iter().for_each(|a| board.apply(a));
            board.set_footer(Some(render::outcome_line(intent)));
        }
        Some(Event::Movements(changed)) => {
            board.set_footer(Some(render::movements_summary(changed)));
        }
        Some(Event::MovementsUnavailable(u)) => {
            board.set_footer(Some(render::unavailable_line(u)));
        }
        Some(Event::Heartbeat(_)) | None => board.set_footer(None),
    }
}

#[cfg(test)]
mod tests;
