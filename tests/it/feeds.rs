//! Feeds over many Links: a `selection` of Links and accounts (each result once, in order,
//! heartbeats as cursors), `all`, and a seek by time (`start_time`): where it starts, that
//! stored times never go back even when the clock does, and that a seek into what retention
//! removed is refused rather than served with a hole. Real server, real gRPC, both stores.

use std::time::Duration;

use fintoc_refresh::pb::{self, watch_refresh_request::Target};
use tonic::Code;
use tonic_types::StatusExt;

use crate::common::*;

const DAY: Duration = Duration::from_secs(86_400);

fn timestamp(ms: i64) -> prost_types::Timestamp {
    fintoc_refresh::grpc::convert::timestamp(ms)
}

async fn open(
    server: &TestServer,
    request: pb::WatchRefreshRequest,
) -> Result<Watch, tonic::Status> {
    let stream = server
        .client()
        .await
        .watch_refresh(request)
        .await?
        .into_inner();
    Ok(Watch { stream })
}

async fn seek(server: &TestServer, target: Target, at_ms: i64) -> Result<Watch, tonic::Status> {
    open(
        server,
        pb::WatchRefreshRequest {
            target: Some(target),
            start_time: Some(timestamp(at_ms)),
            ..Default::default()
        },
    )
    .await
}

async fn post(server: &TestServer, id: &str, account: &str) {
    let now = server.clock.now_ms();
    let (code, body) = server
        .post_event(&event(id, account, "succeeded", now))
        .await;
    assert_eq!(code, 200, "{body}");
}

