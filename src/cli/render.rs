//! Pure formatting for the human clients (`refresh`, `watch`, `link`): status and code names,
//! RFC 3339 timestamps, RetryInfo delays, the one-line error for a failed call, the plain and
//! JSON line for each stream message, and the live per-account board of a terminal
//! `refresh`. `link`'s table and JSON object are in `render/link.rs`.
//!
//! Nothing here does I/O, so every output string is pinned by a unit test below.

use std::time::Duration;

use serde::Serialize;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::error::reason;
use crate::pb::{self, watch_refresh_response::Event};

mod link;
pub use link::{link_json, link_lines};

const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";
/// The longest status word (SUCCEEDED, TIMED_OUT), for the board's column.
const STATUS_WIDTH: usize = 9;

/// `SUCCEEDED` for `REFRESH_STATUS_SUCCEEDED`: the prefix is noise for a person or a `jq` filter.
pub fn status_name(value: i32) -> &'static str {
    pb::RefreshStatus::try_from(value).map_or("UNKNOWN", |s| {
        s.as_str_name().trim_start_matches("REFRESH_STATUS_")
    })
}

/// `ONLY_LAST` or `HISTORICAL`; the contract reads UNSPECIFIED as only_last, so we show that.
pub fn type_name(value: i32) -> &'static str {
    match pb::RefreshType::try_from(value) {
        Ok(pb::RefreshType::Historical) => "HISTORICAL",
        Ok(_) => "ONLY_LAST",
        Err(_) => "UNKNOWN",
    }
}

