//! Every decision the store makes about results and intents, made here once, without IO.
//! Both backends only load the facts a decision needs, call it, and write what it returns;
//! no backend applies the correlation or completion rules itself.
//!
//! - **An incoming result** ([`Context::plan`]): which pending intent it answers (the rules
//!   of `domain::correlate`), or whether it is held (a create for its Link is in flight) or
//!   logged unsolicited; whether it completes its intent, with which status and when; whether
//!   it starts its Link's rejected-credentials hold. A backend loads the [`Context`] a batch
//!   touches and asks about each result in arrival order; the context is updated as it goes,
//!   so two results of one batch never answer the same intent's account twice.
//! - **A registration** ([`claims`]): which results logged before the intent was known are
//!   its answers (an intent adopted from Fintoc may have had results arrive first), and
//!   whether they complete it.
//! - **A timeout** ([`time_out`]): the TIMED_OUT results an overdue intent gets, and the one
//!   that completes it.
//! - **A completion** ([`Completion`]): the final status and when it happened — when Fintoc
//!   produced the intent's last result (its latest `occurred_at`), not when that reached us,
//!   so a late result starts no longer cooldown than Fintoc's own; never later than now,
//!   should an event claim a time ahead of our clock.
//! - **The log's time** ([`log_time`], [`seek`]): how results are stamped, and where a feed
//!   seeking to a time starts (`seek.rs`).
//! - **Movements** (`movements.rs`): what follows a result (a fetch, or "unavailable"), what
//!   changed against what is stored, a fetch's verdict, and how changes become entries.

use std::collections::{HashMap, HashSet};

use crate::clock::Millis;
use crate::domain::correlate::{CLOCK_SLACK_MS, Candidate, Correlation, correlate};
use crate::domain::status::intent_status;
use crate::domain::{IntentStatus, IntentView, ResultStatus};
use crate::fintoc::event::AccountEvent;
use crate::store::StoreResult;

pub mod movements;
mod seek;
#[cfg(test)]
mod tests;

pub use seek::{LogTimes, Seek, log_time, seek};

/// A pending intent as far as the decisions are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub created_at_ms: Millis,
    /// Every expected account and its result's status so far (`None` while missing).
    pub expected: Vec<(String, Option<ResultStatus>)>,
    /// The latest time Fintoc produced one of its results so far (`occurred_at`).
    pub latest_result_ms: Option<Millis>,
}

impl Progress {
    /// The progress of an intent as read back (its answered accounts' results).
    pub fn of(intent: &IntentView) -> StoreResult<Progress> {
        let mut expected = Vec::with_capacity(intent.accounts.len());
        let mut latest_result_ms = None;
        for account in &intent.accounts {
            let status = match &account.result {
                Some(row) => {
                    latest_result_ms = latest_result_ms.max(Some(row.occurred_at_ms));
                    Some(row.status()?)
                }
                None => None,
            };
            expected.push((account.account_id.clone(), status));
        }
        Ok(Progress {
            created_at_ms: intent.created_at_ms,
            expected,
            latest_result_ms,
        })
    }
}

/// The state results are decided against.
#[derive(Debug, Clone)]
pub struct Context {
    /// When the decisions are written (the commit's time): no completion is dated later.
    pub now_ms: Millis,
    /// Which Link each known account belongs to.
    pub link_of: HashMap<String, String>,
    /// Links with a create call in flight.
    pub creating: HashSet<String>,
    /// Pending intents that wait for at least one of the results' accounts, by id.
    pub pending: HashMap<String, Progress>,
    /// Whether movements are fetched at all (`LINK_TOKEN_KEYS` is set).
    pub movements: bool,
    /// Links (of the results' accounts) whose token is kept.
    pub kept: HashSet<String>,
}

/// What to do with one account result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A create call for its Link is in flight: keep the event until the intent is known.
    Hold,
    /// Append it to the log.
    Log(Entry),
}

/// A result to append, attributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Empty when the account's Link was never resolved here.
    pub link_id: String,
    /// Empty when nobody here asked for it.
    pub intent_id: String,
    pub occurred_at_ms: Millis,
    /// Set when this result completes its intent.
    pub completes: Option<Completion>,
    /// A rejected result starts its Link's hold (counted from its arrival).
    pub rejects_link: bool,
    /// What follows it for its movements (`movements::follow`).
    pub follow: movements::Follow,
}

/// An intent reaching its final status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub status: IntentStatus,
    /// When Fintoc completed it: the latest `occurred_at` of its results, never after now.
    pub at_ms: Millis,
}

impl Completion {
    /// The completion of an intent whose expected accounts stand at `statuses`, the latest of
    /// its results produced at `latest_result_ms`; `None` while it is still pending.
    fn of<I>(statuses: I, latest_result_ms: Millis, now_ms: Millis) -> Option<Completion>
    where
        I: IntoIterator<Item = Option<ResultStatus>>,
    {
        let status = intent_status(statuses);
        status.is_final().then(|| Completion {
            status,
            at_ms: latest_result_ms.min(now_ms),
        })
    }
}

impl Context {
    /// An empty context for decisions written at `now_ms`, movements off.
    pub fn new(now_ms: Millis) -> Context {
        Context {
            now_ms,
            link_of: HashMap::new(),
            creating: HashSet::new(),
            pending: HashMap::new(),
            movements: false,
            kept: HashSet::new(),
        }
    }

