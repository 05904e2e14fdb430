//! Pure formatting for `link`: GetLink's answer as the human table (the Link, where it is
//! current to, its pending refresh, whether each refresh type may be requested now, and
//! one row per account) and as one JSON object shaped like `GetLinkResponse`, reusing the
//! account and intent objects of `watch --json` so a script reads them the same way.

use serde::Serialize;

use super::{AccountJson, IntentJson, account_json, intent_json, rfc3339, status_name, type_name};
use crate::pb;

/// The lines of the table, without trailing newlines.
pub fn link_lines(link: &pb::LinkState, as_of_sequence: u64) -> Vec<String> {
    let pending = link.pending_intent.as_ref().map_or("none".to_owned(), |i| {
        let created = rfc3339(i.created_at.as_ref()).unwrap_or_else(|| "unknown".into());
        format!(
            "refresh {} ({}), created {created}",
            i.id,
            type_name(i.refresh_type)
        )
    });
    // Where to pick up: the state includes every result up to as_of_sequence.
    let as_of = format!(
        "#{as_of_sequence} (watch --link-id {} --after {as_of_sequence} misses nothing after it)",
        link.link_id
    );
    let mut lines = table(&[
        vec!["link".into(), link.link_id.clone()],
        vec!["as of".into(), as_of],
        vec!["pending".into(), pending],
        vec!["only_last".into(), eligibility(link.only_last.as_ref())],
        vec!["historical".into(), eligibility(link.historical.as_ref())],
    ]);
    lines.push(String::new());
    if link.accounts.is_empty() {
        lines.push("no accounts known for this Link".into());
        return lines;
    }
    let header = ["account", "last result", "new movements", "at", "sequence"];
    let mut rows = vec![header.map(String::from).to_vec()];
    rows.extend(link.accounts.iter().map(account_row));
    lines.extend(table(&rows));
    lines
}

/// `allowed`, or why not and until when (IN_PROGRESS has no end: the pending intent does).
fn eligibility(e: Option<&pb::Eligibility>) -> String {
    let Some(e) = e else {
        return "unknown (the server did not say)".into();
    };
    if e.allowed {
        return "allowed".into();
    }
    let mut text = "not allowed".to_owned();
    if !e.reason.is_empty() {
        text.push_str(&format!(" ({})", e.reason));
    }
    if let Some(at) = rfc3339(e.next_allowed_at.as_ref()) {
        text.push_str(&format!(", next allowed at {at}"));
    }
    text
}

/// One account's row; a short one when retention left no result to show.
fn account_row(a: &pb::AccountState) -> Vec<String> {
    let Some(r) = &a.last_result else {
        return vec![a.account_id.clone(), "no retained result".into()];
    };
    let mut sequence = format!("#{}", a.last_sequence);
    if !r.public_error.is_empty() {
        sequence.push_str(&format!("  ({})", r.public_error));
    }
    vec![
        a.account_id.clone(),
        status_name(r.status).into(),
        r.new_movements.to_string(),
        rfc3339(r.occurred_at.as_ref()).unwrap_or_else(|| "-".into()),
        sequence,
    ]
}

/// Columns padded to their widest cell, two spaces apart. A row's last cell is not padded
/// and does not widen its column, so a short row ("no retained result") spans the rest.
fn table(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter(|row| c + 1 < row.len())
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let last = row.len().saturating_sub(1);
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| {
                    if c == last {
                        cell.clone()
                    } else {
                        format!("{cell:<width$}", width = widths[c])
                    }
                })
                .collect();
            cells.join("  ")
        })
        .collect()
}

#[derive(Serialize)]
struct GetLinkJson<'a> {
    link: Option<LinkJson<'a>>,
    as_of_sequence: u64,
}

#[derive(Serialize)]
struct LinkJson<'a> {
    link_id: &'a str,
    accounts: Vec<AccountStateJson<'a>>,
    pending_intent: Option<IntentJson<'a>>,
    only_last: Option<EligibilityJson<'a>>,
    historical: Option<EligibilityJson<'a>>,
}

#[derive(Serialize)]
struct AccountStateJson<'a> {
    account_id: &'a str,
    last_result: Option<AccountJson<'a>>,
    last_sequence: u64,
}

#[derive(Serialize)]
struct EligibilityJson<'a> {
    allowed: bool,
    next_allowed_at: Option<String>,
    reason: &'a str,
}

fn eligibility_json(e: &pb::Eligibility) -> EligibilityJson<'_> {
    EligibilityJson {
        allowed: e.allowed,
        next_allowed_at: rfc3339(e.next_allowed_at.as_ref()),
        reason: &e.reason,
    }
}

/// GetLink's answer as one JSON object, fields as in `GetLinkResponse`; unset messages are
/// `null`, times RFC 3339 and statuses without their prefix, as in `watch --json`.
pub fn link_json(response: &pb::GetLinkResponse) -> String {
    let link = response.link.as_ref().map(|l| LinkJson {
        link_id: &l.link_id,
        accounts: l
            .accounts
            .iter()
            .map(|a| AccountStateJson {
                account_id: &a.account_id,
                last_result: a.last_result.as_ref().map(account_json),
                last_sequence: a.last_sequence,
            })
            .collect(),
        pending_intent: l.pending_intent.as_ref().map(intent_json),
        only_last: l.only_last.as_ref().map(eligibility_json),
        historical: l.historical.as_ref().map(eligibility_json),
    });
    let object = GetLinkJson {
        link,
        as_of_sequence: response.as_of_sequence,
    };
    // Strings, numbers, booleans and options under string keys: serializing cannot fail.
    serde_json::to_string(&object).unwrap_or_default()
}