/// RFC 3339 in UTC; `None` for an unset or out-of-range timestamp.
pub fn rfc3339(ts: Option<&prost_types::Timestamp>) -> Option<String> {
    let ts = ts?;
    let nanos = i128::from(ts.seconds) * 1_000_000_000 + i128::from(ts.nanos);
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    at.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// A RetryInfo delay as `4m12s`, rounded up: "retry in 0s" would send the user into the wall.
pub fn retry_delay(d: Duration) -> String {
    let secs = d.as_millis().div_ceil(1000) as u64;
    crate::config::format_duration(Duration::from_secs(secs))
}

/// The canonical gRPC name, as grpcurl and the proto's comments spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// One stderr line for a failed call: what went wrong (from the ErrorInfo reason when the
/// server gave one, else `context`), the code, the server's message, and when to retry.
pub fn error_line(context: &str, status: &Status) -> String {
    let what = match status.get_details_error_info().map(|i| i.reason) {
        Some(r) if r == reason::REFRESH_COOLDOWN => "cooldown".to_owned(),
        Some(r) if r == reason::CREDENTIALS_REJECTED => "credentials rejected".to_owned(),
        Some(r) if r == reason::CURSOR_EXPIRED => "cursor expired".to_owned(),
        _ => context.to_owned(),
    };
    // A transport failure (a refused TLS handshake, a reset) says only "transport error";
    // the cause chain says why. Meant for one terminal line: a stray newline would split it.
    let message = super::connect::with_causes(
        status.message().to_owned(),
        std::error::Error::source(status),
    )
    .replace(['\n', '\r'], " ");
    let mut line = format!("error: {what} ({})", code_name(status.code()));
    if !message.is_empty() {
        line.push_str(&format!(": {message}"));
    }
    if let Some(delay) = status.get_details_retry_info().and_then(|r| r.retry_delay) {
        line.push_str(&format!("; retry in {}", retry_delay(delay)));
    }
    line
}

/// The header naming the intent, for both the live and the plain display.
pub fn requested_line(intent: &pb::RefreshIntent, joined: bool) -> String {
    let how = if joined { "joined existing" } else { "new" };
    format!(
        "refresh {} of link {} ({}, {how})",
        intent.id,
        intent.link_id,
        type_name(intent.refresh_type)
    )
}

/// The plain header also says which accounts it waits for (the live board shows them instead).
pub fn plain_requested(intent: &pb::RefreshIntent, joined: bool) -> String {
    let ids: Vec<&str> = intent
        .accounts
        .iter()
        .map(|a| a.account_id.as_str())
        .collect();
    format!(
        "{}: expecting {} account(s): {}",
        requested_line(intent, joined),
        ids.len(),
        ids.join(", ")
    )
}

/// Said once, when the bank wants the end user in the loop; the client keeps waiting.
pub fn mfa_line(widget_token: &str) -> String {
    format!(
        "mfa required: the bank asks for multi-factor authentication; the user must complete \
         the Fintoc widget with widget_token={widget_token} (still waiting for results)"
    )
}

/// `refresh ri_… SUCCEEDED: 2 succeeded (15 new movements)`: the counts and what to do next.
pub fn outcome_line(intent: &pb::RefreshIntent) -> String {
    let status = status_name(intent.status);
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for a in &intent.accounts {
        let name = status_name(a.status);
        match counts.iter_mut().find(|(n, _)| *n == name) {
            Some((_, c)) => *c += 1,
            None => counts.push((name, 1)),
        }
    }
    let counts: Vec<String> = counts
        .iter()
        .map(|(n, c)| format!("{c} {}", n.to_lowercase().replace('_', " ")))
        .collect();
    let movements: u32 = intent.accounts.iter().map(|a| a.new_movements).sum();
    let advice = match status {
        "SUCCEEDED" => format!(" ({})", new_movements(movements)),
        "FAILED" => "; retrying now is allowed".to_owned(),
        "REJECTED" => "; the bank rejected the Link's credentials: reconnect the Link".to_owned(),
        "TIMED_OUT" => "; no result arrived in time".to_owned(),
        _ => String::new(),
    };
    format!(
        "refresh {} {status}: {}{advice}",
        intent.id,
        counts.join(", ")
    )
}

/// The key=value line of one account result; empty fields are left out.
pub fn account_line(r: &pb::AccountResult, color: bool) -> String {
    let mut line = format!(
        "account {} {} new_movements={}",
        r.account_id,
        paint(status_name(r.status), color),
        r.new_movements
    );
    for (key, value) in [
        ("error", &r.public_error),
        ("intent", &r.refresh_intent_id),
        ("link", &r.link_id),
        ("event", &r.event_id),
    ] {
        if !value.is_empty() {
            line.push_str(&format!(" {key}={value:?}"));
        }
    }
    if let Some(at) = rfc3339(r.occurred_at.as_ref()) {
        line.push_str(&format!(" at={at}"));
    }
    line
}

/// One appended line per stream message, led by its sequence; heartbeats dim when in color.
pub fn message_line(msg: &pb::WatchRefreshResponse, color: bool) -> Option<String> {
    let body = match msg.event.as_ref()? {
        Event::AccountResult(r) => account_line(r, color),
        Event::RefreshCompleted(i) => outcome_line(i),
        Event::Movements(m) => movements_lines(m),
        Event::MovementsUnavailable(u) => unavailable_line(u),
        Event::Heartbeat(h) => {
            let at = rfc3339(h.server_time.as_ref()).unwrap_or_default();
            let line = format!("#{} heartbeat {at}", msg.sequence);
            return Some(if color {
                format!("{DIM}{line}{RESET}")
            } else {
                line
            });
        }
    };
    Some(format!("#{} {body}", msg.sequence))
}

/// A movements message: a summary line, then one line per movement (date, amount, currency,
/// description), removed ids last.
fn movements_lines(m: &pb::MovementsChanged) -> String {
    let mut out = movements_summary(m);
    let line = |mark: char, mv: &pb::Movement| {
        let date = mv.post_date.get(..10).unwrap_or(&mv.post_date);
        let pending = if mv.pending { " (pending)" } else { "" };
        format!(
            "\n  {mark} {date} {:>14} {} {}{pending}",
            amount(mv.amount),
            mv.currency,
            mv.description
        )
    };
    for mv in &m.added {
        out.push_str(&line('+', mv));
    }
    for mv in &m.modified {
        out.push_str(&line('~', mv));
    }
    for id in &m.removed_ids {
        out.push_str(&format!("\n  - {id} removed"));
    }
    out
}

/// `movements acc_1 (link_1): 3 added, 1 modified, complete`.
pub fn movements_summary(m: &pb::MovementsChanged) -> String {
    let mut parts = Vec::new();
    for (n, what) in [
        (m.added.len(), "added"),
        (m.modified.len(), "modified"),
        (m.removed_ids.len(), "removed"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if parts.is_empty() {
        parts.push("no change".into());
    }
    let end = if m.complete {
        ", complete"
    } else {
        ", more follow"
    };
    format!(
        "movements {} ({}): {}{end}",
        m.account_id,
        m.link_id,
        parts.join(", ")
    )
}

/// `movements unavailable acc_1 (link_1): FETCH_FAILED: …`.
pub fn unavailable_line(u: &pb::MovementsUnavailable) -> String {
    format!(
        "movements unavailable {} ({}): {}: {}",
        u.account_id, u.link_id, u.reason, u.message
    )
}

/// Minor units with thousands separators, sign kept: `-1.250`, `110.000` (CLP has no
/// decimals; other currencies are shown in their minor units too, as Fintoc sends them).
fn amount(minor: i64) -> String {
    let digits = minor.unsigned_abs().to_string();
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push('.');
        }
        grouped.push(c);
    }
    if minor < 0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}

/// `1 new movement`, `15 new movements`.
fn new_movements(n: u32) -> String {
    format!("{n} new movement{}", if n == 1 { "" } else { "s" })
}

/// Status words in color on a terminal: green done, red needs action, yellow still open.
fn paint(status: &str, color: bool) -> String {
    let code = match status {
        "SUCCEEDED" => "32",
        "FAILED" | "REJECTED" => "31",
        _ => "33",
    };
    if color {
        format!("\x1b[{code}m{status}{RESET}")
    } else {
        status.to_owned()
    }
}

/// Internally tagged so `event` comes first on every line, whatever the kind.
#[derive(Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum EventJson<'a> {
    Requested {
        #[serde(flatten)]
        intent: IntentJson<'a>,
        joined_existing: bool,
        mfa_widget_token: Option<&'a str>,
    },
    AccountResult {
        sequence: u64,
        #[serde(flatten)]
        result: AccountJson<'a>,
    },
    RefreshCompleted {
        sequence: u64,
        #[serde(flatten)]
        intent: IntentJson<'a>,
    },
    Heartbeat {
        sequence: u64,
        server_time: Option<String>,
    },
    Movements {
        sequence: u64,
        account_id: &'a str,
        link_id: &'a str,
        refresh_intent_id: &'a str,
        event_id: &'a str,
        added: Vec<serde_json::Value>,
        modified: Vec<serde_json::Value>,
        removed_ids: &'a [String],
        complete: bool,
    },
    MovementsUnavailable {
        sequence: u64,
        account_id: &'a str,
        link_id: &'a str,
        event_id: &'a str,
        reason: &'a str,
        message: &'a str,
    },
}

