//! When a new refresh may go to Fintoc: the cooldown after a successful refresh and the hold
//! after rejected credentials. Answering these locally saves a Fintoc call and, for rejected
//! credentials, keeps repeated retries from locking the user out at the bank.

use std::time::Duration;

use super::RefreshType;
use crate::clock::{Millis, millis};

/// Fintoc allows one successful only_last refresh per Link every 5 minutes.
pub const ONLY_LAST_COOLDOWN: Duration = Duration::from_secs(5 * 60);
/// ... and one historical refresh every 60 minutes.
pub const HISTORICAL_COOLDOWN: Duration = Duration::from_secs(60 * 60);

/// How long a caller's idempotency key is honoured (at least 24 h is promised; retention
/// prunes keys after this).
pub const KEY_TTL: Duration = Duration::from_secs(48 * 3600);

/// How long a successful refresh of this type blocks the next one of the same type.
pub fn cooldown_for(refresh_type: RefreshType) -> Duration {
    match refresh_type {
        RefreshType::OnlyLast => ONLY_LAST_COOLDOWN,
        RefreshType::Historical => HISTORICAL_COOLDOWN,
    }
}

/// Time left on a window of `length` that opened at `since_ms`, if any is left at `now_ms`.
pub fn remaining(since_ms: Millis, length: Duration, now_ms: Millis) -> Option<Duration> {
    let ends = since_ms.saturating_add(millis(length));
    (ends > now_ms).then(|| Duration::from_millis((ends - now_ms) as u64))
}

/// Time left before a new refresh of `refresh_type` may start, given when the last
/// *succeeded* intent of that type completed. Failed intents start no cooldown, so the
/// caller only passes succeeded ones.
pub fn cooldown_remaining(
    refresh_type: RefreshType,
    last_succeeded_at_ms: Option<Millis>,
    now_ms: Millis,
) -> Option<Duration> {
    remaining(last_succeeded_at_ms?, cooldown_for(refresh_type), now_ms)
}

/// Time left on the rejected-credentials hold, counted from the rejected result's arrival.
pub fn hold_remaining(
    rejected_at_ms: Option<Millis>,
    hold: Duration,
    now_ms: Millis,
) -> Option<Duration> {
    remaining(rejected_at_ms?, hold, now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Millis = 60_000;

    #[test]
    fn cooldown_table() {
        let t = 1_700_000_000_000;
        let table: &[(RefreshType, Option<Millis>, Millis, Option<Duration>)] = &[
            (RefreshType::OnlyLast, None, t, None),
            (
                RefreshType::OnlyLast,
                Some(t),
                t,
                Some(Duration::from_secs(300)),
            ),
            (
                RefreshType::OnlyLast,
                Some(t),
                t + MIN,
                Some(Duration::from_secs(240)),
            ),
            (
                RefreshType::OnlyLast,
                Some(t),
                t + 5 * MIN - 1,
                Some(Duration::from_millis(1)),
            ),
            (RefreshType::OnlyLast, Some(t), t + 5 * MIN, None),
            (RefreshType::OnlyLast, Some(t), t + 6 * MIN, None),
            (
                RefreshType::Historical,
                Some(t),
                t + 5 * MIN,
                Some(Duration::from_secs(55 * 60)),
            ),
            (RefreshType::Historical, Some(t), t + 60 * MIN, None),
        ];
        for (kind, last, now, want) in table {
            assert_eq!(
                cooldown_remaining(*kind, *last, *now),
                *want,
                "{kind} {last:?} {now}"
            );
        }
    }

    #[test]
    fn hold_table() {
        let t = 1_700_000_000_000;
        let hour = Duration::from_secs(3600);
        assert_eq!(hold_remaining(None, hour, t), None);
        assert_eq!(hold_remaining(Some(t), hour, t), Some(hour));
        assert_eq!(hold_remaining(Some(t), hour, t + 30 * MIN), Some(hour / 2));
        assert_eq!(hold_remaining(Some(t), hour, t + 60 * MIN), None);
        assert_eq!(hold_remaining(Some(t), Duration::ZERO, t), None);
    }
}
