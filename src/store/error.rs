//! Storage failures, and the one place a database error is classified: a conflict the
//! transaction may simply be run again for, the database out of reach (or refusing writes),
//! or a failure of the work itself. Every `?` on a diesel error goes through
//! [`From<diesel::result::Error>`], so no caller reads error messages of its own.

use diesel::result::{DatabaseErrorKind, Error};

use crate::error::AppError;

/// Storage failures. None of them is the caller's fault; they map to UNAVAILABLE / 503 when
/// waiting may help ([`StoreError::is_unavailable`]) and to INTERNAL / 500 otherwise.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(Error),
    #[error("database connection error: {0}")]
    Connection(#[from] diesel::ConnectionError),
    #[error("database pool error: {0}")]
    Pool(#[from] diesel::r2d2::PoolError),
    /// The database belongs to another process (or another store in this one).
    #[error("{0}")]
    Locked(String),
    /// The database cannot be reached now (PostgreSQL down, restarting, cut off, read-only
    /// after a failover, or not answering in time); the same call may work again in a moment.
    #[error("the database is unreachable: {0}")]
    Unavailable(String),
    /// The database refused the transaction because of a concurrent one (a serialization
    /// failure, a deadlock, a lock not granted in time): running it again may succeed.
    #[error("the database refused a transaction as conflicting with another: {0}")]
    Conflict(String),
    #[error("migration failed: {0}")]
    Migration(String),
    /// A value read back is not one this service writes (a closed set, a vanished row).
    #[error("stored value is invalid: {0}")]
    Corrupt(String),
    /// The file system refused something the store needs (opening, syncing, a thread).
    #[error("{doing}: {source}")]
    Io {
        doing: &'static str,
        source: std::io::Error,
    },
    #[error("commit failed: {0}")]
    Commit(String),
    #[error("the database writer has stopped")]
    WriterGone,
    /// A storage job panicked; its own writes were undone and the writer lives on.
    #[error("a storage job panicked")]
    Panicked,
    /// A blocking storage task ended without an answer (panicked or was cancelled).
    #[error("a storage task failed: {0}")]
    TaskFailed(String),
    /// A request the store does not take (a caller's mistake, such as an intent that expects
    /// no account).
    #[error("{0}")]
    Invalid(String),
}

/// What a database error means for the work that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A conflict with a concurrent transaction: run it again.
    Conflict,
    /// The database is out of reach or will not take writes now: the work may succeed later,
    /// and until then this replica is not ready.
    Unavailable,
    /// Anything else: the work itself failed (a bug, a constraint); retrying will not help.
    Failed,
}

/// Classifies a database error. diesel keeps PostgreSQL's SQLSTATE only for a few kinds (the
/// driver does not hand the rest through), so the others are recognized by the server's
/// message, as PostgreSQL words them in English; a server configured to answer in another
/// language (`lc_messages`) makes those `Failed`, which is answered 500 and retried by the
/// caller: slower, never wrong.
pub fn classify(error: &Error) -> Fault {
    match error {
        Error::DatabaseError(kind, info) => match kind {
            DatabaseErrorKind::SerializationFailure => Fault::Conflict,
            // A standby after a failover, or a database set read-only.
            DatabaseErrorKind::ReadOnlyTransaction => Fault::Unavailable,
            DatabaseErrorKind::UnableToSendCommand | DatabaseErrorKind::ClosedConnection => {
                Fault::Unavailable
            }
            _ => by_message(info.message()),
        },
        Error::BrokenTransactionManager => Fault::Unavailable,
        _ => Fault::Failed,
    }
}

/// The SQLSTATEs diesel does not keep, by their messages (PostgreSQL 15's wording).
fn by_message(message: &str) -> Fault {
    const CONFLICTS: [&str; 4] = [
        // 40P01 deadlock_detected
        "deadlock detected",
        // 55P03 lock_not_available (lock_timeout)
        "canceling statement due to lock timeout",
        "could not obtain lock",
        // 40001 from a deferred check
        "could not serialize access",
    ];
    const UNAVAILABLE: [&str; 6] = [
        // 57014 query_canceled: statement_timeout, or cancelled by an operator
        "canceling statement due to",
        // 57P01–57P03 and 25P03: the server ended this session (restart, failover,
        // idle-in-transaction timeout, an operator's pg_terminate_backend)
        "terminating connection",
        "the database system is",
        // 25006 read_only_sql_transaction raised by commands diesel does not map
        "read-only transaction",
        "during recovery",
        // 53300 and 53xxx: out of connections, memory or disk
        "too many clients",
    ];
    if CONFLICTS.iter().any(|m| message.contains(m)) {
        Fault::Conflict
    } else if UNAVAILABLE.iter().any(|m| message.contains(m)) {
        Fault::Unavailable
    } else {
        Fault::Failed
    }
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        match classify(&e) {
            Fault::Conflict => StoreError::Conflict(e.to_string()),
            Fault::Unavailable => StoreError::Unavailable(e.to_string()),
            Fault::Failed => StoreError::Database(e),
        }
    }
}

