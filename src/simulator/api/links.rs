//! `/v1/links/{token}`: a Link, with its accounts inline when the Link was made so.

use axum::extract::{Path, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::accounts::account_json;
use super::{Shared, no_link, ok};
use crate::clock::format_rfc3339_ms;

pub(super) async fn get_link(State(s): State<Shared>, Path(token): Path<String>) -> Response {
    let model = s.model();
    let Some(link) = model.link_by_token(&token) else {
        return no_link();
    };
    let accounts: Option<Vec<Value>> = link.accounts_inline.then(|| {
        (0..link.accounts.len())
            .map(|i| account_json(&model, link, i))
            .collect()
    });
    let status = if link.active { "active" } else { "inactive" };
    ok(
        200,
        json!({
            "id": link.id, "object": "link", "accounts": accounts, "active": link.active, "status": status,
            "created_at": format_rfc3339_ms(link.created_at_ms), "holder_id": "111111111", "holder_type": "individual",
            "institution": {"id": "cl_banco_de_chile", "country": "cl", "name": "Banco de Chile"},
            "last_time_refreshed": null, "link_token": null, "mode": model.mode,
            "refresh_status": if link.in_progress.is_some() { "refreshing" } else { "idle" }, "username": "12345678-9",
        }),
    )
}
