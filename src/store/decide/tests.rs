//! Table tests of the decision core: one table per rule, each row a case a backend meets.

use super::*;
use crate::domain::{AccountState, RefreshType, ResultRow};

use IntentStatus as I;
use ResultStatus::{Failed, Rejected, Succeeded, TimedOut};

const NOW: Millis = 100_000;

fn event(account: &str, status: ResultStatus, at: Option<Millis>) -> AccountEvent {
    AccountEvent {
        event_id: format!("evt_{account}_{at:?}"),
        status,
        account_id: account.into(),
        new_movements: 0,
        public_error: String::new(),
        occurred_at_ms: at,
        refresh_type: None,
    }
}

/// acc_1 and acc_2 of link_a; ri_1 (created at 10 000) waits for both.
fn context() -> Context {
    let mut ctx = Context::new(NOW);
    ctx.link_of.insert("acc_1".into(), "link_a".into());
    ctx.link_of.insert("acc_2".into(), "link_a".into());
    ctx.pending.insert(
        "ri_1".into(),
        Progress {
            created_at_ms: 10_000,
            expected: vec![("acc_1".into(), None), ("acc_2".into(), None)],
            latest_result_ms: None,
        },
    );
    ctx
}

fn logged(plan: Plan) -> Entry {
    match plan {
        Plan::Log(entry) => entry,
        Plan::Hold => panic!("held"),
    }
}

fn done(status: IntentStatus, at_ms: Millis) -> Option<Completion> {
    Some(Completion { status, at_ms })
}

/// Correlation: which intent a result answers, by when it was produced.
#[test]
fn a_result_answers_the_intent_created_before_it() {
    let cases: &[(&str, Option<Millis>, &str)] = &[
        // (what, occurred at, the intent it answers)
        ("produced after the intent", Some(12_000), "ri_1"),
        ("within the clock slack before it", Some(8_500), "ri_1"),
        ("well before it: another refresh", Some(7_000), ""),
        (
            "no time: dated by its arrival (9 000, within the slack)",
            None,
            "ri_1",
        ),
    ];
    for (what, at, intent) in cases {
        let mut ctx = context();
        let entry = logged(ctx.plan(&event("acc_1", Succeeded, *at), 9_000));
        assert_eq!(entry.intent_id, *intent, "{what}");
        assert_eq!(entry.occurred_at_ms, at.unwrap_or(9_000), "{what}");
    }
}

/// Of several intents waiting for one account, the newest created before the result.
#[test]
fn the_newest_eligible_intent_wins() {
    let mut ctx = context();
    ctx.pending.insert(
        "ri_2".into(),
        Progress {
            created_at_ms: 20_000,
            expected: vec![("acc_1".into(), None)],
            latest_result_ms: None,
        },
    );
    let cases = [(15_000, "ri_1"), (25_000, "ri_2")];
    for (at, intent) in cases {
        let entry = logged(ctx.clone().plan(&event("acc_1", Succeeded, Some(at)), at));
        assert_eq!(entry.intent_id, intent, "a result at {at}");
    }
}

