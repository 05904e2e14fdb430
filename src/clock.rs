//! Injected time. Everything that depends on "now" — the signature window, cooldowns, holds,
//! reconcile and timeout deadlines, heartbeats — reads it from a [`Clock`], so tests move time
//! forward by hand instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;
use tokio::sync::watch;

/// Milliseconds since the Unix epoch, UTC: the unit of every stored time.
pub type Millis = i64;

/// Where time comes from: the system's clock, or one that only moves when a test says so.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<ManualClock>),
}

impl Clock {
    /// A manual clock starting at `start_ms`, and the handle that moves it.
    pub fn manual(start_ms: Millis) -> (Clock, Arc<ManualClock>) {
        let manual = Arc::new(ManualClock::new(start_ms));
        (Clock::Manual(manual.clone()), manual)
    }

    pub fn now_ms(&self) -> Millis {
        match self {
            Clock::System => system_now_ms(),
            Clock::Manual(m) => m.now_ms(),
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        from_millis(self.now_ms())
    }

    /// Waits until the clock reads `deadline_ms` or later.
    pub async fn sleep_until(&self, deadline_ms: Millis) {
        match self {
            Clock::System => {
                let left = deadline_ms - system_now_ms();
                if left > 0 {
                    tokio::time::sleep(Duration::from_millis(left as u64)).await;
                }
            }
            Clock::Manual(m) => {
                let mut rx = m.tx.subscribe();
                // wait_for checks the current value first, so an advance that happened
                // before we subscribed is not missed.
                let _ = rx.wait_for(|now| *now >= deadline_ms).await;
            }
        }
    }

    /// Paces a periodic task: waits `period` on the system clock; on a manual clock, until
    /// the next time a test moves it (so a test's advance is never slept through).
    pub async fn tick(&self, period: Duration) {
        match self {
            Clock::System => tokio::time::sleep(period).await,
            Clock::Manual(m) => {
                let mut rx = m.tx.subscribe();
                let _ = rx.changed().await;
            }
        }
    }

    /// Waits `period` of this clock's time.
    pub async fn sleep(&self, period: Duration) {
        let ms = millis(period);
        self.sleep_until(self.now_ms().saturating_add(ms)).await;
    }
}

/// A clock for tests: reads a stored instant and wakes sleepers when it is advanced.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
    tx: watch::Sender<Millis>,
}

impl ManualClock {
    fn new(start_ms: Millis) -> Self {
        ManualClock {
            now: AtomicI64::new(start_ms),
            tx: watch::Sender::new(start_ms),
        }
    }

    pub fn now_ms(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }

    /// Moves time forward by `by` and wakes everything sleeping until then.
    pub fn advance(&self, by: Duration) {
        let ms = millis(by);
        let now = self.now.fetch_add(ms, Ordering::SeqCst) + ms;
        self.tx.send_replace(now);
    }

    /// Sets the time (forward or back) and wakes sleepers whose deadline has passed.
    pub fn set(&self, to_ms: Millis) {
        self.now.store(to_ms, Ordering::SeqCst);
        self.tx.send_replace(to_ms);
    }
}

/// A duration in the unit of stored times (saturating: no duration here is that long).
pub fn millis(d: Duration) -> Millis {
    i64::try_from(d.as_millis()).unwrap_or(Millis::MAX)
}

pub fn system_now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// A stored instant as a date-time (out-of-range values clamp to the epoch).
pub fn from_millis(ms: Millis) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn to_millis(t: OffsetDateTime) -> Millis {
    (t.unix_timestamp_nanos() / 1_000_000) as Millis
}

/// Fintoc's timestamp format (ISO 8601, UTC, with or without milliseconds).
pub fn parse_rfc3339_ms(s: &str) -> Option<Millis> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(to_millis)
}

/// Formats like Fintoc does: `2021-12-07T21:43:54.343Z`.
pub fn format_rfc3339_ms(ms: Millis) -> String {
    let t = from_millis(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fintoc_timestamps_round_trip() {
        let ms = parse_rfc3339_ms("2021-12-07T21:43:54.343Z").unwrap();
        assert_eq!(format_rfc3339_ms(ms), "2021-12-07T21:43:54.343Z");
        assert_eq!(
            parse_rfc3339_ms("2022-12-01T01:50:12Z"),
            parse_rfc3339_ms("2022-12-01T01:50:12.000Z")
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[tokio::test]
    async fn manual_clock_wakes_sleepers_on_advance() {
        let (clock, hand) = Clock::manual(1_000);
        let sleeper = tokio::spawn({
            let clock = clock.clone();
            async move { clock.sleep(Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        hand.advance(Duration::from_secs(4));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        hand.advance(Duration::from_secs(1));
        sleeper.await.unwrap();
        assert_eq!(clock.now_ms(), 6_000);
    }
}
