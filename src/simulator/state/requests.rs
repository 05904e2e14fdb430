//! What the model keeps about requests rather than resources: injected faults, the
//! `Idempotency-Key` answers, and the request log.

use super::IDEMPOTENCY_TTL_MS;
use super::{Fault, State, StoredAnswer};
use crate::clock::Millis;

impl State {
    /// Queues `count` faults for the next requests, or only for those matching `target`
    /// (method, exact path).
    pub fn inject(&mut self, target: Option<(&str, &str)>, fault: Fault, count: usize) {
        let target = target.map(|(m, p)| (m.to_owned(), p.to_owned()));
        self.faults
            .extend(std::iter::repeat_n((target, fault), count));
    }

    /// Drops every fault still queued.
    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// The oldest queued fault that applies to this request, removed from the queue.
    pub fn next_fault(&mut self, method: &str, path: &str) -> Option<Fault> {
        let index = self.faults.iter().position(|(target, _)| {
            target
                .as_ref()
                .is_none_or(|(m, p)| m.eq_ignore_ascii_case(method) && p == path)
        })?;
        self.faults.remove(index).map(|(_, fault)| fault)
    }

    /// The answer stored for `key`, unless it is 24 hours old (then it is forgotten).
    pub fn recall(&mut self, key: &str, now_ms: Millis) -> Option<StoredAnswer> {
        let stored = self.idempotency.get(key)?;
        if now_ms - stored.at_ms >= IDEMPOTENCY_TTL_MS {
            self.idempotency.remove(key);
            return None;
        }
        Some(stored.clone())
    }

    /// Stores the first answer for `key` (a concurrent first request that finished earlier
    /// keeps its place), and forgets keys past their 24 hours.
    pub fn remember(&mut self, key: String, answer: StoredAnswer) {
        let now = answer.at_ms;
        self.idempotency
            .retain(|_, a| now - a.at_ms < IDEMPOTENCY_TTL_MS);
        self.idempotency.entry(key).or_insert(answer);
    }

    pub fn record_request(&mut self, method: &str, path: &str) {
        self.requests.push((method.to_owned(), path.to_owned()));
    }

    pub fn count_requests(&self, method: &str, path: &str) -> usize {
        self.requests
            .iter()
            .filter(|(m, p)| m == method && p == path)
            .count()
    }
}
