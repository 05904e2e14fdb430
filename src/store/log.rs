//! The result log: appending (inside the writer) and reading by target and cursor.

use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel::sqlite::SqliteConnection;

use super::models::{NewResult, ResultRow};
use super::schema::{accounts, intent_accounts, results};
use super::{StoreResult, Tx};

/// Whose results a watcher follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Intent(String),
    Link(String),
    Account(String),
}

impl Target {
    /// Whether a logged result belongs to this target.
    pub fn matches(&self, row: &ResultRow) -> bool {
        match self {
            Target::Intent(id) => row.refresh_intent_id == *id,
            Target::Link(id) => row.link_id == *id,
            Target::Account(id) => row.account_id == *id,
        }
    }
}

/// Appends one result; the row comes back with its sequence and is queued for the hub.
pub(super) fn append(tx: &mut Tx<'_>, new: &NewResult<'_>) -> StoreResult<ResultRow> {
    let sequence = super::statements::insert_result(tx.conn, new)?;
    let row = ResultRow {
        sequence,
        account_id: new.account_id.to_owned(),
        link_id: new.link_id.to_owned(),
        refresh_intent_id: new.refresh_intent_id.to_owned(),
        status: new.status.to_owned(),
        new_movements: new.new_movements,
        public_error: new.public_error.to_owned(),
        event_id: new.event_id.to_owned(),
        occurred_at_ms: new.occurred_at_ms,
        committed_at_ms: new.committed_at_ms,
        completes_intent: new.completes_intent,
    };
    tx.appended(row.clone());
    Ok(row)
}

/// Up to `limit` results of `target` after `after` and at most `upto`, oldest first.
///
/// `upto` is the hub's high water: rows above it may be committed but not yet durable (see
/// `durable.rs`); they reach watchers through the hub once they are.
///
/// The log is indexed by account only (each index is paid for on every write): an intent's
/// results are found through `intent_accounts`, which points at each answer, and a Link's
/// through its accounts.
pub fn results_after(
    conn: &mut SqliteConnection,
    target: &Target,
    after: i64,
    upto: i64,
    limit: i64,
) -> StoreResult<Vec<ResultRow>> {
    let query = results::table
        .select(ResultRow::as_select())
        .filter(results::sequence.gt(after))
        .filter(results::sequence.le(upto))
        .order(results::sequence.asc())
        .limit(limit);
    let rows = match target {
        Target::Intent(id) => {
            let answers = intent_accounts::table
                .filter(intent_accounts::refresh_intent_id.eq(id))
                .filter(intent_accounts::result_sequence.is_not_null())
                .select(intent_accounts::result_sequence.assume_not_null());
            query
                .filter(results::sequence.eq_any(answers))
                .filter(results::refresh_intent_id.eq(id))
                .load(conn)?
        }
        Target::Link(id) => {
            let accounts = accounts::table
                .filter(accounts::link_id.eq(id))
                .select(accounts::account_id);
            query
                .filter(results::account_id.eq_any(accounts))
                .filter(results::link_id.eq(id))
                .load(conn)?
        }
        Target::Account(id) => query.filter(results::account_id.eq(id)).load(conn)?,
    };
    Ok(rows)
}

/// What part of the log is still there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBounds {
    /// The newest sequence ever assigned (0 when the log was always empty).
    pub newest: i64,
    /// The oldest sequence still retained; `newest + 1` when retention emptied the log.
    pub oldest: i64,
}

impl LogBounds {
    /// Every sequence up to this one has been pruned.
    pub fn pruned_through(&self) -> i64 {
        self.oldest - 1
    }
}

#[derive(QueryableByName)]
struct Seq {
    #[diesel(sql_type = BigInt)]
    seq: i64,
}

pub fn log_bounds(conn: &mut SqliteConnection) -> StoreResult<LogBounds> {
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

/// Row counts, for operators and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub webhook_events: i64,
    pub held_events: i64,
    pub results: i64,
}

pub fn counts(conn: &mut SqliteConnection) -> StoreResult<Counts> {
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
