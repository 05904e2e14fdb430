//! The result log: appending (inside the writer) and reading by target and cursor.

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel::sqlite::SqliteConnection;

use super::Tx;
use super::models::NewResult;
use super::schema::{accounts, intent_accounts, results};
use crate::domain::{ResultRow, Target};
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