/// The events a stream sends before it goes idle (its first heartbeat after them).
async fn until_idle(watch: &mut Watch, server: &TestServer) -> (Vec<(u64, String)>, u64) {
    let mut got = Vec::new();
    loop {
        match watch.try_next(Duration::from_millis(300)).await {
            Some(Ok(Seen::Result { seq, event, .. })) => got.push((seq, event)),
            Some(Ok(Seen::Heartbeat { seq })) if !got.is_empty() || seq > 0 => {
                return (got, seq);
            }
            Some(Ok(Seen::Heartbeat { .. })) => {}
            None => server.clock.advance(Duration::from_secs(5)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn events(got: &[(u64, String)]) -> Vec<&str> {
    got.iter().map(|(_, e)| e.as_str()).collect()
}

on_both_backends!(a_selection_sends_each_result_of_its_links_and_accounts_once_in_order);
async fn a_selection_sends_each_result_of_its_links_and_accounts_once_in_order(backend: Backend) {
    let server = TestServer::on(backend).await;
    server
        .create_intent("ri_a", "link_a", &["acc_a1", "acc_a2"])
        .await;
    server.create_intent("ri_b", "link_b", &["acc_b1"]).await;
    server.create_intent("ri_c", "link_c", &["acc_c1"]).await;
    post(&server, "evt_1", "acc_a1").await; // 1: link_a (and listed as an account too)
    post(&server, "evt_2", "acc_b1").await; // 2: not selected
    post(&server, "evt_3", "acc_a2").await; // 3: link_a
    post(&server, "evt_4", "acc_c1").await; // 4: the account acc_c1
    server.until_published().await;
    let wanted = selection_target(&["link_a"], &["acc_a1", "acc_c1"]);

    // Replay from the start, then live: each once, in sequence order.
    let mut feed = server.watch(wanted.clone(), Some(0)).await;
    let (got, cursor) = until_idle(&mut feed, &server).await;
    assert_eq!(events(&got), ["evt_1", "evt_3", "evt_4"]);
    assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 3, 4]);
    assert_eq!(cursor, 4, "the heartbeat's cursor covers what was read");
    post(&server, "evt_5", "acc_b1").await; // 5: not selected
    post(&server, "evt_6", "acc_a1").await; // 6
    let live = feed.next_event().await;
    assert_eq!(live.seq(), 6);

    // From now: a heartbeat first, then only what follows.
    let mut from_now = server.watch(wanted.clone(), None).await;
    assert_eq!(from_now.next().await, Seen::Heartbeat { seq: 6 });
    post(&server, "evt_7", "acc_c1").await; // 7
    assert_eq!(from_now.next_event().await.seq(), 7);
    assert_eq!(feed.next_event().await.seq(), 7);

    // Resuming after a heartbeat's cursor repeats nothing.
    let mut resumed = server.watch(wanted, Some(cursor)).await;
    let (got, _) = until_idle(&mut resumed, &server).await;
    assert_eq!(events(&got), ["evt_6", "evt_7"]);

    // `all` gets everything, in order.
    let mut every = server.watch(all_target(), Some(0)).await;
    let (got, cursor) = until_idle(&mut every, &server).await;
    assert_eq!(
        got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 7]
    );
    assert_eq!(cursor, 7);
}

/// What a selection or a seek must not be is refused before anything is sent, with a message
/// that says what to do.
#[tokio::test]
async fn malformed_selections_and_seeks_are_refused_with_a_reason() {
    let server = TestServer::start().await;
    server.create_intent("ri_1", "link_1", &["acc_1"]).await;
    let now = server.clock.now_ms();
    let many: Vec<String> = (0..1_001).map(|i| format!("link_{i}")).collect();
    let cases = [
        (selection_target(&[], &[]), None, None, "selection is empty"),
        (
            Target::Selection(pb::Selection {
                link_ids: vec!["link_1".into()],
                all: true,
                ..Default::default()
            }),
            None,
            None,
            "leave link_ids and account_ids empty",
        ),
        (
            Target::Selection(pb::Selection {
                link_ids: many,
                ..Default::default()
            }),
            None,
            None,
            "selection lists 1001 ids; at most 1000",
        ),
        (
            selection_target(&["link_1", ""], &[]),
            None,
            None,
            "selection.link_ids is empty",
        ),
        (all_target(), Some(now), Some(0), "not both"),
        (
            intent_target("ri_1"),
            Some(now),
            None,
            "start_time is for feeds",
        ),
        (
            all_target(),
            Some(now + 3_600_000),
            None,
            "ahead of the server's clock",
        ),
    ];
    for (target, start, after, says) in cases {
        let err = open(
            &server,
            pb::WatchRefreshRequest {
                target: Some(target),
                after_sequence: after,
                start_time: start.map(timestamp),
                ..Default::default()
            },
        )
        .await
        .err()
        .unwrap_or_else(|| panic!("accepted; expected {says:?}"));
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{says}: {}",
            err.message()
        );
        assert!(
            err.message().contains(says),
            "{says:?} not in {:?}",
            err.message()
        );
    }
    // 1,000 ids, repeats counting once, are fine.
    let mut ids: Vec<String> = (0..1_000).map(|i| format!("acc_{i}")).collect();
    ids.push("acc_0".into());
    let ok = open(
        &server,
        pb::WatchRefreshRequest {
            target: Some(Target::Selection(pb::Selection {
                account_ids: ids,
                ..Default::default()
            })),
            ..Default::default()
        },
    )
    .await;
    assert!(ok.is_ok(), "{:?}", ok.err());
}

