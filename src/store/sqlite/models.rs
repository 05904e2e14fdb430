//! What the SQLite store inserts (the rows it reads are shared: `store/rows.rs`).

use diesel::prelude::*;

use super::schema::webhook_events;
use crate::clock::Millis;
use crate::domain::{Detail, ResultRow};

/// A result about to be appended (the sequence is assigned by SQLite).
#[derive(Debug, Clone)]
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
    /// What kind of entry (an account result unless it says otherwise)…
    pub detail: Detail,
    /// …and its stored text (`Detail::to_stored`), bound by the insert.
    pub stored_detail: String,
    pub fetches_movements: bool,
    /// The webhook span's W3C traceparent (empty when none).
    pub trace_context: String,
}

impl NewResult<'_> {
    /// The log entry this becomes once SQLite has given it `sequence`.
    pub fn logged(&self, sequence: i64) -> ResultRow {
        ResultRow {
            sequence,
            account_id: self.account_id.to_owned(),
            link_id: self.link_id.to_owned(),
            refresh_intent_id: self.refresh_intent_id.to_owned(),
            status: self.status.to_owned(),
            new_movements: self.new_movements,
            public_error: self.public_error.to_owned(),
            event_id: self.event_id.to_owned(),
            occurred_at_ms: self.occurred_at_ms,
            committed_at_ms: self.committed_at_ms,
            completes_intent: self.completes_intent,
            detail: self.detail.clone(),
            fetches_movements: self.fetches_movements,
            trace_context: self.trace_context.clone(),
        }
    }
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
