//! The result log on PostgreSQL: appending inside a writer transaction (which holds the
//! counter's lock, so sequences are handed out in commit order), and reading by target and
//! cursor.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::models::ResultRecord;
use super::schema::{accounts, intent_accounts, log_counter, results, webhook_events};
use crate::domain::{ResultRow, Target};
use crate::store::{Counts, LogBounds, StoreResult};

/// Hands out sequences inside one writer transaction, from the counter it locked.
pub(super) struct Appender {
    /// The next sequence to hand out.
    next: i64,
    /// Rows appended and not yet inserted.
    pending: Vec<ResultRecord>,
    /// Whether anything was appended in this transaction.
    wrote: bool,
}

impl Appender {
    /// Locks the counter for the rest of the transaction: every other writer, on every
    /// replica, waits here until this transaction ends, so sequences commit in order.
    pub(super) async fn lock(conn: &mut AsyncPgConnection) -> StoreResult<Appender> {
        let newest: i64 = log_counter::table
            .select(log_counter::newest)
            .for_update()
            .get_result(conn)
            .await?;
        Ok(Appender {
            next: newest + 1,
            pending: Vec::new(),
            wrote: false,
        })
    }

    /// Gives `row` the next sequence and queues it for [`Appender::flush`].
    pub(super) fn append(&mut self, mut row: ResultRow) -> ResultRow {
        row.sequence = self.next;
        self.next += 1;
        self.pending.push(ResultRecord::from(&row));
        row
    }

    /// Inserts what was appended since the last flush, in one statement.
    pub(super) async fn flush(&mut self, conn: &mut AsyncPgConnection) -> StoreResult<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.pending);
        diesel::insert_into(results::table)
            .values(&rows)
            .execute(conn)
            .await?;
        self.wrote = true;
        Ok(())
    }

    /// Moves the counter to the last sequence handed out and wakes every replica's tail.
    /// The notification is delivered at commit, and only if the transaction commits.
    pub(super) async fn finish(mut self, conn: &mut AsyncPgConnection) -> StoreResult<()> {
        self.flush(conn).await?;
        if !self.wrote {
            return Ok(());
        }
        diesel::update(log_counter::table)
            .set(log_counter::newest.eq(self.next - 1))
            .execute(conn)
            .await?;
        diesel::sql_query("SELECT pg_notify($1, '')")
            .bind::<diesel::sql_types::Text, _>(super::tail::CHANNEL)
            .execute(conn)
            .await?;
        Ok(())
    }
}

/// Up to `limit` results of `target` after `after` and at most `upto`, oldest first.
pub(super) async fn results_after(
    conn: &mut AsyncPgConnection,
    target: &Target,
    after: i64,
    upto: i64,
    limit: i64,
) -> StoreResult<Vec<ResultRow>> {
    let query = results::table
        .select(ResultRecord::as_select())
        .filter(results::sequence.gt(after))
        .filter(results::sequence.le(upto))
        .order(results::sequence.asc())
        .limit(limit);
    let rows: Vec<ResultRecord> = match target {
        Target::Intent(id) => {
            let answers = intent_accounts::table
                .filter(intent_accounts::refresh_intent_id.eq(id))
                .filter(intent_accounts::result_sequence.is_not_null())
                .select(intent_accounts::result_sequence.assume_not_null());
            query
                .filter(results::sequence.eq_any(answers))
                .filter(results::refresh_intent_id.eq(id))
                .load(conn)
                .await?
        }
        Target::Link(id) => {
            let accounts = accounts::table
                .filter(accounts::link_id.eq(id))
                .select(accounts::account_id);
            query
                .filter(results::account_id.eq_any(accounts))
                .filter(results::link_id.eq(id))
                .load(conn)
                .await?
        }
        Target::Account(id) => query.filter(results::account_id.eq(id)).load(conn).await?,
    };
    Ok(rows.into_iter().map(ResultRow::from).collect())
}

/// The log's newest sequence (from the counter, which survives pruning) and oldest retained.
pub(super) async fn log_bounds(conn: &mut AsyncPgConnection) -> StoreResult<LogBounds> {
    let newest: i64 = log_counter::table
        .select(log_counter::newest)
        .get_result(conn)
        .await?;
    let oldest: Option<i64> = results::table
        .select(diesel::dsl::min(results::sequence))
        .get_result(conn)
        .await?;
    Ok(LogBounds {
        newest,
        oldest: oldest.unwrap_or(newest + 1),
    })
}

/// Entries after `after`, oldest first, whoever they are for: what the tail hands the sink.
pub(super) async fn entries_after(
    conn: &mut AsyncPgConnection,
    after: i64,
    limit: i64,
) -> StoreResult<Vec<ResultRow>> {
    let rows: Vec<ResultRecord> = results::table
        .select(ResultRecord::as_select())
        .filter(results::sequence.gt(after))
        .order(results::sequence.asc())
        .limit(limit)
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(ResultRow::from).collect())
}

pub(super) async fn counts(conn: &mut AsyncPgConnection) -> StoreResult<Counts> {
    Ok(Counts {
        webhook_events: webhook_events::table.count().get_result(conn).await?,
        held_events: webhook_events::table
            .filter(webhook_events::disposition.eq("held"))
            .count()
            .get_result(conn)
            .await?,
        results: results::table.count().get_result(conn).await?,
    })
}