/// Hold, unsolicited, and the rejected-credentials hold, by what is known of the Link.
#[test]
fn held_while_creating_unsolicited_otherwise_and_a_rejection_starts_the_hold() {
    // (account, status, create in flight for link_a, expected plan: None = held, else
    // (link, rejects_link))
    type Case = (
        &'static str,
        ResultStatus,
        bool,
        Option<(&'static str, bool)>,
    );
    let cases: &[Case] = &[
        ("acc_1", Succeeded, true, None),
        ("acc_1", Rejected, true, None),
        ("acc_9", Rejected, true, Some(("", false))),
        ("acc_1", Rejected, false, Some(("link_a", true))),
        ("acc_1", Failed, false, Some(("link_a", false))),
    ];
    for (account, status, creating, expected) in cases {
        let mut ctx = context();
        ctx.pending.clear();
        if *creating {
            ctx.creating.insert("link_a".into());
        }
        let plan = ctx.plan(&event(account, *status, Some(5_000)), 9_000);
        let got = match plan {
            Plan::Hold => None,
            Plan::Log(e) => {
                assert_eq!(e.intent_id, "", "nobody waits");
                Some((e.link_id, e.rejects_link))
            }
        };
        let want = expected.map(|(l, r)| (l.to_owned(), r));
        assert_eq!(got, want, "{account} {status:?} creating={creating}");
    }
}

/// Completion: the last expected result completes, with the worst status, at the latest
/// time any of its results was produced, never after now; once, even within one batch.
#[test]
fn the_last_result_completes_once_with_the_worst_status_at_the_latest_time() {
    // (first result, second result, completion)
    type Case = (
        (ResultStatus, Millis),
        (ResultStatus, Millis),
        Option<Completion>,
    );
    let cases: &[Case] = &[
        (
            (Succeeded, 20_000),
            (Succeeded, 30_000),
            done(I::Succeeded, 30_000),
        ),
        (
            (Succeeded, 30_000),
            (Failed, 20_000),
            done(I::Failed, 30_000),
        ),
        (
            (Rejected, 20_000),
            (Failed, 21_000),
            done(I::Rejected, 21_000),
        ),
        (
            (TimedOut, 20_000),
            (Succeeded, 21_000),
            done(I::TimedOut, 21_000),
        ),
        // A result claiming a time ahead of our clock completes it now.
        (
            (Succeeded, 20_000),
            (Succeeded, NOW + 5_000),
            done(I::Succeeded, NOW),
        ),
    ];
    for ((s1, at1), (s2, at2), completion) in cases {
        let mut ctx = context();
        let first = logged(ctx.plan(&event("acc_1", *s1, Some(*at1)), *at1));
        assert_eq!((first.intent_id.as_str(), first.completes), ("ri_1", None));
        let last = logged(ctx.plan(&event("acc_2", *s2, Some(*at2)), *at2));
        assert_eq!(last.intent_id, "ri_1");
        assert_eq!(
            last.completes, *completion,
            "{s1:?}@{at1} then {s2:?}@{at2}"
        );
        assert!(
            ctx.pending.is_empty(),
            "a completed intent leaves the context"
        );
    }
}

/// Within one batch an account answered once is no longer waited for.
#[test]
fn a_second_result_for_an_answered_account_is_unsolicited() {
    let mut ctx = context();
    let first = logged(ctx.plan(&event("acc_1", Succeeded, Some(12_000)), 12_000));
    let again = logged(ctx.plan(&event("acc_1", Succeeded, Some(13_000)), 13_000));
    assert_eq!(
        (first.intent_id.as_str(), again.intent_id.as_str()),
        ("ri_1", "")
    );
}

fn unclaimed(account: &str, sequence: i64, status: ResultStatus, at: Millis) -> Unclaimed {
    Unclaimed {
        account_id: account.into(),
        sequence,
        status,
        occurred_at_ms: at,
    }
}

/// Registration: earlier results become the intent's answers; all of them complete it,
/// marked on the newest.
#[test]
fn a_registration_claims_earlier_results_and_completes_when_all_are_there() {
    let expected = ["acc_1".to_owned(), "acc_2".to_owned()];
    // (found, claimed sequences, completion and completing sequence)
    type Case = (Vec<Unclaimed>, Vec<i64>, Option<(Completion, i64)>);
    let cases: Vec<Case> = vec![
        (vec![], vec![], None),
        (
            vec![unclaimed("acc_2", 7, Succeeded, 11_000)],
            vec![7],
            None,
        ),
        (
            vec![
                unclaimed("acc_2", 7, Failed, 12_000),
                unclaimed("acc_1", 5, Succeeded, 11_000),
            ],
            vec![7, 5],
            Some((
                Completion {
                    status: I::Failed,
                    at_ms: 12_000,
                },
                7,
            )),
        ),
        (
            vec![
                unclaimed("acc_1", 5, Succeeded, NOW + 1),
                unclaimed("acc_2", 6, Succeeded, 11_000),
            ],
            vec![5, 6],
            Some((
                Completion {
                    status: I::Succeeded,
                    at_ms: NOW,
                },
                6,
            )),
        ),
    ];
    for (found, sequences, completes) in cases {
        let what = format!("{found:?}");
        let claims = claims(&expected, found, NOW);
        let got: Vec<i64> = claims.claimed.iter().map(|c| c.1).collect();
        assert_eq!(got, sequences, "{what}");
        assert_eq!(claims.completes, completes, "{what}");
    }
    assert_eq!(claim_since(10_000), 10_000 - CLOCK_SLACK_MS);
}

fn intent(status: IntentStatus, results: &[(&str, Option<(ResultStatus, Millis)>)]) -> IntentView {
    IntentView {
        id: "ri_1".into(),
        link_id: "link_a".into(),
        refresh_type: RefreshType::OnlyLast,
        status,
        mfa_widget_token: String::new(),
        created_at_ms: 10_000,
        completed_at_ms: None,
        completed_sequence: None,
        accounts: results
            .iter()
            .map(|(account, result)| AccountState {
                account_id: (*account).into(),
                result: result.map(|(s, at)| ResultRow {
                    status: s.as_str().into(),
                    occurred_at_ms: at,
                    ..ResultRow::example(1, account)
                }),
            })
            .collect(),
    }
}

/// Timeout: every missing account gets a TIMED_OUT result now; the last completes the
/// intent with the worst status of all; an intent no longer pending gets nothing.
#[test]
fn a_timeout_fills_every_missing_account_and_the_last_completes() {
    // (intent, expected (account, completes) per TIMED_OUT result, None = not pending)
    type Case = (IntentView, Option<Vec<(&'static str, Option<Completion>)>>);
    let cases: Vec<Case> = vec![
        (
            intent(I::Pending, &[("acc_1", None), ("acc_2", None)]),
            Some(vec![("acc_1", None), ("acc_2", done(I::TimedOut, NOW))]),
        ),
        (
            intent(
                I::Pending,
                &[("acc_1", Some((Failed, 20_000))), ("acc_2", None)],
            ),
            Some(vec![("acc_2", done(I::Failed, NOW))]),
        ),
        (
            intent(
                I::Pending,
                &[("acc_1", Some((Rejected, 20_000))), ("acc_2", None)],
            ),
            Some(vec![("acc_2", done(I::Rejected, NOW))]),
        ),
        (
            intent(I::Succeeded, &[("acc_1", Some((Succeeded, 20_000)))]),
            None,
        ),
    ];
    for (intent, expected) in cases {
        let got = time_out(&intent, NOW).expect("statuses are known");
        let got = got.map(|results| {
            results
                .into_iter()
                .map(|r| (r.account_id, r.completes))
                .collect::<Vec<_>>()
        });
        let want = expected.map(|e| {
            e.into_iter()
                .map(|(a, c)| (a.to_owned(), c))
                .collect::<Vec<_>>()
        });
        assert_eq!(got, want, "{:?}", intent.accounts);
    }
}

/// The progress read back from an intent's view: statuses so far and its latest result.
#[test]
fn progress_is_read_from_an_intents_view() {
    let view = intent(
        I::Pending,
        &[("acc_1", Some((Succeeded, 20_000))), ("acc_2", None)],
    );
    let progress = Progress::of(&view).expect("known statuses");
    assert_eq!(
        progress,
        Progress {
            created_at_ms: 10_000,
            expected: vec![("acc_1".into(), Some(Succeeded)), ("acc_2".into(), None)],
            latest_result_ms: Some(20_000),
        }
    );
}