/// A movement in full, as the wire has it (`type`, not Rust's `r#type`).
fn movement_json(m: &pb::Movement) -> serde_json::Value {
    let account = |a: &Option<pb::TransferAccount>| {
        a.as_ref().map(|a| {
            serde_json::json!({
                "holder_id": a.holder_id, "holder_name": a.holder_name, "number": a.number,
                "institution_id": a.institution_id, "institution_name": a.institution_name,
            })
        })
    };
    serde_json::json!({
        "id": m.id, "amount": m.amount, "currency": m.currency, "description": m.description,
        "post_date": m.post_date, "transaction_date": m.transaction_date, "type": m.r#type,
        "status": m.status, "pending": m.pending, "reference_id": m.reference_id,
        "comment": m.comment, "sender_account": account(&m.sender_account),
        "recipient_account": account(&m.recipient_account),
    })
}

#[derive(Serialize)]
struct IntentJson<'a> {
    refresh_intent_id: &'a str,
    link_id: &'a str,
    refresh_type: &'static str,
    status: &'static str,
    created_at: Option<String>,
    completed_at: Option<String>,
    accounts: Vec<AccountJson<'a>>,
}

#[derive(Serialize)]
struct AccountJson<'a> {
    account_id: &'a str,
    link_id: &'a str,
    refresh_intent_id: &'a str,
    status: &'static str,
    new_movements: u32,
    public_error: &'a str,
    event_id: &'a str,
    occurred_at: Option<String>,
}

fn account_json(r: &pb::AccountResult) -> AccountJson<'_> {
    AccountJson {
        account_id: &r.account_id,
        link_id: &r.link_id,
        refresh_intent_id: &r.refresh_intent_id,
        status: status_name(r.status),
        new_movements: r.new_movements,
        public_error: &r.public_error,
        event_id: &r.event_id,
        occurred_at: rfc3339(r.occurred_at.as_ref()),
    }
}

fn intent_json(i: &pb::RefreshIntent) -> IntentJson<'_> {
    IntentJson {
        refresh_intent_id: &i.id,
        link_id: &i.link_id,
        refresh_type: type_name(i.refresh_type),
        status: status_name(i.status),
        created_at: rfc3339(i.created_at.as_ref()),
        completed_at: rfc3339(i.completed_at.as_ref()),
        accounts: i.accounts.iter().map(account_json).collect(),
    }
}

fn to_line(event: &EventJson<'_>) -> String {
    // Strings, numbers and options under string keys: serializing cannot fail.
    serde_json::to_string(event).unwrap_or_default()
}

