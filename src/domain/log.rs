//! The result log's vocabulary: one entry ([`ResultRow`]) and whose entries a watcher follows
//! ([`Target`]). The store writes and reads these, the hub fans them out, gRPC turns them into
//! wire messages; none of those needs to know the others.

use std::collections::HashSet;
use std::sync::Arc;

use super::movement::{MovementsEntry, Unavailable};
use super::status::{ResultStatus, UnknownValue};
use crate::clock::Millis;

/// What a log entry is besides its place in the log: an account's result (the first kind),
/// or what became of the movements behind one Fintoc event (CONTRACT.md §7).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Detail {
    /// An account's refresh result (`status` is a [`ResultStatus`]).
    #[default]
    Result,
    /// Movements added, modified or removed for the account (`status` is
    /// [`Detail::MOVEMENTS`]).
    Movements(Arc<MovementsEntry>),
    /// The movements of the account's result could not be pushed (`status` is
    /// [`Detail::UNAVAILABLE`]).
    Unavailable(Arc<UnavailableEntry>),
}

/// A `movements_unavailable` entry's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnavailableEntry {
    pub reason: Unavailable,
    /// For a person: what happened and what to do.
    pub message: String,
}

impl Detail {
    /// The stored `status` of a movements entry.
    pub const MOVEMENTS: &'static str = "movements";
    /// The stored `status` of a movements-unavailable entry.
    pub const UNAVAILABLE: &'static str = "movements_unavailable";

    /// The stored `status` of an entry of this kind; `None` for an account result (whose
    /// status is its own).
    pub fn status(&self) -> Option<&'static str> {
        match self {
            Detail::Result => None,
            Detail::Movements(_) => Some(Detail::MOVEMENTS),
            Detail::Unavailable(_) => Some(Detail::UNAVAILABLE),
        }
    }

    /// The stored `detail` text: JSON of the payload, empty for an account result.
    pub fn to_stored(&self) -> String {
        match self {
            Detail::Result => String::new(),
            Detail::Movements(entry) => {
                serde_json::to_string(&**entry).expect("an entry serializes")
            }
            Detail::Unavailable(u) => serde_json::json!({
                "reason": u.reason.as_str(),
                "message": u.message,
            })
            .to_string(),
        }
    }

    /// Reads a stored entry's payload back from its `status` and `detail`.
    pub fn from_stored(status: &str, detail: &str) -> Result<Detail, String> {
        match status {
            Detail::MOVEMENTS => serde_json::from_str::<MovementsEntry>(detail)
                .map(|e| Detail::Movements(Arc::new(e)))
                .map_err(|e| format!("a stored movements entry does not read back: {e}")),
            Detail::UNAVAILABLE => {
                let v: serde_json::Value = serde_json::from_str(detail)
                    .map_err(|e| format!("a stored unavailable entry does not read back: {e}"))?;
                let reason = v["reason"]
                    .as_str()
                    .and_then(Unavailable::parse)
                    .ok_or("a stored unavailable entry has no known reason")?;
                Ok(Detail::Unavailable(Arc::new(UnavailableEntry {
                    reason,
                    message: v["message"].as_str().unwrap_or_default().to_owned(),
                })))
            }
            _ => Ok(Detail::Result),
        }
    }
}

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
    /// What kind of entry this is (an account result unless it says otherwise).
    pub detail: Detail,
    /// On a result: its movements will be fetched (a fetch job was written with it), so a
    /// `movements` entry ending `complete`, or a `movements_unavailable`, follows.
    pub fetches_movements: bool,
    /// The W3C traceparent of the webhook span that brought it (empty when traces are off,
    /// or it was made here): a push of it on any replica links back to that span.
    pub trace_context: String,
}

impl ResultRow {
    pub fn status(&self) -> Result<ResultStatus, UnknownValue> {
        ResultStatus::parse(&self.status)
    }

    /// Whether this is an account result (not a movements entry).
    pub fn is_result(&self) -> bool {
        self.detail == Detail::Result
    }

    /// Whether this entry ends what its event's movements owed: the last `movements` entry
    /// (`complete`) or a `movements_unavailable`.
    pub fn concludes_movements(&self) -> bool {
        match &self.detail {
            Detail::Result => false,
            Detail::Movements(entry) => entry.complete,
            Detail::Unavailable(_) => true,
        }
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
            detail: Detail::Result,
            fetches_movements: false,
            trace_context: String::new(),
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Intent(String),
    Link(String),
    Account(String),
    /// Several Links and accounts as one feed.
    Selection(Arc<Selection>),
    /// Every result.
    All,
}

impl Target {
    /// Whether a logged result belongs to this target.
    pub fn matches(&self, row: &ResultRow) -> bool {
        match self {
            Target::Intent(id) => row.refresh_intent_id == *id,
            Target::Link(id) => row.link_id == *id,
            Target::Account(id) => row.account_id == *id,
            Target::Selection(selection) => selection.matches(row),
            Target::All => true,
        }
    }
}

/// The Links and accounts a selection feed follows: a result is in it when its Link or its
/// account is listed (once, even when both are). The ids are shared (`Arc<str>`) with the
/// hub's index, so a stream of 1,000 ids holds each id once.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub links: HashSet<Arc<str>>,
    pub accounts: HashSet<Arc<str>>,
}

impl Selection {
    /// The most ids one selection may list (Links and accounts together).
    pub const MAX_IDS: usize = 1_000;

    /// A selection of these ids; repeats count once.
    pub fn new<L, A>(links: L, accounts: A) -> Selection
    where
        L: IntoIterator,
        L::Item: AsRef<str>,
        A: IntoIterator,
        A::Item: AsRef<str>,
    {
        Selection {
            links: links.into_iter().map(|id| Arc::from(id.as_ref())).collect(),
            accounts: accounts
                .into_iter()
                .map(|id| Arc::from(id.as_ref()))
                .collect(),
        }
    }

    /// Ids listed, Links and accounts together.
    pub fn len(&self) -> usize {
        self.links.len() + self.accounts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn matches(&self, row: &ResultRow) -> bool {
        self.links.contains(row.link_id.as_str()) || self.accounts.contains(row.account_id.as_str())
    }

    /// The Link ids, for a store query.
    pub fn link_ids(&self) -> Vec<&str> {
        self.links.iter().map(|id| &**id).collect()
    }

    /// The account ids, for a store query.
    pub fn account_ids(&self) -> Vec<&str> {
        self.accounts.iter().map(|id| &**id).collect()
    }
}
