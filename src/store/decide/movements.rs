//! Every decision about movements, made here once (CONTRACT.md §7); the backends load the
//! stored movements a decision needs and write what it returns, the fetch worker only calls
//! Fintoc.
//!
//! - **After a result** ([`follow`]): whether its movements are fetched (a fetch job goes
//!   into the result's own transaction), said to be unavailable (the Link's token is not
//!   kept), or neither (nothing new, not a success, or the feature is off).
//! - **What changed** ([`compare`]): against what is stored, by id: a new id is `added`,
//!   changed content is `modified`, the same content is nothing. Fetches and
//!   `movements_modified` webhooks go through the same rule, so each movement is pushed as
//!   added once, whichever way it arrives first.
//! - **A fetch's verdict** ([`judge_fetch`]): Fintoc said how many movements the refresh
//!   created; a listing that shows fewer new ones was read while the list moved, or too
//!   early: it is read again, and after the last attempt what was found is pushed with a
//!   `FETCH_FAILED` naming the shortfall.
//! - **Messages** ([`Changes::entries`]): at most 500 movements per log entry, the last one
//!   `complete`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::clock::Millis;
use crate::domain::{
    Detail, Movement, MovementsEntry, ResultStatus, Unavailable, UnavailableEntry,
};
use crate::fintoc::event::MovementsChange;
use crate::store::seam::{FetchJob, FetchOutcome};

/// Attempts at one fetch before its failure is pushed (`FETCH_FAILED`). Each attempt itself
/// honours Fintoc's 429 schedule (1, 2, 4, 8, 16 s).
pub const MAX_ATTEMPTS: i32 = 5;

/// How far back a fetch lists an account's movements, in days before its result: Fintoc's
/// `new_movements` counts what the refresh created, and a bank posts late (a pending check,
/// a weekend transfer), so the window reaches well behind the refresh.
pub const WINDOW_DAYS: i64 = 31;

/// What follows a result as far as its movements go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Follow {
    Nothing,
    /// Write a fetch job with the result.
    Fetch,
    /// Log this after the result.
    Unavailable(UnavailableEntry),
}

/// What follows an account result: with movements enabled (`LINK_TOKEN_KEYS` set), a
/// succeeded result with new movements is fetched if its Link's token is kept, else said to
/// be unavailable. A result of an account whose Link is unknown here has no token either.
pub fn follow(status: ResultStatus, new_movements: u32, enabled: bool, token_kept: bool) -> Follow {
    if !enabled || status != ResultStatus::Succeeded || new_movements == 0 {
        return Follow::Nothing;
    }
    if token_kept {
        return Follow::Fetch;
    }
    Follow::Unavailable(UnavailableEntry {
        reason: Unavailable::TokenNotKept,
        message: "this Link's token is not kept here, so its movements are not fetched: \
                  call RegisterLink, or RequestRefresh with keep_link_token"
            .into(),
    })
}

/// What changed in an account's movements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<Movement>,
    pub modified: Vec<Movement>,
    pub removed_ids: Vec<String>,
}

impl Changes {
    /// The movements to store (added and modified), as they now are.
    pub fn upserts(&self) -> impl Iterator<Item = &Movement> {
        self.added.iter().chain(&self.modified)
    }

    /// The log entries that push these changes: at most [`MovementsEntry::MAX_MOVEMENTS`]
    /// movements (and removed ids) each, the last `complete`. Nothing when there is no
    /// change, unless `always` (a fetch always ends with a `complete` entry: an intent
    /// stream waits for it).
    pub fn entries(self, always: bool) -> Vec<MovementsEntry> {
        enum Item {
            Added(Movement),
            Modified(Movement),
            Removed(String),
        }
        let items: Vec<Item> = (self.added.into_iter().map(Item::Added))
            .chain(self.modified.into_iter().map(Item::Modified))
            .chain(self.removed_ids.into_iter().map(Item::Removed))
            .collect();
        if items.is_empty() {
            return if always {
                vec![MovementsEntry {
                    complete: true,
                    ..MovementsEntry::default()
                }]
            } else {
                Vec::new()
            };
        }
        let mut entries = Vec::new();
        let mut current = MovementsEntry::default();
        let mut count = 0;
        for item in items {
            if count == MovementsEntry::MAX_MOVEMENTS {
                entries.push(std::mem::take(&mut current));
                count = 0;
            }
            match item {
                Item::Added(m) => current.added.push(m),
                Item::Modified(m) => current.modified.push(m),
                Item::Removed(id) => current.removed_ids.push(id),
            }
            count += 1;
        }
        current.complete = true;
        entries.push(current);
        entries
    }
}

