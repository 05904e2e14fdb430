//! The result log's vocabulary: one entry ([`ResultRow`]) and whose entries a watcher follows
//! ([`Target`]). The store writes and reads these, the hub fans them out, gRPC turns them into
//! wire messages; none of those needs to know the others.

use super::status::{ResultStatus, UnknownValue};
use crate::clock::Millis;

/// One entry of the result log: an account's result, with the global sequence that orders
/// it. Shared by reference (`Arc`) with every watcher it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRow {
    pub sequence: i64,
    pub account_id: String,
    /// Empty when the account's Link was never resolved here.
    pub link_id: String,
    /// Empty for results of refreshes this service did not request.
    pub refresh_intent_id: String,
    /// A [`ResultStatus`] in its stored spelling.
    pub status: String,
    pub new_movements: i64,
    pub public_error: String,
    /// The Fintoc event that carried it; empty for a TIMED_OUT this service synthesized.
    pub event_id: String,
    /// When Fintoc produced it (the event's time), or when it was synthesized.
    pub occurred_at_ms: Millis,
    pub committed_at_ms: Millis,
    /// True on the result that gave its intent a final status.
    pub completes_intent: bool,
}

impl ResultRow {
    pub fn status(&self) -> Result<ResultStatus, UnknownValue> {
        ResultStatus::parse(&self.status)
    }

    /// A succeeded result of `account_id` with nothing else set: the one builder tests use.
    #[doc(hidden)]
    pub fn example(sequence: i64, account_id: &str) -> ResultRow {
        ResultRow {
            sequence,
            account_id: account_id.to_owned(),
            link_id: String::new(),
            refresh_intent_id: String::new(),
            status: ResultStatus::Succeeded.as_str().to_owned(),
            new_movements: 0,
            public_error: String::new(),
            event_id: format!("evt_{sequence}"),
            occurred_at_ms: 0,
            committed_at_ms: 0,
            completes_intent: false,
        }
    }

    /// The same result attributed to a Link and an intent (tests).
    #[doc(hidden)]
    pub fn of(mut self, link_id: &str, refresh_intent_id: &str) -> ResultRow {
        self.link_id = link_id.to_owned();
        self.refresh_intent_id = refresh_intent_id.to_owned();
        self
    }
}

/// Whose results a watcher follows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Intent(String),
    Link(String),
    Account(String),
}

impl Target {
    /// Whether a logged result belongs to this target.
    pub fn matches(&self, row: &ResultRow) -> bool {
        match self {
            Target::Intent(id) => row.refresh_intent_id == *id,
            Target::Link(id) => row.link_id == *id,
            Target::Account(id) => row.account_id == *id,
        }
    }

    /// The id the watcher asked for.
    pub fn id(&self) -> &str {
        match self {
            Target::Intent(id) | Target::Link(id) | Target::Account(id) => id,
        }
    }
}