    /// Decides one result that arrived at `received_at_ms`, and records its effect.
    pub fn plan(&mut self, event: &AccountEvent, received_at_ms: Millis) -> Plan {
        let link_id = self.link_of.get(&event.account_id).cloned();
        let occurred_at_ms = event.occurred_at_ms.unwrap_or(received_at_ms);
        let candidates: Vec<Candidate<'_>> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                p.expected
                    .iter()
                    .any(|(account, status)| *account == event.account_id && status.is_none())
            })
            .map(|(id, p)| Candidate {
                intent_id: id,
                created_at_ms: p.created_at_ms,
            })
            .collect();
        let creating = link_id.as_ref().is_some_and(|l| self.creating.contains(l));
        let intent_id = match correlate(occurred_at_ms, &candidates, creating) {
            Correlation::Hold => return Plan::Hold,
            Correlation::Matched(id) => id.to_owned(),
            Correlation::Unsolicited => String::new(),
        };
        let completes = if intent_id.is_empty() {
            None
        } else {
            self.answer(&intent_id, &event.account_id, event.status, occurred_at_ms)
        };
        let link_id = link_id.unwrap_or_default();
        Plan::Log(Entry {
            follow: movements::follow(
                event.status,
                event.new_movements,
                self.movements,
                self.kept.contains(&link_id),
            ),
            rejects_link: event.status == ResultStatus::Rejected && !link_id.is_empty(),
            link_id,
            intent_id,
            occurred_at_ms,
            completes,
        })
    }

    /// Records `account`'s result (produced at `occurred_at_ms`) for a pending intent; its
    /// completion if that completes it (the intent then leaves the context: nothing else
    /// can answer it).
    fn answer(
        &mut self,
        intent_id: &str,
        account: &str,
        status: ResultStatus,
        occurred_at_ms: Millis,
    ) -> Option<Completion> {
        let progress = self.pending.get_mut(intent_id)?;
        if let Some(slot) = progress
            .expected
            .iter_mut()
            .find(|(a, s)| a == account && s.is_none())
        {
            slot.1 = Some(status);
        }
        let latest = progress
            .latest_result_ms
            .map_or(occurred_at_ms, |l| l.max(occurred_at_ms));
        progress.latest_result_ms = Some(latest);
        let done = Completion::of(
            progress.expected.iter().map(|(_, s)| *s),
            latest,
            self.now_ms,
        );
        if done.is_some() {
            self.pending.remove(intent_id);
        }
        done
    }
}

/// Where a registering intent looks for its earlier answers: results produced from a little
/// before it was created (both times are Fintoc's; see `domain::correlate::CLOCK_SLACK_MS`).
pub fn claim_since(created_at_ms: Millis) -> Millis {
    created_at_ms - CLOCK_SLACK_MS
}

/// The first unattributed result of an expected account produced since [`claim_since`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unclaimed {
    pub account_id: String,
    pub sequence: i64,
    pub status: ResultStatus,
    pub occurred_at_ms: Millis,
}

/// What a newly registered intent takes over from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// (account, sequence) of each result that becomes the intent's answer.
    pub claimed: Vec<(String, i64)>,
    /// When the claims complete the intent: its completion, and the newest claimed
    /// result's sequence, which is marked as completing it (its watchers then see every
    /// other one first).
    pub completes: Option<(Completion, i64)>,
}

/// Decides which earlier results a new intent expecting `expected` claims: per expected
/// account, the first unattributed result found for it (`found`, at most one per account,
/// any order), and whether they complete it.
pub fn claims(expected: &[String], found: Vec<Unclaimed>, now_ms: Millis) -> Claims {
    let status_of = |account: &String| {
        found
            .iter()
            .find(|f| &f.account_id == account)
            .map(|f| f.status)
    };
    let statuses: Vec<Option<ResultStatus>> = expected.iter().map(status_of).collect();
    let newest = found.iter().max_by_key(|f| f.sequence);
    let completes = newest.and_then(|newest| {
        let latest = found.iter().map(|f| f.occurred_at_ms).max()?;
        Completion::of(statuses, latest, now_ms).map(|c| (c, newest.sequence))
    });
    let claimed = found
        .into_iter()
        .filter(|f| expected.contains(&f.account_id))
        .map(|f| (f.account_id, f.sequence))
        .collect();
    Claims { claimed, completes }
}

/// A TIMED_OUT result to append for an overdue intent's missing account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    pub account_id: String,
    /// Set on the last one: it completes the intent.
    pub completes: Option<Completion>,
}

/// The TIMED_OUT results an overdue intent gets, one per account still missing its result,
/// produced now; the last completes it. `None` when it is no longer pending.
pub fn time_out(intent: &IntentView, now_ms: Millis) -> StoreResult<Option<Vec<TimedOut>>> {
    if intent.status.is_final() {
        return Ok(None);
    }
    let mut ctx = Context::new(now_ms);
    ctx.pending.insert(intent.id.clone(), Progress::of(intent)?);
    let missing = intent.accounts.iter().filter(|a| a.result.is_none());
    let results = missing
        .map(|account| TimedOut {
            completes: ctx.answer(
                &intent.id,
                &account.account_id,
                ResultStatus::TimedOut,
                now_ms,
            ),
            account_id: account.account_id.clone(),
        })
        .collect();
    Ok(Some(results))
}
