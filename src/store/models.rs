//! Row types: what diesel reads and inserts, next to their conversions to domain values.

use diesel::prelude::*;

use super::StoreResult;
use super::schema::{refresh_intents, results, webhook_events};
use crate::clock::Millis;
use crate::domain::{IntentStatus, RefreshType, ResultStatus};

/// One entry of the result log. Shared by reference (`Arc`) with every watcher it concerns.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = results)]
pub struct ResultRow {
    pub sequence: i64,
    pub account_id: String,
    pub link_id: String,
    pub refresh_intent_id: String,
    pub status: String,
    pub new_movements: i64,
    pub public_error: String,
    pub event_id: String,
    pub occurred_at_ms: Millis,
    pub committed_at_ms: Millis,
    pub completes_intent: bool,
}

impl ResultRow {
    pub fn status(&self) -> StoreResult<ResultStatus> {
        Ok(ResultStatus::parse(&self.status)?)
    }
}

/// A result about to be appended (the sequence is assigned by SQLite).
#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = results)]
pub struct NewResult<'a> {
    pub account_id: &'a str,
    pub link_id: &'a str,
    pub refresh_intent_id: &'a str,
    pub status: &'static str,
    pub new_movements: i64,
    pub public_error: &'a str,
    pub event_id: &'a str,
    pub occurred_at_ms: Millis,
    pub committed_at_ms: Millis,
    pub completes_intent: bool,
}

#[derive(Debug, Clone, Insertable)]
#[diesel(table_name = webhook_events)]
pub struct NewWebhookEvent<'a> {
    pub event_key: &'a str,
    pub event_type: Option<&'a str>,
    pub disposition: &'static str,
    pub received_at_ms: Millis,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = refresh_intents)]
pub struct IntentRow {
    pub id: String,
    pub link_id: String,
    pub refresh_type: String,
    pub status: String,
    pub mfa_widget_token: String,
    pub created_at_ms: Millis,
    pub completed_at_ms: Option<Millis>,
    pub completed_sequence: Option<i64>,
}

/// An intent with where each expected account stands: what GetRefresh and
/// `refresh_completed` carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentView {
    pub id: String,
    pub link_id: String,
    pub refresh_type: RefreshType,
    pub status: IntentStatus,
    pub mfa_widget_token: String,
    pub created_at_ms: Millis,
    pub completed_at_ms: Option<Millis>,
    pub completed_sequence: Option<i64>,
    /// One per expected account, by account id; `result` is None while pending.
    pub accounts: Vec<AccountState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountState {
    pub account_id: String,
    pub result: Option<ResultRow>,
}
