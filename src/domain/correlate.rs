//! Which intent an `account.refresh_intent.*` event answers.
//!
//! Fintoc's events carry the account id but not the refresh intent id, may arrive twice, late,
//! out of order, before our create call has returned, or for refreshes nobody here asked for
//! (Fintoc's scheduled ones). An event answers the pending intent that expects its account,
//! has no result for it yet, and was created before the event (both times are Fintoc's
//! clock; a little slack absorbs rounding). Failing that, if a create for the account's Link
//! is in flight the event is held until the intent is known; otherwise it is unsolicited.

use crate::clock::Millis;

/// Slack on the "intent created before the event" rule: both times come from Fintoc, but
/// one may be rounded to the second while the other carries milliseconds.
pub const CLOCK_SLACK_MS: Millis = 2_000;

/// A pending intent that still waits for a result of the event's account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub intent_id: &'a str,
    pub created_at_ms: Millis,
}

/// What to do with one account event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Correlation<'a> {
    /// The event is this intent's result for the account.
    Matched(&'a str),
    /// A create for the account's Link is in flight: keep the event until it returns.
    Hold,
    /// Nobody here asked for it: log it with an empty intent id.
    Unsolicited,
}

/// Decides what an event for one account, produced at `event_at_ms`, belongs to.
pub fn correlate<'a>(
    event_at_ms: Millis,
    candidates: &[Candidate<'a>],
    create_in_flight: bool,
) -> Correlation<'a> {
    // Of the intents created before the event, the most recent one is the refresh that
    // produced it; an older one would already have been answered or timed out.
    let best = candidates
        .iter()
        .filter(|c| c.created_at_ms - CLOCK_SLACK_MS <= event_at_ms)
        .max_by_key(|c| c.created_at_ms);
    match best {
        Some(c) => Correlation::Matched(c.intent_id),
        None if create_in_flight => Correlation::Hold,
        None => Correlation::Unsolicited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(id: &'static str, at: Millis) -> Candidate<'static> {
        Candidate {
            intent_id: id,
            created_at_ms: at,
        }
    }

    #[test]
    fn correlation_table() {
        let t = 1_700_000_000_000;
        #[allow(clippy::type_complexity)]
        let table: &[(
            &str,
            Millis,
            Vec<Candidate<'static>>,
            bool,
            Correlation<'static>,
        )] = &[
            (
                "no intent, nothing in flight",
                t,
                vec![],
                false,
                Correlation::Unsolicited,
            ),
            (
                "no intent, create in flight",
                t,
                vec![],
                true,
                Correlation::Hold,
            ),
            (
                "event after intent",
                t + 60_000,
                vec![cand("ri_a", t)],
                false,
                Correlation::Matched("ri_a"),
            ),
            (
                "event at the same instant",
                t,
                vec![cand("ri_a", t)],
                false,
                Correlation::Matched("ri_a"),
            ),
            (
                "event within the slack",
                t - 1_500,
                vec![cand("ri_a", t)],
                false,
                Correlation::Matched("ri_a"),
            ),
            (
                "event well before the intent",
                t - 60_000,
                vec![cand("ri_a", t)],
                false,
                Correlation::Unsolicited,
            ),
            (
                "old event while another create is in flight",
                t - 60_000,
                vec![cand("ri_a", t)],
                true,
                Correlation::Hold,
            ),
            (
                "the most recent eligible intent wins",
                t + 10_000,
                vec![cand("ri_old", t - 600_000), cand("ri_new", t)],
                false,
                Correlation::Matched("ri_new"),
            ),
            (
                "an intent created after the event is not eligible",
                t + 10_000,
                vec![cand("ri_old", t), cand("ri_future", t + 600_000)],
                false,
                Correlation::Matched("ri_old"),
            ),
        ];
        for (name, at, candidates, in_flight, want) in table {
            assert_eq!(&correlate(*at, candidates, *in_flight), want, "{name}");
        }
    }
}
