//! `/v1/accounts`: a Link's accounts and one account, each only with the Link's token
//! (`movements.rs` lists an account's movements).

// Handlers return a ready `Response` as their error (see `api/mod.rs`).
#![allow(clippy::result_large_err)]

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Params, Shared, error, no_link, ok, page, required};
use crate::clock::format_rfc3339_ms;
use crate::simulator::state::{Link, State as Model};

pub(super) fn account_json(model: &Model, link: &Link, index: usize) -> Value {
    let account = &link.accounts[index];
    let balance = 1_000_000 + 250_000 * index as i64;
    json!({
        "id": account.id, "object": "account", "name": account.name, "official_name": account.name.to_uppercase(),
        "number": account.number, "holder_id": "111111111", "holder_name": "Ana Demo", "type": "checking_account",
        "currency": "CLP", "balance": {"available": balance, "current": balance, "limit": balance},
        "refreshed_at": format_rfc3339_ms(link.created_at_ms), "refresh_status": "idle", "removed_from_link": false,
        "next_refresh": null, "movements_count": model.movements.get(&account.id).map_or(0, Vec::len),
    })
}

pub(super) async fn list_accounts(State(s): State<Shared>, Query(q): Params) -> Response {
    let token = match required(&q, "link_token") {
        Ok(t) => t.to_owned(),
        Err(e) => return e,
    };
    let items = {
        let model = s.model();
        let Some(link) = model.link_by_token(&token) else {
            return no_link();
        };
        (0..link.accounts.len())
            .map(|i| account_json(&model, link, i))
            .collect()
    };
    page(&s, "/v1/accounts", &q, items)
}

/// The account, if `link_token` is its Link's token.
pub(super) fn owned_account(
    model: &Model,
    q: &HashMap<String, String>,
    id: &str,
) -> Result<Value, Response> {
    let token = required(q, "link_token")?;
    let link = model.link_by_token(token).ok_or_else(no_link)?;
    let index = link
        .accounts
        .iter()
        .position(|a| a.id == id)
        .ok_or_else(|| {
            error(
                404,
                "invalid_request_error",
                "missing_resource",
                "No such account",
            )
        })?;
    Ok(account_json(model, link, index))
}

pub(super) async fn get_account(
    State(s): State<Shared>,
    Path(id): Path<String>,
    Query(q): Params,
) -> Response {
    match owned_account(&s.model(), &q, &id) {
        Ok(account) => ok(200, account),
        Err(e) => e,
    }
}
