//! The command line: `serve`, `simulate`, the human clients `refresh`, `watch` and `link`,
//! and `copy-store` for moving a SQLite store to PostgreSQL.
//! Subcommand and flag names are fixed by the contract.

pub mod client;
pub mod connect;
pub mod copy_store;
mod render;
pub mod serve;
pub mod simulate;
pub mod since;

use clap::{Args, Parser, Subcommand};

use crate::pb;
use since::Since;

#[derive(Debug, Parser)]
#[command(
    name = "fintoc-refresh",
    version,
    about = "Refresh bank Links through Fintoc and push each account's result over gRPC"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service.
    Serve(Box<crate::config::ServeArgs>),
    /// Run the Fintoc simulator alone (for other teams' integration tests).
    Simulate(simulate::SimulateArgs),
    /// Request a refresh of one Link and show each account's result as it arrives.
    Refresh(RefreshArgs),
    /// Follow the results of Links, accounts, every Link, or one refresh intent.
    Watch(WatchArgs),
    /// Show a Link's state: each account's last result, the pending refresh, and whether a
    /// refresh of each type may be requested now.
    Link(LinkArgs),
    /// Copy a SQLite store into an empty PostgreSQL database, keeping every sequence.
    ///
    /// Copies the result log, refresh intents, Links, accounts, idempotency keys and raw
    /// webhook events with their sequences and ids, so the cursors watchers hold stay valid
    /// on PostgreSQL and new results continue after the newest sequence SQLite ever handed
    /// out. The SQLite file is only read (a server may keep running on it: the copy is the
    /// store as it was when the copy began). The PostgreSQL database is migrated and must
    /// hold no data; the copy runs in one transaction, so a failed copy leaves it empty.
    /// Progress goes to stderr; a summary line to stdout.
    CopyStore(copy_store::CopyStoreArgs),
}

/// `fintoc-refresh refresh`
#[derive(Clone, Args)]
pub struct RefreshArgs {
    /// The Link's token (a bank credential: prefer the LINK_TOKEN env var over the flag).
    #[arg(long, env = "LINK_TOKEN", hide_env_values = true)]
    pub link_token: String,
    /// Refresh historical statements instead of only the latest one.
    #[arg(long)]
    pub historical: bool,
    #[command(flatten)]
    pub connection: connect::ConnectArgs,
    /// One JSON object per line instead of the human display.
    #[arg(long)]
    pub json: bool,
    /// Idempotency key for the request (repeat it to get the same intent back).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Keep the Link's token (sealed, on the server) and print each account's new movements
    /// as they are fetched, before the refresh's outcome.
    #[arg(long)]
    pub movements: bool,
}

// By hand, so the link token (a bank credential) cannot leak through `{:?}`.
impl std::fmt::Debug for RefreshArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshArgs")
            .field("link_token", &"[redacted]")
            .field("historical", &self.historical)
            .field("connection", &self.connection)
            .field("json", &self.json)
            .field("idempotency_key", &self.idempotency_key)
            .field("movements", &self.movements)
            .finish()
    }
}