on_both_backends!(a_seek_starts_at_the_first_result_stored_at_or_after_the_time);
async fn a_seek_starts_at_the_first_result_stored_at_or_after_the_time(backend: Backend) {
    let server = TestServer::on(backend).await;
    let t0 = server.clock.now_ms();
    post(&server, "evt_1", "acc_1").await; // 1 at t0
    server.clock.advance(Duration::from_secs(10));
    post(&server, "evt_2", "acc_2").await; // 2 at t0+10s
    post(&server, "evt_3", "acc_1").await; // 3 at t0+10s
    server.clock.advance(Duration::from_secs(10));
    post(&server, "evt_4", "acc_1").await; // 4 at t0+20s
    server.until_published().await;

    for (at, expected) in [
        (t0 - 60_000, vec!["evt_1", "evt_2", "evt_3", "evt_4"]),
        (t0, vec!["evt_1", "evt_2", "evt_3", "evt_4"]),
        (t0 + 1, vec!["evt_2", "evt_3", "evt_4"]),
        (t0 + 10_000, vec!["evt_2", "evt_3", "evt_4"]),
        (t0 + 15_000, vec!["evt_4"]),
    ] {
        let mut feed = seek(&server, all_target(), at).await.unwrap();
        let (got, cursor) = until_idle(&mut feed, &server).await;
        assert_eq!(events(&got), expected, "seek to t0{:+}ms", at - t0);
        assert_eq!(cursor, 4);
    }
    // With a narrower target the seek is the same cut, filtered.
    let mut feed = seek(&server, account_target("acc_1"), t0 + 10_000)
        .await
        .unwrap();
    let (got, _) = until_idle(&mut feed, &server).await;
    assert_eq!(events(&got), ["evt_3", "evt_4"]);

    // After everything stored: nothing replayed, and what comes next is delivered.
    let mut feed = seek(&server, all_target(), server.clock.now_ms())
        .await
        .unwrap();
    post(&server, "evt_5", "acc_3").await;
    assert_eq!(feed.next_event().await.seq(), 5);
}

// Stored times never go back along the log, even when the clock does (a clock stepped
// back, or on PostgreSQL a replica whose clock is behind another's): a seek is a clean cut,
// so a result stored after the one a seek starts at is never left out.
on_both_backends!(stored_times_never_go_back_so_a_seek_misses_nothing_after_it);
async fn stored_times_never_go_back_so_a_seek_misses_nothing_after_it(backend: Backend) {
    let server = TestServer::on(backend).await;
    let t0 = server.clock.now_ms();
    post(&server, "evt_1", "acc_1").await; // 1 at t0
    server.clock.advance(Duration::from_secs(60));
    post(&server, "evt_2", "acc_1").await; // 2 at t0+60s
    server.clock.set(t0 + 30_000); // the clock steps back
    post(&server, "evt_3", "acc_1").await; // 3: stamped t0+60s, not t0+30s
    server.until_published().await;
    // Stamped by the clock alone, evt_3 (t0+30s) would be the first at or after t0+30s and
    // the seek would start after evt_2, stored later than that.
    for at in [t0 + 30_000, t0 + 45_000, t0 + 60_000] {
        let mut feed = seek(&server, all_target(), at).await.unwrap();
        let (got, _) = until_idle(&mut feed, &server).await;
        assert_eq!(events(&got), ["evt_2", "evt_3"], "seek to t0+{}ms", at - t0);
    }
}

on_both_backends!(a_seek_into_what_retention_removed_is_refused_and_one_after_it_is_served);
async fn a_seek_into_what_retention_removed_is_refused_and_one_after_it_is_served(
    backend: Backend,
) {
    let server = TestServer::on(backend).await;
    let t0 = server.clock.now_ms();
    post(&server, "evt_1", "acc_1").await; // 1 at t0
    post(&server, "evt_2", "acc_1").await; // 2 at t0
    server.clock.advance(4 * DAY);
    post(&server, "evt_3", "acc_1").await; // 3 at t0+4d
    server.clock.advance(4 * DAY); // retention (7 days) now covers 1 and 2 only
    fintoc_refresh::tasks::prune(&server.app).await.unwrap();
    assert_eq!(server.app.store.log_bounds().await.unwrap().oldest, 3);

    // At or before the newest pruned result's time: the feed would have a hole.
    for at in [t0 - 1, t0] {
        let err = seek(&server, all_target(), at)
            .await
            .err()
            .expect("refused");
        assert_eq!(err.code(), Code::OutOfRange, "{}", err.message());
        let info = err.get_details_error_info().expect("ErrorInfo");
        assert_eq!(info.reason, "CURSOR_EXPIRED");
        assert_eq!(info.metadata["oldest_sequence"], "3");
        assert!(err.message().contains("re-sync"), "{}", err.message());
    }
    // Just after it: complete, from the oldest retained result.
    let mut feed = seek(&server, all_target(), t0 + 1).await.unwrap();
    let (got, _) = until_idle(&mut feed, &server).await;
    assert_eq!(events(&got), ["evt_3"]);
}
