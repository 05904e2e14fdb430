//! The result log: appending (inside the writer) and reading by target and cursor.

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel::sqlite::SqliteConnection;

use super::Tx;
use super::models::NewResult;
use super::schema::{accounts, intent_accounts, log_horizon, results};
use crate::clock::Millis;
use crate::domain::{ResultRow, Target};
use crate::store::decide::LogTimes;
use crate::store::queries;
use crate::store::{Counts, LogBounds, StoreResult};

/// Appends one result; the row comes back with its sequence and is queued for the hub.
pub(super) fn append(tx: &mut Tx<'_>, new: &NewResult<'_>) -> StoreResult<ResultRow> {
    let sequence = super::statements::insert_result(tx.conn, new)?;
    let row = new.logged(sequence);
    tx.appended(row.clone());
    Ok(row)
}

/// Up to `limit` results of `target` after `after` and at most `upto`, oldest first.
///
/// `upto` is the durable high water: rows above it may be committed but not yet durable (see
/// `durable.rs`); they reach watchers through the hub once they are.
///
/// The log is indexed by account only (each index is paid for on every write): an intent's
/// results are found through `intent_accounts`, which points at each answer, and a Link's
/// through its accounts.
pub(super) fn results_after(
    conn: &mut SqliteConnection,
    target: &Target,
    after: i64,
    upto: i64,
    limit: i64,
) -> StoreResult<Vec<ResultRow>> {
    queries::results_after!(conn, target, after, upto, limit, [])
}

/// The log's bounds, then what a seek to `at_ms` needs (two reads of one snapshot).
pub(super) fn log_times(conn: &mut SqliteConnection, at_ms: Millis) -> StoreResult<LogTimes> {
    conn.transaction(|conn| {
        let bounds = log_bounds(conn)?;
        queries::log_times!(conn, bounds, at_ms, [])
    })
}

/// The newest stamp in the log, which no later result goes below: the newest result's, or
/// if retention emptied the log, the newest pruned one's.
pub(super) fn newest_stamp(conn: &mut SqliteConnection) -> StoreResult<Millis> {
    let newest: Option<Millis> = results::table
        .order(results::sequence.desc())
        .select(results::committed_at_ms)
        .first(conn)
        .optional()?;
    let pruned: Millis = log_horizon::table
        .select(log_horizon::pruned_through_ms)
        .first(conn)?;
    Ok(newest.unwrap_or(0).max(pruned))
}

#[derive(QueryableByName)]
struct Seq {
    #[diesel(sql_type = BigInt)]
    seq: i64,
}

pub(super) fn log_bounds(conn: &mut SqliteConnection) -> StoreResult<LogBounds> {
    // sqlite_sequence remembers the highest sequence AUTOINCREMENT handed out, even after
    // the rows are gone; it has no row until the first insert.
    let newest = diesel::sql_query("SELECT seq FROM sqlite_sequence WHERE name = 'results'")
        .get_result::<Seq>(conn)
        .optional()?
        .map_or(0, |s| s.seq);
    let oldest: Option<i64> = results::table
        .select(diesel::dsl::min(results::sequence))
        .first(conn)?;
    Ok(LogBounds {
        newest,
        oldest: oldest.unwrap_or(newest + 1),
    })
}

pub(super) fn counts(conn: &mut SqliteConnection) -> StoreResult<Counts> {
    use super::schema::webhook_events;
    Ok(Counts {
        webhook_events: webhook_events::table.count().get_result(conn)?,
        held_events: webhook_events::table
            .filter(webhook_events::disposition.eq("held"))
            .count()
            .get_result(conn)?,
        results: results::table.count().get_result(conn)?,
    })
}
