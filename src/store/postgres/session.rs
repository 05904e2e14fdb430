//! The bounds every PostgreSQL session of a replica runs under, and the one way this backend
//! opens a transaction.
//!
//! Two failures look alike from the other side and neither ends on its own:
//! - **A replica that freezes** (a paused VM, a stalled host, a partition) keeps its sockets
//!   open, so PostgreSQL never learns it is gone, and a lock it holds inside a transaction
//!   (the log counter's, which every writer of the cluster waits for) would be held for
//!   ever. So every transaction starts with `SET LOCAL` bounds: a session idle inside a
//!   transaction is ended after [`Bounds::idle_in_transaction`] (its locks go with it), a
//!   statement waits for a lock at most [`Bounds::lock`] (then it is a conflict the writer
//!   retries), and runs at most [`Bounds::statement`]. `SET LOCAL`, not session `SET`s:
//!   behind a transaction pooler a session setting would stick to a server connection that
//!   other clients get next.
//! - **A database that stops answering** (packets dropped, no RST) would leave a caller
//!   waiting for ever: every operation is raced against [`Bounds::answer`] on this side, and
//!   a connection that missed its answer is thrown away, never reused.
//!
//! Every transaction also says the isolation it is written for (READ COMMITTED: each
//! statement sees what committed before it, and waiting for a lock then reading is what
//! serializes writers) and `synchronous_commit = on` (a COMMIT returns once its WAL is
//! flushed: "answered only after a durable commit"), whatever the database's defaults.

use std::time::Duration;

use diesel_async::{AnsiTransactionManager, AsyncPgConnection, TransactionManager};

use crate::store::{StoreError, StoreResult};

/// How often a transaction refused as a conflict is run again before giving up.
const CONFLICT_ATTEMPTS: u32 = 5;

/// The time limits of one replica's sessions, all derived from `--request-timeout` (the
/// longest a caller waits for an answer), so each failure ends in a status the caller still
/// receives: a webhook waiting behind a frozen lock holder is stored once the holder's
/// session is ended, well within its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Longest one operation (a read, a transaction) waits for the database's answer here,
    /// on this side of the network.
    pub answer: Duration,
    /// `statement_timeout`: longest one statement runs on the server.
    pub statement: Duration,
    /// `lock_timeout`: longest a statement waits for a lock.
    pub lock: Duration,
    /// `idle_in_transaction_session_timeout`: a session silent this long inside a
    /// transaction is ended by the server, releasing its locks.
    pub idle_in_transaction: Duration,
}

impl Bounds {
    /// The bounds for a `--request-timeout` of `request`: an answer within a third of it,
    /// a statement within a quarter, and a lock or a silent transaction within a tenth
    /// (3 s by default), each within sane limits.
    pub fn for_request_timeout(request: Duration) -> Bounds {
        let clamp = |d: Duration, lo: u64, hi: u64| {
            d.clamp(Duration::from_millis(lo), Duration::from_millis(hi))
        };
        Bounds {
            answer: clamp(request / 3, 2_000, 60_000),
            statement: clamp(request / 4, 1_000, 45_000),
            lock: clamp(request / 10, 1_000, 10_000),
            idle_in_transaction: clamp(request / 10, 1_000, 10_000),
        }
    }

    /// BEGIN with this replica's bounds, as one simple query: it is sent the moment its
    /// future is first polled, so statements polled after it run inside the transaction.
    pub(super) fn begin(&self) -> String {
        format!(
            "BEGIN ISOLATION LEVEL READ COMMITTED; \
             SET LOCAL synchronous_commit = on; \
             SET LOCAL statement_timeout = {}; \
             SET LOCAL lock_timeout = {}; \
             SET LOCAL idle_in_transaction_session_timeout = {}",
            self.statement.as_millis(),
            self.lock.as_millis(),
            self.idle_in_transaction.as_millis()
        )
    }