/// Compares movements seen at Fintoc (a listing, or a `movements_modified` webhook) with
/// those stored for the account (`stored`, by id; only the ids seen need be loaded): a new
/// id is added, changed content is modified. A movement seen twice counts once (the last
/// one seen).
pub fn compare(stored: &HashMap<String, Movement>, seen: Vec<Movement>) -> Changes {
    let mut latest: Vec<Movement> = Vec::with_capacity(seen.len());
    let mut at: HashMap<String, usize> = HashMap::new();
    for movement in seen {
        match at.get(&movement.id) {
            Some(&i) => latest[i] = movement,
            None => {
                at.insert(movement.id.clone(), latest.len());
                latest.push(movement);
            }
        }
    }
    let mut changes = Changes::default();
    for movement in latest {
        match stored.get(&movement.id) {
            None => changes.added.push(movement),
            Some(old) if *old != movement => changes.modified.push(movement),
            Some(_) => {}
        }
    }
    changes
}

/// What a finished listing leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchVerdict {
    /// Write the changes; with a message when they fall short of what Fintoc reported
    /// (pushed after them as `FETCH_FAILED`).
    Write {
        changes: Changes,
        shortfall: Option<String>,
    },
    /// Read again later: the listing shows fewer new movements than Fintoc reported.
    Retry(String),
}

/// Judges the listing of an account whose owed results reported `expected` new movements
/// in all, on attempt `attempt` (1-based). A listing may show more new movements than
/// reported (the first fetch of an account finds its whole window new); fewer means the
/// list moved while it was read or Fintoc's listing lags its event.
pub fn judge_fetch(
    stored: &HashMap<String, Movement>,
    fetched: Vec<Movement>,
    expected: i64,
    attempt: i32,
    since: &str,
) -> FetchVerdict {
    let changes = compare(stored, fetched);
    let found = changes.added.len() as i64;
    if found >= expected {
        return FetchVerdict::Write {
            changes,
            shortfall: None,
        };
    }
    let why = format!(
        "Fintoc reported {expected} new movements and its listing since {since} shows {found}"
    );
    if attempt < MAX_ATTEMPTS {
        return FetchVerdict::Retry(why);
    }
    FetchVerdict::Write {
        changes,
        shortfall: Some(format!(
            "{why} after {attempt} attempts; the ones found were pushed, the rest may be \
             older than the listing window or not listed yet"
        )),
    }
}

/// What settling one account's owed fetches writes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FetchWrite {
    /// Set: the jobs wait for another attempt from then on, and nothing else is written.
    pub retry_at_ms: Option<Millis>,
    /// Drop the Link's token (Fintoc refused it).
    pub drop_token: bool,
    /// Movements to store as they now are.
    pub upserts: Vec<Movement>,
    /// Log entries to append, in order, each for the job at that index (its event, its
    /// result's intent). Every job gets at least one, the last concluding it.
    pub entries: Vec<(usize, Detail)>,
}

fn unavailable(reason: Unavailable, message: impl Into<String>) -> Detail {
    Detail::Unavailable(Arc::new(UnavailableEntry {
        reason,
        message: message.into(),
    }))
}

