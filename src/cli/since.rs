//! `watch --since`: where a feed starts, written as a time (RFC 3339) or as an age (`90m`,
//! meaning 90 minutes ago, in the duration syntax the server's flags use). An age is turned
//! into a time once, against the `now` the command passes when it starts, so a reconnect
//! does not move the start.

use std::time::Duration;

use crate::clock::{Millis, millis, parse_rfc3339_ms};
use crate::config::parse_duration;

/// The value of `--since`, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// A point in time (milliseconds, the unit of every stored time).
    At(Millis),
    /// That long before the command started.
    Ago(Duration),
}

impl Since {
    /// `2026-12-03T10:00:00Z` (any RFC 3339 offset) or `90m`, `1h`, `2d`, `1h30m`.
    pub fn parse(text: &str) -> Result<Since, String> {
        let text = text.trim();
        if let Some(at) = parse_rfc3339_ms(text) {
            return Ok(Since::At(at));
        }
        parse_duration(text).map(Since::Ago).map_err(|_| {
            format!(
                "{text:?} is neither a time (RFC 3339, like 2026-12-03T10:00:00Z) nor an age \
                 (like 90m, 1h or 2d)"
            )
        })
    }

    /// The start time this means when the command started at `now_ms`. Nothing is stored
    /// before the Unix epoch, and the contract starts a time before the first result at the
    /// oldest one, so clamping there changes no answer and keeps the Timestamp in range.
    pub fn at(self, now_ms: Millis) -> Millis {
        let at = match self {
            Since::At(at) => at,
            Since::Ago(age) => now_ms.saturating_sub(millis(age)),
        };
        at.max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_800_000_000_000;

    #[test]
    fn times_and_ages_both_parse() {
        assert_eq!(
            Since::parse("2026-12-03T10:00:00Z"),
            Ok(Since::At(1_796_292_000_000))
        );
        assert_eq!(
            Since::parse("2026-12-03T07:00:00.5-03:00"),
            Ok(Since::At(1_796_292_000_500))
        );
        assert_eq!(
            Since::parse("90m"),
            Ok(Since::Ago(Duration::from_secs(5400)))
        );
        assert_eq!(
            Since::parse("2d"),
            Ok(Since::Ago(Duration::from_secs(172_800)))
        );
    }

    #[test]
    fn anything_else_is_refused_naming_both_forms() {
        for bad in ["", "yesterday", "90", "2026-12-03", "-1h"] {
            let said = Since::parse(bad).unwrap_err();
            assert!(said.contains("RFC 3339") && said.contains("90m"), "{said}");
        }
    }

    #[test]
    fn an_age_counts_back_from_now_and_nothing_goes_before_the_epoch() {
        assert_eq!(
            Since::Ago(Duration::from_secs(3600)).at(NOW),
            NOW - 3_600_000
        );
        assert_eq!(Since::At(42).at(NOW), 42);
        assert_eq!(Since::Ago(Duration::MAX).at(NOW), 0);
        assert_eq!(Since::At(-5).at(NOW), 0);
    }
}