    /// Runs `work` on `conn` unless the database takes longer than [`Bounds::answer`] to
    /// answer; then the connection is poisoned (see [`poison`]) and the work fails as
    /// unavailable.
    pub(super) async fn within<T, F>(&self, conn: &mut AsyncPgConnection, work: F) -> StoreResult<T>
    where
        for<'c> F: AsyncFnOnce(&'c mut AsyncPgConnection) -> StoreResult<T>
            + OnConn<&'c mut AsyncPgConnection, StoreResult<T>, Fut: Send>,
    {
        let answered = tokio::time::timeout(self.answer, work(&mut *conn)).await;
        answered.unwrap_or_else(|_| {
            poison(conn);
            Err(self.no_answer())
        })
    }

    /// The error of an operation that got no answer in time.
    pub(super) fn no_answer(&self) -> StoreError {
        StoreError::Unavailable(format!(
            "the database did not answer within {} ms",
            self.answer.as_millis()
        ))
    }

    /// Runs `work` in a transaction with these bounds, committed if it succeeds and rolled
    /// back if not; a conflict (deadlock, serialization failure, lock timeout) runs it again,
    /// a few times, with a short pause. Bounded as a whole by [`Bounds::answer`].
    pub(super) async fn transaction<T, F>(
        &self,
        conn: &mut AsyncPgConnection,
        mut work: F,
    ) -> StoreResult<T>
    where
        for<'c> F: AsyncFnMut(&'c mut AsyncPgConnection) -> StoreResult<T>
            + OnConnMut<&'c mut AsyncPgConnection, StoreResult<T>, Fut: Send>,
    {
        let begin = self.begin();
        let run = async {
            let mut attempt = 1;
            loop {
                AnsiTransactionManager::begin_transaction_sql(&mut *conn, &begin).await?;
                let outcome = match work(&mut *conn).await {
                    Ok(value) => AnsiTransactionManager::commit_transaction(&mut *conn)
                        .await
                        .map(|()| value)
                        .map_err(StoreError::from),
                    Err(e) => {
                        AnsiTransactionManager::rollback_transaction(&mut *conn).await?;
                        Err(e)
                    }
                };
                match outcome {
                    Err(StoreError::Conflict(why)) if attempt < CONFLICT_ATTEMPTS => {
                        tracing::debug!(%why, attempt, "a transaction conflicted; running it again");
                        tokio::time::sleep(conflict_pause(attempt)).await;
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        };
        let answered = tokio::time::timeout(self.answer, run).await;
        answered.unwrap_or_else(|_| {
            poison(conn);
            Err(self.no_answer())
        })
    }
}

/// Work on a connection, `async |conn| …`, whose future is known to be `Send` whatever the
/// connection's borrow: stable Rust cannot say that of an `AsyncFnOnce` alone, and tasks
/// must be `Send` (diesel-async states its transactions the same way).
pub(super) trait OnConn<C, R>:
    AsyncFnOnce(C) -> R + FnOnce(C) -> <Self as OnConn<C, R>>::Fut
{
    type Fut: Future<Output = R>;
}

impl<F, C, Fut, R> OnConn<C, R> for F
where
    F: AsyncFnOnce(C) -> R + FnOnce(C) -> Fut,
    Fut: Future<Output = R>,
{
    type Fut = Fut;
}

/// [`OnConn`] for work that may run more than once (a transaction retried after a conflict).
pub(super) trait OnConnMut<C, R>:
    AsyncFnMut(C) -> R + FnMut(C) -> <Self as OnConnMut<C, R>>::Fut
{
    type Fut: Future<Output = R>;
}

impl<F, C, Fut, R> OnConnMut<C, R> for F
where
    F: AsyncFnMut(C) -> R + FnMut(C) -> Fut,
    Fut: Future<Output = R>,
{
    type Fut = Fut;
}

/// The pause before running a conflicting transaction again: 10 ms, doubling, jittered so
/// two replicas that deadlocked do not meet again.
pub(super) fn conflict_pause(attempt: u32) -> Duration {
    let base = 10u64 << attempt.min(6);
    Duration::from_millis(base / 2 + rand::random_range(0..=base / 2))
}

/// Marks a connection that missed an answer (or was abandoned mid-transaction) as broken, so
/// the pool closes it instead of handing it to the next caller: whatever it was waiting for
/// may still arrive, or never.
pub(super) fn poison(conn: &mut AsyncPgConnection) {
    AnsiTransactionManager::transaction_manager_status_mut(conn).set_in_error();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_follow_the_request_timeout_within_limits() {
        let default = Bounds::for_request_timeout(Duration::from_secs(30));
        assert_eq!(default.answer, Duration::from_secs(10));
        assert_eq!(default.statement, Duration::from_millis(7_500));
        assert_eq!(default.lock, Duration::from_secs(3));
        assert_eq!(default.idle_in_transaction, Duration::from_secs(3));
        // A frozen lock holder is gone, and a waiter has retried, well within a request.
        assert!(default.idle_in_transaction + default.lock < Duration::from_secs(30) / 4);
        let tiny = Bounds::for_request_timeout(Duration::from_millis(300));
        assert_eq!(tiny.lock, Duration::from_secs(1));
        assert_eq!(tiny.answer, Duration::from_secs(2));
        let huge = Bounds::for_request_timeout(Duration::from_secs(3600));
        assert_eq!(huge.idle_in_transaction, Duration::from_secs(10));
        assert_eq!(huge.answer, Duration::from_secs(60));
    }

    #[test]
    fn every_transaction_sets_its_isolation_durability_and_bounds_locally() {
        let sql = Bounds::for_request_timeout(Duration::from_secs(30)).begin();
        assert!(
            sql.starts_with("BEGIN ISOLATION LEVEL READ COMMITTED;"),
            "{sql}"
        );
        for setting in [
            "SET LOCAL synchronous_commit = on",
            "SET LOCAL statement_timeout = 7500",
            "SET LOCAL lock_timeout = 3000",
            "SET LOCAL idle_in_transaction_session_timeout = 3000",
        ] {
            assert!(sql.contains(setting), "{setting} missing from {sql}");
        }
        // No session state: nothing that outlives the transaction.
        assert!(!sql.replace("SET LOCAL", "").contains("SET "), "{sql}");
    }

    #[test]
    fn conflict_pauses_grow_and_stay_short() {
        for attempt in 1..CONFLICT_ATTEMPTS {
            let pause = conflict_pause(attempt);
            assert!(
                pause >= Duration::from_millis(10 << attempt) / 2,
                "{pause:?}"
            );
            assert!(pause <= Duration::from_millis(10 << attempt), "{pause:?}");
        }
        assert!(conflict_pause(40) <= Duration::from_millis(640));
    }
}
