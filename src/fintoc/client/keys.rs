//! The series of `Idempotency-Key`s one logical create call sends (see the client's
//! retry policy in `mod.rs`).

/// The `Idempotency-Key`s of one logical create call, attempt after attempt and call after
/// call: `base`, then `base-1`, `base-2` … Fintoc stores the first answer to a key — a 5xx,
/// a refusal, an unreadable body included — and replays it to every later request with that
/// key for 24 hours. So a key is worth sending again only while its outcome is unknown (the
/// request timed out or its connection was lost: Fintoc may have created the intent, and the
/// replay says so); once Fintoc has answered it, the key is spent and the next attempt takes
/// the next one. A caller that keeps `spent()` (per caller idempotency key) starts a later
/// call after the keys already answered, so a passing failure is never replayed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKeys {
    base: String,
    spent: u64,
}

impl IdempotencyKeys {
    /// The series of `base`, of which the first `spent` keys were answered already.
    pub fn new(base: impl Into<String>, spent: u64) -> IdempotencyKeys {
        IdempotencyKeys {
            base: base.into(),
            spent,
        }
    }

    /// The key for the next attempt.
    pub fn current(&self) -> String {
        match self.spent {
            0 => self.base.clone(),
            n => format!("{}-{n}", self.base),
        }
    }

    /// How many keys of the series Fintoc has answered.
    pub fn spent(&self) -> u64 {
        self.spent
    }

    /// Fintoc answered the current key: never send it again.
    pub(super) fn spend(&mut self) {
        self.spent += 1;
    }
}