/// `fintoc-refresh watch`
///
/// One `--link-id` or `--account-id` alone is sent as that single target, which every server
/// version understands; more ids, or both kinds, become one `Selection` feed.
#[derive(Debug, Clone, Args)]
#[command(group(
    clap::ArgGroup::new("target")
        .required(true)
        .multiple(true)
        .args(["link_ids", "account_ids", "refresh_intent_id", "all"])
))]
pub struct WatchArgs {
    /// Follow every result of this Link; repeat it to follow several Links as one feed.
    #[arg(long = "link-id", value_name = "LINK_ID")]
    pub link_ids: Vec<String>,
    /// Follow every result of this account; repeat it, or add --link-id, for one feed of all.
    #[arg(long = "account-id", value_name = "ACCOUNT_ID")]
    pub account_ids: Vec<String>,
    /// Follow one refresh intent until it completes.
    #[arg(long, conflicts_with_all = ["link_ids", "account_ids", "all"])]
    pub refresh_intent_id: Option<String>,
    /// Follow every result of every Link.
    #[arg(long, conflicts_with_all = ["link_ids", "account_ids"])]
    pub all: bool,
    /// Resume after this sequence (0 = everything retained).
    #[arg(long)]
    pub after: Option<u64>,
    /// Start with the first result stored at or after this time: RFC 3339
    /// (2026-12-03T10:00:00Z) or an age meaning that long ago (90m, 1h, 2d). Feeds only.
    #[arg(
        long,
        value_name = "TIME",
        value_parser = Since::parse,
        conflicts_with_all = ["after", "refresh_intent_id"]
    )]
    pub since: Option<Since>,
    /// Only results with this status; repeat it for several (default: every status).
    #[arg(long = "status", value_name = "STATUS", value_enum, ignore_case = true)]
    pub statuses: Vec<StatusFilter>,
    /// Also print the movements fetched for the results (added, modified, removed), and
    /// when they could not be fetched.
    #[arg(long)]
    pub movements: bool,
    #[command(flatten)]
    pub connection: connect::ConnectArgs,
    /// One JSON object per line instead of the human display.
    #[arg(long)]
    pub json: bool,
}

/// A status `watch --status` may ask for: those an account result can have (not PENDING).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFilter {
    Succeeded,
    Failed,
    Rejected,
    // As the status is printed (TIMED_OUT), not clap's kebab-case; that spelling works too.
    #[value(name = "timed_out", alias = "timed-out")]
    TimedOut,
}

impl From<StatusFilter> for pb::RefreshStatus {
    fn from(status: StatusFilter) -> Self {
        match status {
            StatusFilter::Succeeded => pb::RefreshStatus::Succeeded,
            StatusFilter::Failed => pb::RefreshStatus::Failed,
            StatusFilter::Rejected => pb::RefreshStatus::Rejected,
            StatusFilter::TimedOut => pb::RefreshStatus::TimedOut,
        }
    }
}

/// `fintoc-refresh link`
#[derive(Debug, Clone, Args)]
pub struct LinkArgs {
    /// The Link's id (link_…).
    pub link_id: String,
    #[command(flatten)]
    pub connection: connect::ConnectArgs,
    /// The GetLink answer as one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Logs go to stderr (stdout carries only the contract's lines), as text or JSON; the level
/// comes from RUST_LOG (default info).
pub fn init_tracing(format: &str) {
    init_tracing_with(format, None);
}

/// [`init_tracing`], and with `telemetry` the OpenTelemetry layer beside the log: it takes
/// the spans of `crate::telemetry` whatever RUST_LOG says (RUST_LOG=warn must not switch
/// traces off) and, as span events, WARN and ERROR lines only; JSON log lines then carry
/// `trace_id` and `span_id` when written inside a traced span.
pub fn init_tracing_with(format: &str, telemetry: Option<&crate::telemetry::Telemetry>) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, not for a log file or a collector.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let Some(telemetry) = telemetry else {
        // Without traces, exactly the subscriber the service always had.
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(ansi)
            .with_writer(std::io::stderr);
        let _ = if format == "json" {
            builder.json().flatten_event(true).try_init()
        } else {
            builder.try_init()
        };
        return;
    };
    use tracing_subscriber::Layer;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let log = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let log = if format == "json" {
        let json = tracing_subscriber::fmt::format().json().flatten_event(true);
        log.fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(WithTraceIds(json))
            .with_filter(filter)
            .boxed()
    } else {
        log.with_filter(filter).boxed()
    };
    let spans = Targets::new()
        .with_default(LevelFilter::WARN)
        .with_target(crate::telemetry::TARGET, LevelFilter::TRACE);
    // Only the fields the spans declare: no source locations, threads, targets or busy/idle
    // timings on every span.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(telemetry.tracer())
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(spans);
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(otel)
        .try_init();
}

/// The JSON event format with the current span's `trace_id` and `span_id` first, so a log
/// line can be found from its trace and the other way round.
struct WithTraceIds<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace_id, span_id)) = crate::telemetry::current_ids() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
            ),
            None => writer.write_str(&line),
        }
    }
}

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn shutdown_on_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
            return;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
        cancel.cancel();
    });
    token
}