/// The `requested` JSON line; the widget token is null unless the bank requires MFA.
pub fn json_requested(intent: &pb::RefreshIntent, joined: bool) -> String {
    let mfa = Some(intent.mfa_widget_token.as_str()).filter(|t| !t.is_empty());
    to_line(&EventJson::Requested {
        intent: intent_json(intent),
        joined_existing: joined,
        mfa_widget_token: mfa,
    })
}

/// The JSON line of one stream message; `None` for a message without an event.
pub fn json_message(msg: &pb::WatchRefreshResponse) -> Option<String> {
    let sequence = msg.sequence;
    let event = match msg.event.as_ref()? {
        Event::AccountResult(r) => EventJson::AccountResult {
            sequence,
            result: account_json(r),
        },
        Event::RefreshCompleted(i) => EventJson::RefreshCompleted {
            sequence,
            intent: intent_json(i),
        },
        Event::Heartbeat(h) => EventJson::Heartbeat {
            sequence,
            server_time: rfc3339(h.server_time.as_ref()),
        },
        Event::Movements(m) => EventJson::Movements {
            sequence,
            account_id: &m.account_id,
            link_id: &m.link_id,
            refresh_intent_id: &m.refresh_intent_id,
            event_id: &m.event_id,
            added: m.added.iter().map(movement_json).collect(),
            modified: m.modified.iter().map(movement_json).collect(),
            removed_ids: &m.removed_ids,
            complete: m.complete,
        },
        Event::MovementsUnavailable(u) => EventJson::MovementsUnavailable {
            sequence,
            account_id: &u.account_id,
            link_id: &u.link_id,
            event_id: &u.event_id,
            reason: &u.reason,
            message: &u.message,
        },
    };
    Some(to_line(&event))
}

/// The live display of a terminal `refresh`: one row per expected account plus a footer,
/// redrawn in place with cursor-up and clear-line escapes (no terminal crate needed).
pub struct Board {
    rows: Vec<pb::AccountResult>,
    footer: Option<String>,
    drawn: usize,
    color: bool,
}

impl Board {
    pub fn new(accounts: &[pb::AccountResult], color: bool) -> Self {
        Board {
            rows: accounts.to_vec(),
            footer: None,
            drawn: 0,
            color,
        }
    }

    /// Replaces the account's row; an account the intent did not list gets a row of its own.
    pub fn apply(&mut self, result: &pb::AccountResult) {
        match self
            .rows
            .iter_mut()
            .find(|r| r.account_id == result.account_id)
        {
            Some(row) => *row = result.clone(),
            None => self.rows.push(result.clone()),
        }
    }

    /// A note (reconnecting, the outcome) in place of the "waiting" footer; `None` restores it.
    pub fn set_footer(&mut self, footer: Option<String>) {
        self.footer = footer;
    }

    /// The lines as they should look now.
    pub fn lines(&self) -> Vec<String> {
        let width = self
            .rows
            .iter()
            .map(|r| r.account_id.len())
            .max()
            .unwrap_or(0);
        let mut lines: Vec<String> = self.rows.iter().map(|r| self.row(r, width)).collect();
        let pending = self
            .rows
            .iter()
            .filter(|r| status_name(r.status) == "PENDING");
        let waiting = format!(
            "waiting for {} of {} account(s)…",
            pending.count(),
            self.rows.len()
        );
        lines.push(self.footer.clone().unwrap_or(waiting));
        lines
    }

    fn row(&self, r: &pb::AccountResult, width: usize) -> String {
        let status = status_name(r.status);
        let mut line = format!("  {:<width$}  {}", r.account_id, paint(status, self.color));
        if status != "PENDING" {
            // Pad the bare word (escapes have no width) so the movement counts line up.
            let pad = " ".repeat(STATUS_WIDTH.saturating_sub(status.len()));
            line.push_str(&format!("{pad}  {}", new_movements(r.new_movements)));
        }
        if !r.public_error.is_empty() {
            line.push_str(&format!("  ({})", r.public_error));
        }
        line
    }

    /// What to write to redraw: back up over the previous frame, then rewrite every line.
    /// Rows only ever get added, so the new frame always covers the old one.
    pub fn frame(&mut self) -> String {
        let mut out = String::new();
        if self.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn));
        }
        let lines = self.lines();
        for line in &lines {
            out.push_str(&format!("\r\x1b[2K{line}\n"));
        }
        self.drawn = lines.len();
        out
    }
}

#[cfg(test)]
mod tests;
