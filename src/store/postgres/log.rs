//! The result log on PostgreSQL: appending inside a writer transaction (which holds the
//! counter's lock, so sequences are handed out in commit order), and reading by target and
//! cursor.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use std::marker::PhantomData;

use super::schema::{accounts, intent_accounts, log_counter, log_horizon, results, webhook_events};
use super::statements::AppendResults;
use crate::clock::Millis;
use crate::domain::{ResultRow, Target};
use crate::store::decide::{self, LogTimes};
use crate::store::queries;
use crate::store::rows::ResultRecord;
use tokio_util::sync::CancellationToken;

use crate::store::{Counts, LogBounds, StoreResult};

/// The channel writers notify when they append to the log; every replica's tail listens.
pub(super) const CHANNEL: &str = "fintoc_refresh_log";

/// Locks the counter for the rest of the transaction: every other writer, on every replica,
/// waits here until this transaction ends, so sequences commit in order. Sent as text right
/// after BEGIN (see `session::Bounds::begin`), so it needs no round trip of its own.
pub(super) const LOCK_COUNTER: &str = "SELECT 1 FROM log_counter FOR UPDATE";

/// Hands out sequences inside one writer transaction, from the counter it locked.
pub(super) struct Appender {
    /// The next sequence to hand out.
    next: i64,
    /// The newest stamp in the log: no result is stamped earlier (`decide::log_time`).
    stamped_ms: Millis,
    /// Rows appended and not yet inserted.
    pending: Vec<ResultRow>,
    /// Whether anything was appended in this transaction.
    wrote: bool,
    /// Whether the counter must move even if nothing is appended (see [`Rewind`]).
    raised: bool,
    rewound: Option<Rewind>,
}

/// Rows taken from an [`Appender`], ready to insert in one statement.
pub(super) struct Rows(Vec<ResultRow>);

impl Rows {
    pub(super) fn statement(&self) -> AppendResults<'_> {
        let rows = &self.0;
        AppendResults {
            sequences: rows.iter().map(|r| r.sequence).collect(),
            accounts: rows.iter().map(|r| r.account_id.as_str()).collect(),
            links: rows.iter().map(|r| r.link_id.as_str()).collect(),
            intents: rows.iter().map(|r| r.refresh_intent_id.as_str()).collect(),
            statuses: rows.iter().map(|r| r.status.as_str()).collect(),
            new_movements: rows.iter().map(|r| r.new_movements).collect(),
            public_errors: rows.iter().map(|r| r.public_error.as_str()).collect(),
            event_ids: rows.iter().map(|r| r.event_id.as_str()).collect(),
            occurred_at_ms: rows.iter().map(|r| r.occurred_at_ms).collect(),
            committed_at_ms: rows.iter().map(|r| r.committed_at_ms).collect(),
            completes: rows.iter().map(|r| r.completes_intent).collect(),
            details: rows.iter().map(|r| r.detail.to_stored()).collect(),
            fetches: rows.iter().map(|r| r.fetches_movements).collect(),
            traces: rows.iter().map(|r| r.trace_context.as_str()).collect(),
            _life: PhantomData,
        }
    }
}

impl Appender {
    /// The counter's value, read by a transaction that holds its lock (each statement reads
    /// what was committed when it began, and it began after the lock was granted).
    /// Read with the newest stamp, which the next results must not go below.
    pub(super) fn newest_query()
    -> diesel::dsl::Select<log_counter::table, (log_counter::newest, log_counter::newest_ms)> {
        log_counter::table.select((log_counter::newest, log_counter::newest_ms))
    }

    /// An appender for a transaction that locked the counter and read `newest` from it, on a
    /// replica that has handed sequences up to `published` to its watchers. A counter below
    /// that was rewound: sequences continue after `published`, never reusing one.
    pub(super) fn after((newest, stamped_ms): (i64, Millis), published: i64) -> Appender {
        let rewound = (newest < published).then_some(Rewind {
            counter: newest,
            published,
        });
        Appender {
            next: newest.max(published) + 1,
            stamped_ms,
            pending: Vec::new(),
            wrote: false,
            raised: rewound.is_some(),
            rewound,
        }
    }