/// Settles one account's owed fetches (`jobs`, oldest first) with their `outcome`, against
/// the movements stored for that account (`stored`, only the ids listed need be loaded).
/// One listing serves them all; what changed is pushed with the newest (the state it shows
/// is that refresh's), the older ones each end with an empty `complete` entry first.
pub fn settle_fetch(
    jobs: &[FetchJob],
    outcome: FetchOutcome,
    stored: &HashMap<String, Movement>,
    now_ms: Millis,
) -> FetchWrite {
    let attempt = jobs.iter().map(|j| j.attempts).max().unwrap_or(0) + 1;
    let each = |detail: Detail| -> Vec<(usize, Detail)> {
        (0..jobs.len()).map(|i| (i, detail.clone())).collect()
    };
    match outcome {
        FetchOutcome::TokenGone => FetchWrite {
            entries: each(unavailable(
                Unavailable::TokenNotKept,
                "this Link's token is no longer kept here (forgotten, or not given again                  within --link-token-retention): keep it again with RegisterLink",
            )),
            ..FetchWrite::default()
        },
        FetchOutcome::TokenInvalid => FetchWrite {
            drop_token: true,
            entries: each(unavailable(
                Unavailable::LinkTokenInvalid,
                "Fintoc refused this Link's token, so it was dropped: reconnect the Link                  and keep its new token with RegisterLink",
            )),
            ..FetchWrite::default()
        },
        FetchOutcome::Failed(_) if attempt < MAX_ATTEMPTS => FetchWrite {
            retry_at_ms: Some(now_ms + retry_after_ms(attempt)),
            ..FetchWrite::default()
        },
        FetchOutcome::Failed(why) => FetchWrite {
            entries: each(unavailable(
                Unavailable::FetchFailed,
                format!("Fintoc's movements could not be read after {attempt} attempts: {why}"),
            )),
            ..FetchWrite::default()
        },
        FetchOutcome::Listed { movements, since } => {
            let expected = jobs.iter().map(|j| j.new_movements).sum();
            match judge_fetch(stored, movements, expected, attempt, &since) {
                FetchVerdict::Retry(_) => FetchWrite {
                    retry_at_ms: Some(now_ms + retry_after_ms(attempt)),
                    ..FetchWrite::default()
                },
                FetchVerdict::Write { changes, shortfall } => {
                    let newest = jobs.len().saturating_sub(1);
                    let upserts: Vec<Movement> = changes.upserts().cloned().collect();
                    let mut entries: Vec<(usize, Detail)> = (0..newest)
                        .map(|i| (i, Detail::Movements(Arc::new(complete_empty()))))
                        .collect();
                    entries.extend(
                        changes
                            .entries(true)
                            .into_iter()
                            .map(|e| (newest, Detail::Movements(Arc::new(e)))),
                    );
                    if let Some(why) = shortfall {
                        entries.push((newest, unavailable(Unavailable::FetchFailed, why)));
                    }
                    FetchWrite {
                        upserts,
                        entries,
                        ..FetchWrite::default()
                    }
                }
            }
        }
    }
}

fn complete_empty() -> MovementsEntry {
    MovementsEntry {
        complete: true,
        ..MovementsEntry::default()
    }
}

/// What a `movements_modified` / `movements_removed` event changes, against the stored
/// movements of its account (those it names): modified ones as [`compare`] rules (so one
/// never pushed before is added), removed ones by id.
pub fn on_event(stored: &HashMap<String, Movement>, change: &MovementsChange) -> Changes {
    match change {
        MovementsChange::Modified(list) => compare(stored, list.clone()),
        MovementsChange::Removed(ids) => Changes {
            removed_ids: ids.clone(),
            ..Changes::default()
        },
    }
}

/// Owed fetches grouped by account, each group in the order given: one listing serves an
/// account's group.
pub fn by_account(jobs: Vec<FetchJob>) -> Vec<Vec<FetchJob>> {
    let mut groups: Vec<Vec<FetchJob>> = Vec::new();
    for job in jobs {
        match groups
            .iter_mut()
            .find(|g| g[0].account_id == job.account_id)
        {
            Some(group) => group.push(job),
            None => groups.push(vec![job]),
        }
    }
    groups
}

/// A fetch job as its row reads (result_sequence, account_id, link_id, event_id,
/// new_movements, occurred_at_ms, attempts): the one mapping both backends' reads use.
pub type JobRow = (i64, String, String, String, i64, Millis, i32);

pub fn job_of(row: JobRow) -> FetchJob {
    let (result_sequence, account_id, link_id, event_id, new_movements, occurred_at_ms, attempts) =
        row;
    FetchJob {
        result_sequence,
        account_id,
        link_id,
        event_id,
        new_movements,
        occurred_at_ms,
        attempts,
    }
}

/// The ids an event or a listing names, to load what is stored of them.
pub fn ids_of(movements: &[Movement]) -> Vec<&str> {
    movements.iter().map(|m| m.id.as_str()).collect()
}

