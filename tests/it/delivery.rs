//! The simulator's hostile delivery modes against the real server: every event delivered
//! twice (the second copy after the first round, as Fintoc redelivers after a retry), and
//! each refresh's events delivered newest first. Whatever the order, each result is stored
//! once, pushed once, and a refresh's summary comes after all of its results, on both
//! backends.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use fintoc_refresh::pb::{self, RefreshStatus, RefreshType};
use fintoc_refresh::simulator::{LinkSpec, Outcome, SimConfig, SimLinkInfo, Simulator};

fn sim_config(duplicate: bool, reorder: bool) -> SimConfig {
    let mut c = SimConfig::new(API_KEY);
    c.delivery_delay = Duration::ZERO;
    c.retry_base = Duration::from_millis(20);
    c.duplicate = duplicate;
    c.reorder = reorder;
    c
}

async fn with_sim(backend: Backend, config: SimConfig) -> TestServer {
    TestServer::with(Options {
        backend,
        simulator: Some(config),
        tune: Some(Box::new(|c| c.fintoc_backoff = Duration::from_millis(10))),
        ..Options::default()
    })
    .await
}

fn sim(server: &TestServer) -> &Simulator {
    server.sim.as_ref().unwrap()
}

fn ok(n: u32) -> Outcome {
    Outcome::Succeed { new_movements: n }
}

/// What a refresh looked like to its intent watcher.
struct Followed {
    intent: String,
    /// (sequence, account, event id, status) in arrival order.
    results: Vec<(u64, String, String, RefreshStatus)>,
    completed: (u64, RefreshStatus),
}

/// Requests a refresh of `link` and follows its intent stream to the end, checking the
/// order is coherent: sequences strictly increase, no account twice, the summary last with
/// the sequence of the result that completed it, then the stream ends OK.
async fn refresh_and_follow(server: &TestServer, link: &SimLinkInfo) -> Followed {
    let answer = server
        .client()
        .await
        .request_refresh(pb::RequestRefreshRequest {
            link_token: link.token.clone(),
            refresh_type: RefreshType::OnlyLast.into(),
            idempotency_key: String::new(),
            keep_link_token: false,
        })
        .await
        .unwrap()
        .into_inner();
    let intent = answer.refresh_intent.unwrap().id;
    let mut watch = server.watch(intent_target(&intent), None).await;
    let mut results = Vec::new();
    let completed = loop {
        match watch.next_event().await {
            Seen::Result {
                seq,
                account,
                event,
                status,
                intent: of,
            } => {
                assert_eq!(of, intent);
                results.push((seq, account, event, status));
            }
            Seen::Completed { seq, status } => break (seq, status),
            other => unreachable!("no movements asked for: {other:?}"),
        }
    };
    assert_eq!(watch.end().await.code(), tonic::Code::Ok, "then the end");
    let seqs: Vec<u64> = results.iter().map(|r| r.0).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(Some(&completed.0), seqs.last(), "the summary comes last");
    let mut accounts: Vec<&String> = results.iter().map(|r| &r.1).collect();
    accounts.sort();
    let mut expected: Vec<&String> = link.account_ids.iter().collect();
    expected.sort();
    assert_eq!(accounts, expected, "each account exactly once");
    Followed {
        intent,
        results,
        completed,
    }
}

/// Waits until every delivery the simulator will make was acknowledged: `per_event` 2xx
/// answers for each of `events` events.
async fn all_acknowledged(server: &TestServer, events: usize, per_event: usize) {
    eventually("every copy delivered and acknowledged", || async {
        let mut acks: BTreeMap<String, usize> = BTreeMap::new();
        for d in sim(server).deliveries() {
            if d.status.is_some_and(|s| (200..300).contains(&s)) {
                *acks.entry(d.event_id).or_default() += 1;
            }
        }
        acks.len() == events && acks.values().all(|n| *n == per_event)
    })
    .await;
}