    /// The rewind found when the counter was read, if any.
    pub(super) fn rewound(&self) -> Option<Rewind> {
        self.rewound
    }

    /// Hands out sequences only after `to` from now on, and moves the counter there at
    /// commit even if nothing is appended.
    pub(super) fn raise_to(&mut self, to: i64) {
        if to >= self.next {
            self.next = to + 1;
            self.raised = true;
        }
    }

    /// Gives `row` the next sequence and queues it for insertion.
    pub(super) fn append(&mut self, mut row: ResultRow) -> ResultRow {
        row.committed_at_ms = decide::log_time(row.committed_at_ms, self.stamped_ms);
        self.stamped_ms = row.committed_at_ms;
        row.sequence = self.next;
        self.next += 1;
        self.pending.push(row.clone());
        row
    }

    /// The rows appended since the last take, to insert (the caller then says it did).
    pub(super) fn take(&mut self) -> Option<Rows> {
        (!self.pending.is_empty()).then(|| Rows(std::mem::take(&mut self.pending)))
    }

    /// Notes that rows taken were inserted.
    pub(super) fn wrote_something(&mut self, wrote: bool) {
        self.wrote |= wrote;
    }

    /// Inserts what was appended since the last flush, in one statement.
    pub(super) async fn flush(&mut self, conn: &mut AsyncPgConnection) -> StoreResult<()> {
        if let Some(rows) = self.take() {
            rows.statement().execute(conn).await?;
            self.wrote = true;
        }
        Ok(())
    }

    /// The end of the transaction, as one simple query: the counter moved to the last
    /// sequence handed out, every replica's tail woken (the notification is delivered at
    /// commit, and only if it commits), then COMMIT. One message, because the move must come
    /// before the COMMIT and pipelined statements need not reach the server in the order
    /// they were started. Only numbers and a constant go into it. Everything appended must
    /// have been inserted.
    pub(super) fn finish_and_commit(self) -> String {
        debug_assert!(self.pending.is_empty(), "appended rows were never inserted");
        if !(self.wrote || self.raised) {
            return "COMMIT".to_owned();
        }
        format!(
            "WITH moved AS (UPDATE log_counter SET newest = GREATEST(newest, {}), \
             newest_ms = GREATEST(newest_ms, {}) RETURNING newest) \
             SELECT pg_notify('{CHANNEL}', '') FROM moved; COMMIT",
            self.next - 1,
            self.stamped_ms
        )
    }
}

/// The log's counter found below what this replica has already handed to its watchers: a
/// failover lost commits, or a backup was restored. Sequences up to `published` must never
/// be handed out again (a watcher holding a cursor among them would skip the new results
/// silently), so the counter is moved past them in the same transaction, and this replica
/// stops: its watchers end and resume elsewhere (or after its restart) from their cursors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rewind {
    pub counter: i64,
    pub published: i64,
}

impl Rewind {
    /// Logs it, and stops the replica.
    pub(super) fn report(self, broken: &CancellationToken) {
        tracing::error!(
            counter = self.counter,
            published = self.published,
            "the result log was rewound: PostgreSQL's log counter is at {} but this replica \
             has already handed sequences up to {} to watchers (a failover that lost \
             commits, or a restored backup); results {}..={} are gone. The counter now \
             continues after {}, and this replica stops serving",
            self.counter,
            self.published,
            self.counter + 1,
            self.published,
            self.published
        );
        broken.cancel();
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
    queries::results_after!(conn, target, after, upto, limit, [.await])
}

/// The log's bounds, then what a seek to `at_ms` needs (bounds first: see `decide::LogTimes`).
pub(super) async fn log_times(
    conn: &mut AsyncPgConnection,
    at_ms: Millis,
) -> StoreResult<LogTimes> {
    let bounds = log_bounds(conn).await?;
    queries::log_times!(conn, bounds, at_ms, [.await])
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
        .select(results::all_columns)
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
            .filter(super::statements::is_held())
            .count()
            .get_result(conn)
            .await?,
        results: results::table.count().get_result(conn).await?,
    })
}
