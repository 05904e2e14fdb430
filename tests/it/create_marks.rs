//! The marks of create calls in flight: while one is live, a result for its Link is held (so
//! it can be attributed to the intent being created); a mark is its own call's, and lives by
//! one clock for every replica.

use std::sync::Arc;

use fintoc_refresh::clock::Clock;

use crate::common::*;

on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    an_abandoned_create_clears_only_its_own_mark
);
/// Two create calls for one Link (a frozen turn holder woke after another replica took its
/// turn): the first one's abandonment clears only its own mark, so a result that arrived
/// meanwhile stays held for the second; the second's abandonment then settles it. Before
/// the fix the first cleanup removed the Link's mark, whoever's it was, and logged the
/// result as unsolicited while the second create was still in flight.
async fn an_abandoned_create_clears_only_its_own_mark(backend: Backend) {
    let s = TestServer::on(backend).await;
    let store = &s.app.store;
    store
        .upsert_link("link_own".into(), "hash_own".into(), vec!["acc_own".into()])
        .await
        .unwrap();
    let first = store.begin_create("link_own").await.unwrap();
    let second = store.begin_create("link_own").await.unwrap();
    let body = event("evt_own", "acc_own", "succeeded", s.clock.now_ms());
    assert_eq!(s.post_event(&body).await.0, 200);
    assert_eq!(
        s.counts().await.held_events,
        1,
        "held while a create is in flight"
    );
    assert_eq!(
        first.abandon().await.unwrap(),
        0,
        "the first call's cleanup settled a result the second call still waits for"
    );
    assert_eq!(s.counts().await.held_events, 1);
    assert_eq!(second.abandon().await.unwrap(), 1);
    assert_eq!(s.counts().await.held_events, 0);
}

/// A create mark made on a replica whose clock runs behind is still live for a replica whose
/// clock runs ahead (here 10 minutes apart, more than a mark lasts): marks are written and
/// judged by the database's clock. Before the fix the second replica judged the first's
/// mark by its own clock, found it expired, and logged the result as unsolicited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_mark_holds_results_on_a_replica_whose_clock_runs_ahead() {
    let db = Arc::new(PgDb::create().await);
    let behind = TestServer::with(Options {
        backend: Backend::Postgres,
        pg: Some(db.clone()),
        ..Options::default()
    })
    .await;
    let ahead = TestServer::with(Options {
        backend: Backend::Postgres,
        pg: Some(db.clone()),
        clock: Some(Clock::manual(START_MS + 10 * 60 * 1000)),
        ..Options::default()
    })
    .await;
    behind
        .app
        .store
        .upsert_link(
            "link_skew".into(),
            "hash_skew".into(),
            vec!["acc_skew".into()],
        )
        .await
        .unwrap();
    let create = behind.app.store.begin_create("link_skew").await.unwrap();
    let body = event("evt_skew", "acc_skew", "succeeded", ahead.clock.now_ms());
    assert_eq!(ahead.post_event(&body).await.0, 200);
    assert_eq!(
        ahead.counts().await.held_events,
        1,
        "the result was logged while the create was in flight"
    );
    assert_eq!(create.abandon().await.unwrap(), 1);
}
