//! The log's time: how each result is stamped, and where a seek by time (`start_time`)
//! starts. Both backends stamp with [`log_time`] and load [`LogTimes`]; neither decides.
//!
//! Stamps never decrease along the log: each result is stamped with its writer's clock, but
//! no earlier than the result before it (PostgreSQL keeps that stamp with the log's counter,
//! under the counter's lock, so it holds across replicas; SQLite's one writer keeps it in
//! memory). So "the first result stored at or after T" is a clean cut of the log: every
//! result after it was stored at or after T too, and one index probe finds it. A replica
//! whose clock runs ahead by d stamps its results up to d late, and the results the others
//! store in that time get the same stamp rather than an earlier one; a seek may thus start
//! up to d later in real time than a perfect clock would, never out of order.

use crate::clock::Millis;
use crate::store::LogBounds;

/// The stamp of a result committed at `now_ms` after one stamped `previous_ms`.
pub fn log_time(now_ms: Millis, previous_ms: Millis) -> Millis {
    now_ms.max(previous_ms)
}

/// What a backend reads for a seek, in this order: bounds first, so a result committed
/// between the reads is either found by the second read or after `bounds.newest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTimes {
    pub bounds: LogBounds,
    /// The first retained result stamped at or after the time sought, if any.
    pub first_at_or_after: Option<i64>,
    /// The stamp of the newest result retention removed (0 if none was).
    pub pruned_through_ms: Millis,
}

/// Where a seek starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    /// Deliver every result after this sequence.
    After(i64),
    /// Retention removed a result stored at or after the time: the feed would have a hole.
    Expired { oldest: i64 },
}

/// Where a feed seeking to `at_ms` starts.
pub fn seek(at_ms: Millis, times: LogTimes) -> Seek {
    let LogTimes {
        bounds,
        first_at_or_after,
        pruned_through_ms,
    } = times;
    if bounds.pruned_through() > 0 && at_ms <= pruned_through_ms {
        return Seek::Expired {
            oldest: bounds.oldest,
        };
    }
    match first_at_or_after {
        Some(first) => Seek::After(first - 1),
        // Everything retained was stored before it: from the newest on.
        None => Seek::After(bounds.newest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(oldest: i64, newest: i64, first: Option<i64>, pruned_ms: Millis) -> LogTimes {
        LogTimes {
            bounds: LogBounds { newest, oldest },
            first_at_or_after: first,
            pruned_through_ms: pruned_ms,
        }
    }

    #[test]
    fn stamps_never_go_back() {
        assert_eq!(log_time(1_000, 900), 1_000);
        assert_eq!(
            log_time(900, 1_000),
            1_000,
            "a replica whose clock is behind"
        );
    }

    #[test]
    fn starts_before_the_first_result_stored_at_or_after_the_time() {
        assert_eq!(seek(5_000, times(1, 10, Some(4), 0)), Seek::After(3));
        // Before the first result ever stored: from the oldest.
        assert_eq!(seek(0, times(1, 10, Some(1), 0)), Seek::After(0));
        // After the newest: from now on.
        assert_eq!(seek(9_000, times(1, 10, None, 0)), Seek::After(10));
        // An empty log.
        assert_eq!(seek(9_000, times(1, 0, None, 0)), Seek::After(0));
    }

    #[test]
    fn refuses_a_time_whose_results_retention_removed() {
        // Results 1..=4 pruned, the last stamped 4_000.
        assert_eq!(
            seek(4_000, times(5, 10, Some(5), 4_000)),
            Seek::Expired { oldest: 5 },
            "a pruned result was stored at that very time"
        );
        assert_eq!(
            seek(1_000, times(5, 10, Some(5), 4_000)),
            Seek::Expired { oldest: 5 }
        );
        // After the last pruned stamp: complete from the oldest retained.
        assert_eq!(seek(4_001, times(5, 10, Some(5), 4_000)), Seek::After(4));
        // Everything pruned, the time after it all: from now on.
        assert_eq!(seek(9_000, times(11, 10, None, 8_000)), Seek::After(10));
    }
}