/// The results a Link feed got, until it has been quiet for a moment.
async fn drain(feed: &mut Watch) -> Vec<Seen> {
    let mut got = Vec::new();
    while let Some(next) = feed.try_next(Duration::from_millis(300)).await {
        match next.unwrap() {
            Seen::Heartbeat { .. } => {}
            seen => got.push(seen),
        }
    }
    got
}

on_both_backends!(duplicated_deliveries_are_stored_and_pushed_once);
/// Proves duplicate deliveries (including copies that land after the refresh completed)
/// are stored once and pushed once, to the intent watcher, a Link feed, and a replay.
async fn duplicated_deliveries_are_stored_and_pushed_once(backend: Backend) {
    let server = with_sim(backend, sim_config(true, false)).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![
        ok(1),
        Outcome::Fail {
            public_error: "bank down".into(),
        },
        ok(2),
    ]));
    let mut feed = server.watch(link_target(&link.link_id), None).await;
    feed.next().await;
    let followed = refresh_and_follow(&server, &link).await;
    assert_eq!(followed.completed.1, RefreshStatus::Failed);
    all_acknowledged(&server, 3, 2).await;

    let pushed = drain(&mut feed).await;
    assert_eq!(pushed.len(), 3, "each result pushed once: {pushed:?}");
    let counts = server.counts().await;
    assert_eq!((counts.webhook_events, counts.results), (3, 3));

    // A late watcher reads the same three results and one summary from the log.
    let mut replay = server.watch(intent_target(&followed.intent), None).await;
    for (seq, account, event, status) in &followed.results {
        assert_eq!(
            replay.next_event().await,
            Seen::Result {
                seq: *seq,
                account: account.clone(),
                intent: followed.intent.clone(),
                event: event.clone(),
                status: *status,
            }
        );
    }
    assert_eq!(
        replay.next_event().await,
        Seen::Completed {
            seq: followed.completed.0,
            status: RefreshStatus::Failed
        }
    );
}

on_both_backends!(reordered_deliveries_complete_once_after_every_result);
/// Proves events delivered newest first reach the watcher in that order (the mode really
/// reorders), each once, the summary only after the last one, with the right status.
async fn reordered_deliveries_complete_once_after_every_result(backend: Backend) {
    let server = with_sim(backend, sim_config(false, true)).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1), ok(2), ok(3)]));
    let followed = refresh_and_follow(&server, &link).await;
    let arrival: Vec<&String> = followed.results.iter().map(|r| &r.1).collect();
    let reversed: Vec<&String> = link.account_ids.iter().rev().collect();
    assert_eq!(arrival, reversed, "delivered newest first");
    assert_eq!(followed.completed.1, RefreshStatus::Succeeded);
    assert_eq!(server.counts().await.results, 3);
}

on_both_backends!(reordered_and_duplicated_deliveries_settle_the_same_way);
/// Both at once, with a rejected account: a reordered first round then a second round of
/// copies; the intent is REJECTED once, and the Link feed sees three results, no more.
async fn reordered_and_duplicated_deliveries_settle_the_same_way(backend: Backend) {
    let server = with_sim(backend, sim_config(true, true)).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1), Outcome::Reject, ok(2)]));
    let mut feed = server.watch(link_target(&link.link_id), None).await;
    feed.next().await;
    let followed = refresh_and_follow(&server, &link).await;
    assert_eq!(followed.completed.1, RefreshStatus::Rejected);
    all_acknowledged(&server, 3, 2).await;
    let pushed = drain(&mut feed).await;
    let statuses: Vec<RefreshStatus> = pushed
        .iter()
        .map(|s| match s {
            Seen::Result { status, .. } => *status,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            RefreshStatus::Succeeded,
            RefreshStatus::Rejected,
            RefreshStatus::Succeeded
        ],
        "newest first, once each"
    );
    assert_eq!(server.counts().await.results, 3);
}
