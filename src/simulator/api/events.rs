//! `/v2/events`: the events Fintoc sent, newest first, with cursor pagination.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::Value;

use super::{Params, Shared, error, error_about, ok, undocumented};

/// Events per `/v2/events` page. Fintoc documents no page size (nor a parameter to set
/// one); this is its v1 lists' default.
const EVENTS_PAGE: usize = 30;

/// `GET /v2/events`: newest first, cursor pagination. `starting_after=<id>` gives the page
/// of older events right after that one; `ending_before=<id>` the page of newer events
/// right before it (still newest first). Only those two are documented, and not together.
/// `Link: <…>; rel="next"` carries just the cursor to keep going the same way.
pub(super) async fn list_events(State(s): State<Shared>, Query(q): Params) -> Response {
    if let Err(refused) = undocumented(q.keys(), &["starting_after", "ending_before"]) {
        return refused;
    }
    let bad_cursor = |name: &str| {
        error_about(
            400,
            "invalid_request_error",
            "invalid_cursor",
            &format!("Unknown {name}"),
            Some(name),
        )
    };
    let (items, next, base) = {
        let model = s.model();
        let newest_first: Vec<_> = model.events.iter().rev().collect();
        let position = |id: &str| newest_first.iter().position(|e| e.id == id);
        let len = newest_first.len();
        let (range, next) = match (q.get("starting_after"), q.get("ending_before")) {
            (Some(_), Some(_)) => {
                return error_about(
                    400,
                    "invalid_request_error",
                    "invalid_parameter",
                    "starting_after and ending_before cannot be used together",
                    Some("ending_before"),
                );
            }
            (None, Some(before)) => {
                let Some(end) = position(before) else {
                    return bad_cursor("ending_before");
                };
                let start = end.saturating_sub(EVENTS_PAGE);
                let next = (start > 0).then(|| ("ending_before", newest_first[start].id.clone()));
                (start..end, next)
            }
            (after, None) => {
                let start = match after {
                    None => 0,
                    Some(after) => match position(after) {
                        Some(i) => i + 1,
                        None => return bad_cursor("starting_after"),
                    },
                };
                let end = (start + EVENTS_PAGE).min(len);
                let next =
                    (end < len).then(|| ("starting_after", newest_first[end - 1].id.clone()));
                (start..end, next)
            }
        };
        let items: Vec<Value> = newest_first[range]
            .iter()
            .filter_map(|e| serde_json::from_str(&e.body).ok())
            .collect();
        (items, next, model.base_url.clone())
    };
    let mut response = ok(200, Value::Array(items));
    if let Some((cursor, id)) = next {
        let link = format!("<{base}/v2/events?{cursor}={id}>; rel=\"next\"");
        if let Ok(v) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, v);
        }
    }
    response
}

pub(super) async fn get_event(State(s): State<Shared>, Path(id): Path<String>) -> Response {
    let model = s.model();
    match model
        .events
        .iter()
        .find(|e| e.id == id)
        .and_then(|e| serde_json::from_str(&e.body).ok())
    {
        Some(body) => ok(200, body),
        None => error(
            404,
            "invalid_request_error",
            "missing_resource",
            "No such event",
        ),
    }
}
