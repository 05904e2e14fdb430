//! `GET /v1/accounts/{id}/movements`: an account's movements as Fintoc lists them, only
//! with its Link's token, only with the documented parameters, paged by the `Link` header.

// Handlers return a ready `Response` as their error (see `api/mod.rs`).
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;

use super::accounts::owned_account;
use super::{Params, Shared, error_about, page, undocumented};
use crate::clock::parse_rfc3339_ms;
use crate::simulator::state::MovementQuery;

/// The list's documented parameters; anything else is refused (see `undocumented`).
const PARAMS: [&str; 6] = [
    "link_token",
    "since",
    "until",
    "per_page",
    "page",
    "confirmed_only",
];

/// Fintoc's page size when `per_page` is absent, and its largest.
const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 300;

pub(super) async fn list_movements(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    if let Err(refused) = undocumented(q.keys(), &PARAMS) {
        return refused;
    }
    let query = match movement_query(&q) {
        Ok(query) => query,
        Err(refused) => return refused,
    };
    let page_number = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1u32);
    let items = {
        let mut model = s.model();
        if let Err(e) = owned_account(&model, &q, &id) {
            return e;
        }
        model.take_shift(&id, page_number, s.now_ms());
        model.list_movements(&id, &query)
    };
    // Every page link carries the whole query, defaults spelled out, because Fintoc's SDKs
    // follow `next` verbatim without adding parameters of their own.
    let mut link_query: HashMap<String, String> = q
        .iter()
        .filter(|(k, _)| ["link_token", "since", "until"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    link_query.insert("per_page".into(), per_page(&q).to_string());
    link_query.insert("confirmed_only".into(), query.confirmed_only.to_string());
    if let Some(p) = q.get("page") {
        link_query.insert("page".into(), p.clone());
    }
    page(
        &s,
        &format!("/v1/accounts/{id}/movements"),
        &link_query,
        items,
    )
}

/// `per_page` as Fintoc applies it: 30 when absent or unreadable, at most 300.
fn per_page(q: &HashMap<String, String>) -> usize {
    q.get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_PER_PAGE)
        .clamp(1, MAX_PER_PAGE)
}

/// The filters, or Fintoc's refusal of a malformed one.
fn movement_query(q: &HashMap<String, String>) -> Result<MovementQuery, Response> {
    let day = |name: &str| -> Result<Option<String>, Response> {
        let Some(value) = q.get(name) else {
            return Ok(None);
        };
        iso_day(value).map(Some).ok_or_else(|| {
            error_about(
                400,
                "invalid_request_error",
                "invalid_date",
                &format!("Invalid date for {name}: {value}"),
                Some(name),
            )
        })
    };
    let confirmed_only = match q.get("confirmed_only").map(|v| v.to_ascii_lowercase()) {
        None => true,
        Some(v) if v == "true" => true,
        Some(v) if v == "false" => false,
        Some(v) => {
            return Err(error_about(
                400,
                "invalid_request_error",
                "invalid_parameter",
                &format!("Invalid value for confirmed_only: {v}"),
                Some("confirmed_only"),
            ));
        }
    };
    Ok(MovementQuery {
        since: day("since")?,
        until: day("until")?,
        confirmed_only,
    })
}

/// The `YYYY-MM-DD` of an ISO 8601 date or UTC date-time, if it is one.
fn iso_day(value: &str) -> Option<String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = value.get(..10)?;
    time::Date::parse(day, format).ok()?;
    (value.len() == 10 || parse_rfc3339_ms(value).is_some()).then(|| day.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_iso_days_or_date_times() {
        assert_eq!(iso_day("2026-03-01").as_deref(), Some("2026-03-01"));
        assert_eq!(
            iso_day("2026-03-01T10:00:00Z").as_deref(),
            Some("2026-03-01")
        );
        assert_eq!(iso_day("2026-13-01"), None);
        assert_eq!(iso_day("01/03/2026"), None);
        assert_eq!(iso_day("2026-03-01Tnope"), None);
    }

    #[test]
    fn per_page_defaults_to_30_and_stops_at_300() {
        let q = |v: &str| HashMap::from([("per_page".to_owned(), v.to_owned())]);
        assert_eq!(per_page(&HashMap::new()), 30);
        assert_eq!(per_page(&q("1000")), 300);
        assert_eq!(per_page(&q("0")), 1);
        assert_eq!(per_page(&q("x")), 30);
    }

    #[test]
    fn confirmed_only_is_a_boolean_defaulting_to_true() {
        let q = |v: &str| HashMap::from([("confirmed_only".to_owned(), v.to_owned())]);
        assert!(movement_query(&HashMap::new()).unwrap().confirmed_only);
        assert!(!movement_query(&q("false")).unwrap().confirmed_only);
        assert!(movement_query(&q("True")).unwrap().confirmed_only);
        assert!(movement_query(&q("maybe")).is_err());
    }
}
