//! What a batch of account results does to the log and to the intents waiting for them,
//! decided without IO. A backend loads the [`Context`] the batch touches (which Link each
//! account belongs to, which pending intents still wait for each account and where they
//! stand, which Links have a create call in flight), asks [`Context::plan`] about each event
//! in arrival order, and writes what comes back. The context is updated as it goes, so two
//! results of one batch never answer the same intent's account twice, and the result that
//! completes an intent is known before anything is written.

use std::collections::{HashMap, HashSet};

use crate::clock::Millis;
use crate::domain::correlate::{Candidate, Correlation, correlate};
use crate::domain::status::intent_status;
use crate::domain::{IntentStatus, ResultStatus};
use crate::fintoc::event::AccountEvent;

/// A pending intent as far as one batch is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub created_at_ms: Millis,
    /// Every expected account and its result's status so far (`None` while missing).
    pub expected: Vec<(String, Option<ResultStatus>)>,
    /// The latest time Fintoc produced one of its results so far (`occurred_at`).
    pub latest_result_ms: Option<Millis>,
}

/// The state a batch of results is decided against.
#[derive(Debug, Default, Clone)]
pub struct Context {
    /// Which Link each known account belongs to.
    pub link_of: HashMap<String, String>,
    /// Links with a create call in flight.
    pub creating: HashSet<String>,
    /// Pending intents that wait for at least one of the batch's accounts, by id.
    pub pending: HashMap<String, Progress>,
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
    /// The intent's final status when this result completes it, and when Fintoc completed
    /// it (the latest time of its results).
    pub completes: Option<(IntentStatus, Millis)>,
    /// A rejected result starts its Link's hold (counted from its arrival).
    pub rejects_link: bool,
}

impl Context {
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
            rejects_link: event.status == ResultStatus::Rejected && !link_id.is_empty(),
            link_id,
            intent_id,
            occurred_at_ms,
            completes,
        })
    }

    /// Records `account`'s result (produced at `occurred_at_ms`) for a pending intent; its
    /// final status and completion time if that completes it (the intent then leaves the
    /// context: nothing else can answer it).
    pub fn answer(
        &mut self,
        intent_id: &str,
        account: &str,
        status: ResultStatus,
        occurred_at_ms: Millis,
    ) -> Option<(IntentStatus, Millis)> {
        let progress = self.pending.get_mut(intent_id)?;
        if let Some(slot) = progress
            .expected
            .iter_mut()
            .find(|(a, s)| a == account && s.is_none())
        {
            slot.1 = Some(status);
        }
        let latest = progress.latest_result_ms.max(Some(occurred_at_ms));
        progress.latest_result_ms = latest;
        let status = intent_status(progress.expected.iter().map(|(_, s)| *s));
        if status.is_final() {
            self.pending.remove(intent_id);
            Some((status, occurred_at_ms.max(latest.unwrap_or(occurred_at_ms))))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(account: &str, status: ResultStatus, at: Millis) -> AccountEvent {
        AccountEvent {
            event_id: format!("evt_{account}_{at}"),
            status,
            account_id: account.into(),
            new_movements: 0,
            public_error: String::new(),
            occurred_at_ms: Some(at),
            refresh_type: None,
        }
    }

    fn context() -> Context {
        let mut ctx = Context::default();
        ctx.link_of.insert("acc_1".into(), "link_a".into());
        ctx.link_of.insert("acc_2".into(), "link_a".into());
        ctx.pending.insert(
            "ri_1".into(),
            Progress {
                created_at_ms: 1_000,
                expected: vec![("acc_1".into(), None), ("acc_2".into(), None)],
                latest_result_ms: None,
            },
        );
        ctx
    }

    fn entry(plan: Plan) -> Entry {
        match plan {
            Plan::Log(entry) => entry,
            Plan::Hold => panic!("held"),
        }
    }

    #[test]
    fn results_of_one_batch_complete_their_intent_once() {
        let mut ctx = context();
        let first = entry(ctx.plan(&event("acc_1", ResultStatus::Succeeded, 5_000), 9_000));
        assert_eq!((first.intent_id.as_str(), first.completes), ("ri_1", None));
        // The same account again (a scheduled refresh): ri_1 no longer waits for it.
        let again = entry(ctx.plan(&event("acc_1", ResultStatus::Succeeded, 6_000), 9_000));
        assert_eq!(again.intent_id, "");
        let last = entry(ctx.plan(&event("acc_2", ResultStatus::Failed, 7_000), 9_000));
        assert_eq!(last.intent_id, "ri_1");
        assert_eq!(last.completes, Some((IntentStatus::Failed, 7_000)));
        assert!(ctx.pending.is_empty());
    }

    #[test]
    fn held_while_creating_unsolicited_without_link_and_rejection_starts_the_hold() {
        let mut ctx = context();
        ctx.pending.clear();
        ctx.creating.insert("link_a".into());
        assert_eq!(
            ctx.plan(&event("acc_1", ResultStatus::Succeeded, 5_000), 9_000),
            Plan::Hold
        );
        let stranger = entry(ctx.plan(&event("acc_9", ResultStatus::Rejected, 5_000), 9_000));
        assert_eq!(
            (stranger.link_id.as_str(), stranger.rejects_link),
            ("", false)
        );
        ctx.creating.clear();
        let rejected = entry(ctx.plan(&event("acc_2", ResultStatus::Rejected, 5_000), 9_000));
        assert_eq!(rejected.link_id, "link_a");
        assert!(rejected.rejects_link);
        assert_eq!(rejected.intent_id, "");
    }

    #[test]
    fn an_event_without_a_time_is_dated_by_its_arrival() {
        let mut ctx = context();
        let mut late = event("acc_1", ResultStatus::Succeeded, 0);
        late.occurred_at_ms = None;
        let logged = entry(ctx.plan(&late, 9_000));
        assert_eq!(
            (logged.occurred_at_ms, logged.intent_id.as_str()),
            (9_000, "ri_1")
        );
    }
}
