//! Row types of the PostgreSQL store: what diesel reads, next to their conversions to domain
//! values.

use diesel::prelude::*;

use super::schema::results;
use crate::clock::Millis;
use crate::domain::ResultRow;

/// One entry of the result log as stored.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
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

impl From<&ResultRow> for ResultRecord {
    fn from(r: &ResultRow) -> ResultRecord {
        ResultRecord {
            sequence: r.sequence,
            account_id: r.account_id.clone(),
            link_id: r.link_id.clone(),
            refresh_intent_id: r.refresh_intent_id.clone(),
            status: r.status.clone(),
            new_movements: r.new_movements,
            public_error: r.public_error.clone(),
            event_id: r.event_id.clone(),
            occurred_at_ms: r.occurred_at_ms,
            committed_at_ms: r.committed_at_ms,
            completes_intent: r.completes_intent,
        }
    }
}
