//! Row types: what diesel reads and inserts, next to their conversions to domain values.

use diesel::prelude::*;

use super::schema::{results, webhook_events};
use crate::clock::Millis;
use crate::domain::ResultRow;

/// One entry of the result log as stored; [`ResultRow`] is what leaves the store.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = results)]
pub struct ResultRecord {
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

impl From<ResultRecord> for ResultRow {
    fn from(r: ResultRecord) -> ResultRow {
        ResultRow {
            sequence: r.sequence,
            account_id: r.account_id,
            link_id: r.link_id,
            refresh_intent_id: r.refresh_intent_id,
            status: r.status,
            new_movements: r.new_movements,
            public_error: r.public_error,
            event_id: r.event_id,
            occurred_at_ms: r.occurred_at_ms,
            committed_at_ms: r.committed_at_ms,
            completes_intent: r.completes_intent,
        }
    }
}

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
