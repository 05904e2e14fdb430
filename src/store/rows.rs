//! Row types both backends read, below both: diesel's `Queryable` maps by position and SQL
//! type, which the two schemas share, so one type serves both (select them with
//! `results::all_columns` of either schema; the columns are in the same order in both).
//! What only one backend writes (SQLite's insert rows) stays in that backend.

use diesel::Queryable;

use crate::clock::Millis;
use crate::domain::{Detail, ResultRow};

/// One entry of the result log as stored; [`ResultRow`] is what leaves the store.
#[derive(Debug, Clone, PartialEq, Eq, Queryable)]
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
    pub detail: String,
    pub fetches_movements: bool,
    pub trace_context: String,
}

impl From<ResultRecord> for ResultRow {
    fn from(r: ResultRecord) -> ResultRow {
        // A payload that does not read back (it was written by this code, so only a damaged
        // database does that) is logged and the entry kept without it, rather than stopping
        // every stream that reads past it.
        let detail = Detail::from_stored(&r.status, &r.detail).unwrap_or_else(|why| {
            tracing::error!(sequence = r.sequence, %why, "a log entry's payload is damaged");
            Detail::Result
        });
        ResultRow {
            detail,
            fetches_movements: r.fetches_movements,
            trace_context: r.trace_context,
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