impl From<crate::domain::status::UnknownValue> for StoreError {
    fn from(e: crate::domain::status::UnknownValue) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

impl StoreError {
    /// Whether waiting may help (the database out of reach, read-only, or a conflict that
    /// outlasted its retries): the caller may retry, and meanwhile this is UNAVAILABLE.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::Connection(_) | StoreError::Conflict(_)
        )
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            tracing::warn!(error = %e, "the database is unavailable");
            return AppError::Unavailable(
                "the database is unavailable right now; retry shortly".into(),
            );
        }
        AppError::Internal {
            what: "storage",
            detail: e.to_string(),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[cfg(test)]
mod tests {
    use super::*;

    fn db(kind: DatabaseErrorKind, message: &str) -> Error {
        Error::DatabaseError(kind, Box::new(message.to_owned()))
    }

    /// Each way PostgreSQL says no, as the writer and every caller see it.
    #[test]
    fn database_refusals_are_classified_by_what_retrying_can_do() {
        use DatabaseErrorKind::*;
        let cases = [
            (
                db(
                    SerializationFailure,
                    "could not serialize access due to concurrent update",
                ),
                Fault::Conflict,
            ),
            (db(Unknown, "deadlock detected"), Fault::Conflict),
            (
                db(Unknown, "canceling statement due to lock timeout"),
                Fault::Conflict,
            ),
            (
                db(Unknown, "canceling statement due to statement timeout"),
                Fault::Unavailable,
            ),
            (
                db(Unknown, "canceling statement due to user request"),
                Fault::Unavailable,
            ),
            (
                db(
                    ReadOnlyTransaction,
                    "cannot execute INSERT in a read-only transaction",
                ),
                Fault::Unavailable,
            ),
            (
                db(Unknown, "cannot execute NOTIFY during recovery"),
                Fault::Unavailable,
            ),
            (
                db(
                    Unknown,
                    "terminating connection due to idle-in-transaction timeout",
                ),
                Fault::Unavailable,
            ),
            (
                db(
                    Unknown,
                    "terminating connection due to administrator command",
                ),
                Fault::Unavailable,
            ),
            (
                db(Unknown, "the database system is shutting down"),
                Fault::Unavailable,
            ),
            (
                db(ClosedConnection, "connection closed"),
                Fault::Unavailable,
            ),
            (
                db(UnableToSendCommand, "error communicating with the server"),
                Fault::Unavailable,
            ),
            (
                db(
                    UniqueViolation,
                    "duplicate key value violates unique constraint",
                ),
                Fault::Failed,
            ),
            (
                db(Unknown, "syntax error at or near \"SELEC\""),
                Fault::Failed,
            ),
            (Error::NotFound, Fault::Failed),
            (Error::BrokenTransactionManager, Fault::Unavailable),
        ];
        for (error, expected) in cases {
            assert_eq!(classify(&error), expected, "{error}");
        }
    }

    #[test]
    fn conflicts_and_unreachable_databases_are_unavailable_to_callers_bugs_are_internal() {
        let conflict = StoreError::from(db(DatabaseErrorKind::Unknown, "deadlock detected"));
        assert!(matches!(conflict, StoreError::Conflict(_)));
        assert!(conflict.is_unavailable());
        let read_only = StoreError::from(db(
            DatabaseErrorKind::ReadOnlyTransaction,
            "cannot execute UPDATE in a read-only transaction",
        ));
        assert!(matches!(
            AppError::from(read_only),
            AppError::Unavailable(_)
        ));
        let bug = StoreError::from(db(DatabaseErrorKind::CheckViolation, "violates check"));
        assert!(matches!(AppError::from(bug), AppError::Internal { .. }));
    }
}