/// The pause before attempt `attempt + 1` of a fetch: 2, 4, 8, 16 s, at most a minute.
pub fn retry_after_ms(attempt: i32) -> i64 {
    (1_000i64 << attempt.clamp(1, 6)).min(60_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(sequence: i64, new_movements: i64, attempts: i32) -> FetchJob {
        FetchJob {
            result_sequence: sequence,
            account_id: "acc".into(),
            link_id: "link".into(),
            event_id: format!("evt_{sequence}"),
            new_movements,
            occurred_at_ms: 0,
            attempts,
        }
    }

    #[test]
    fn one_listing_serves_several_owed_results_and_each_ends_complete() {
        let jobs = [job(1, 1, 0), job(2, 1, 0)];
        let listed = FetchOutcome::Listed {
            movements: vec![mov("a", 1), mov("b", 2)],
            since: "2026-11-01".into(),
        };
        let write = settle_fetch(&jobs, listed, &HashMap::new(), 0);
        assert_eq!(write.upserts.len(), 2);
        let concluding: Vec<usize> = write
            .entries
            .iter()
            .filter(|(_, d)| matches!(d, Detail::Movements(e) if e.complete))
            .map(|(i, _)| *i)
            .collect();
        assert_eq!(concluding, vec![0, 1]);
        assert!(matches!(&write.entries[1].1, Detail::Movements(e) if e.added.len() == 2));
    }

    #[test]
    fn failures_retry_then_conclude_each_job_and_a_refused_token_is_dropped() {
        let retry = settle_fetch(
            &[job(1, 1, 0)],
            FetchOutcome::Failed("500".into()),
            &HashMap::new(),
            10,
        );
        assert_eq!(retry.retry_at_ms, Some(10 + retry_after_ms(1)));
        assert!(retry.entries.is_empty());
        let last = settle_fetch(
            &[job(1, 1, MAX_ATTEMPTS - 1), job(2, 1, 0)],
            FetchOutcome::Failed("500".into()),
            &HashMap::new(),
            10,
        );
        assert_eq!(last.retry_at_ms, None);
        assert_eq!(last.entries.len(), 2);
        assert!(last.entries.iter().all(
            |(_, d)| matches!(d, Detail::Unavailable(u) if u.reason == Unavailable::FetchFailed)
        ));
        let refused = settle_fetch(
            &[job(1, 1, 0)],
            FetchOutcome::TokenInvalid,
            &HashMap::new(),
            0,
        );
        assert!(refused.drop_token);
        assert!(
            matches!(&refused.entries[0].1, Detail::Unavailable(u) if u.reason == Unavailable::LinkTokenInvalid)
        );
    }

    fn mov(id: &str, amount: i64) -> Movement {
        Movement {
            id: id.into(),
            amount,
            ..Movement::default()
        }
    }

    #[test]
    fn only_succeeded_results_with_new_movements_are_followed_and_only_when_enabled() {
        use ResultStatus::*;
        assert_eq!(follow(Succeeded, 3, true, true), Follow::Fetch);
        assert!(matches!(
            follow(Succeeded, 3, true, false),
            Follow::Unavailable(UnavailableEntry {
                reason: Unavailable::TokenNotKept,
                ..
            })
        ));
        assert_eq!(follow(Succeeded, 0, true, true), Follow::Nothing);
        assert_eq!(follow(Failed, 3, true, true), Follow::Nothing);
        assert_eq!(follow(Succeeded, 3, false, true), Follow::Nothing);
    }

    #[test]
    fn new_ids_are_added_changed_ones_modified_the_same_ones_nothing() {
        let stored: HashMap<_, _> = [("a", 1), ("b", 2)]
            .map(|(id, n)| (id.to_owned(), mov(id, n)))
            .into();
        let changes = compare(
            &stored,
            vec![mov("a", 1), mov("b", 3), mov("c", 4), mov("c", 5)],
        );
        assert_eq!(
            changes.added,
            vec![mov("c", 5)],
            "seen twice: the last one counts"
        );
        assert_eq!(changes.modified, vec![mov("b", 3)]);
    }

    #[test]
    fn entries_hold_at_most_500_and_only_the_last_is_complete() {
        let changes = Changes {
            added: (0..700).map(|i| mov(&format!("m{i}"), i)).collect(),
            modified: (0..200).map(|i| mov(&format!("x{i}"), i)).collect(),
            removed_ids: vec!["gone".into()],
        };
        let entries = changes.entries(false);
        let sizes: Vec<usize> = entries
            .iter()
            .map(|e| e.added.len() + e.modified.len() + e.removed_ids.len())
            .collect();
        assert_eq!(sizes, vec![500, 401]);
        assert_eq!(
            entries.iter().map(|e| e.complete).collect::<Vec<_>>(),
            vec![false, true]
        );
        assert!(Changes::default().entries(false).is_empty());
        assert_eq!(Changes::default().entries(true).len(), 1);
        assert!(Changes::default().entries(true)[0].complete);
    }

    #[test]
    fn a_short_listing_is_read_again_then_pushed_with_its_shortfall() {
        let stored = HashMap::new();
        let two = || vec![mov("a", 1), mov("b", 2)];
        assert!(matches!(
            judge_fetch(&stored, two(), 2, 1, "2026-11-01"),
            FetchVerdict::Write {
                shortfall: None,
                ..
            }
        ));
        assert!(matches!(
            judge_fetch(&stored, two(), 3, 1, "2026-11-01"),
            FetchVerdict::Retry(_)
        ));
        match judge_fetch(&stored, two(), 3, MAX_ATTEMPTS, "2026-11-01") {
            FetchVerdict::Write {
                changes,
                shortfall: Some(why),
            } => {
                assert_eq!(changes.added.len(), 2);
                assert!(
                    why.contains("reported 3") && why.contains("shows 2"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
