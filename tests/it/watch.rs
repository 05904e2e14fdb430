//! WatchRefresh: replay, resume, heartbeats, slow watchers, errors, shutdown; on both
//! backends, except one test about transport only (health and reflection).

use std::time::Duration;

use crate::common::*;
use fintoc_refresh::pb::{self, RefreshStatus};
use tonic::Code;

mod support;

use support::post_n;

on_both_backends!(a_late_watcher_gets_the_full_replay_then_live_results);
async fn a_late_watcher_gets_the_full_replay_then_live_results(backend: Backend) {
    let server = TestServer::on(backend).await;
    server
        .create_intent("ri_1", "link_1", &["acc_1", "acc_2", "acc_3"])
        .await;
    let now = server.clock.now_ms();
    server
        .post_event(&event("evt_a", "acc_1", "succeeded", now))
        .await;
    server
        .post_event(&event("evt_b", "acc_2", "succeeded", now))
        .await;

    let mut late = server.watch(intent_target("ri_1"), None).await;
    assert!(
        matches!(late.next_event().await, Seen::Result { seq: 1, ref event, .. } if event == "evt_a")
    );
    assert!(
        matches!(late.next_event().await, Seen::Result { seq: 2, ref event, .. } if event == "evt_b")
    );
    server
        .post_event(&event("evt_c", "acc_3", "succeeded", now))
        .await;
    assert!(
        matches!(late.next_event().await, Seen::Result { seq: 3, ref event, .. } if event == "evt_c")
    );
    assert_eq!(
        late.next_event().await,
        Seen::Completed {
            seq: 3,
            status: RefreshStatus::Succeeded
        }
    );
    assert_eq!(late.end().await.code(), Code::Ok);

    // Watching a completed intent: the results, the summary, the end.
    let mut after = server.watch(intent_target("ri_1"), None).await;
    for seq in 1..=3 {
        assert_eq!(after.next_event().await.seq(), seq);
    }
    assert_eq!(
        after.next_event().await,
        Seen::Completed {
            seq: 3,
            status: RefreshStatus::Succeeded
        }
    );
    assert_eq!(after.end().await.code(), Code::Ok);
}

on_both_backends!(resuming_with_after_sequence_gives_exactly_the_rest);
async fn resuming_with_after_sequence_gives_exactly_the_rest(backend: Backend) {
    let server = TestServer::on(backend).await;
    server
        .create_intent("ri_1", "link_1", &["acc_1", "acc_2"])
        .await;
    post_n(&server, "acc_1", 3, "evt_a").await; // 1..3, acc_1 answers ri_1 once (seq 1)
    post_n(&server, "acc_2", 2, "evt_b").await; // 4..5
    let mut all = server.watch(link_target("link_1"), Some(0)).await;
    let seqs: Vec<u64> = [
        all.next_event().await,
        all.next_event().await,
        all.next_event().await,
    ]
    .iter()
    .map(Seen::seq)
    .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    drop(all);
    let mut rest = server.watch(link_target("link_1"), Some(3)).await;
    assert_eq!(rest.next_event().await.seq(), 4);
    assert_eq!(rest.next_event().await.seq(), 5);
    post_n(&server, "acc_1", 1, "evt_c").await;
    assert_eq!(rest.next_event().await.seq(), 6);
    assert!(
        rest.try_next(Duration::from_millis(200)).await.is_none(),
        "no duplicate, nothing extra"
    );

    // Per target: the account feed resumes within its own results.
    let mut account = server.watch(account_target("acc_2"), Some(4)).await;
    assert_eq!(account.next_event().await.seq(), 5);
    // The intent resumes after its first result with the second, then completes.
    let mut intent = server.watch(intent_target("ri_1"), Some(1)).await;
    assert_eq!(intent.next_event().await.seq(), 4);
    assert_eq!(
        intent.next_event().await,
        Seen::Completed {
            seq: 4,
            status: RefreshStatus::Succeeded
        }
    );
}

on_both_backends!(idle_streams_get_heartbeats_that_are_safe_cursors);
async fn idle_streams_get_heartbeats_that_are_safe_cursors(backend: Backend) {
    // The documented default heartbeat interval (5 s).
    let server = TestServer::with(Options {
        backend,
        tune: Some(Box::new(|c| c.heartbeat_interval = Duration::from_secs(5))),
        ..Options::default()
    })
    .await;
    post_n(&server, "acc_other", 2, "evt_o").await; // sequences 1, 2 for someone else
    server.until_published().await;
    let mut feed = server.watch(account_target("acc_1"), None).await;
    assert_eq!(feed.next().await, Seen::Heartbeat { seq: 2 });
    assert!(
        feed.try_next(Duration::from_millis(100)).await.is_none(),
        "no heartbeat before the interval"
    );
    server.clock.advance(Duration::from_secs(5));
    assert_eq!(feed.next().await, Seen::Heartbeat { seq: 2 });
    post_n(&server, "acc_other", 1, "evt_p").await; // 3, not ours
    server.until_published().await;
    server.clock.advance(Duration::from_secs(5));
    // The cursor moves past results that are not ours: resuming from it misses nothing.
    let beat = feed.next().await;
    assert_eq!(beat, Seen::Heartbeat { seq: 3 });
    post_n(&server, "acc_1", 1, "evt_mine").await; // 4
    assert_eq!(feed.next().await.seq(), 4);
    let mut resumed = server
        .watch(account_target("acc_1"), Some(beat.seq()))
        .await;
    assert_eq!(resumed.next_event().await.seq(), 4);

    // An intent stream waiting for results also gets heartbeats.
    server.create_intent("ri_1", "link_1", &["acc_9"]).await;
    let mut intent = server.watch(intent_target("ri_1"), None).await;
    server.clock.advance(Duration::from_secs(5));
    assert!(matches!(intent.next().await, Seen::Heartbeat { .. }));
}

on_both_backends!(a_slow_watcher_neither_delays_others_nor_misses_anything);
async fn a_slow_watcher_neither_delays_others_nor_misses_anything(backend: Backend) {
    // A tiny buffer, so the slow watcher overflows at once.
    let server = TestServer::with(Options {
        backend,
        tune: Some(Box::new(|c| c.watch_buffer = 4)),
        ..Options::default()
    })
    .await;
    let mut slow = server.watch(link_target("link_1"), None).await;
    let mut fast = server.watch(account_target("acc_1"), None).await;
    slow.next().await;
    fast.next().await;
    server.create_intent("ri_1", "link_1", &["acc_1"]).await;
    // 16 kB messages: 250 of them (4 MB) overflow HTTP/2's windows and send buffers, so the slow
    // watcher's mailbox overflows too and it has to catch up from the database.
    let total = 250;
    let now = server.clock.now_ms();
    let error = "x".repeat(16 * 1024);
    for i in 0..total {
        let body = event_with_error(&format!("evt_{i}"), "acc_1", "failed", now, Some(&error));
        let (status, _) = server.post_event(&body).await;
        assert_eq!(status, 200);
        // The fast watcher keeps up while the slow one reads nothing.
        assert_eq!(fast.next_event().await.seq(), i as u64 + 1);
    }
    // The slow watcher now reads everything, in order, without gaps or repeats.
    for seq in 1..=total as u64 {
        assert_eq!(slow.next_event().await.seq(), seq);
    }
    assert!(slow.try_next(Duration::from_millis(200)).await.is_none());
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        !metrics.contains("fintoc_refresh_watch_lagged_total 0"),
        "the slow watcher lagged:\n{metrics}"
    );
}

on_both_backends!(bad_watch_requests_get_clear_errors);
async fn bad_watch_requests_get_clear_errors(backend: Backend) {
    let server = TestServer::on(backend).await;
    let mut client = server.client().await;
    let call = |target: Option<pb::watch_refresh_request::Target>, after: Option<u64>| {
        let mut client = client.clone();
        async move {
            client
                .watch_refresh(pb::WatchRefreshRequest {
                    target,
                    after_sequence: after,
                    ..Default::default()
                })
                .await
                .expect_err("must fail")
        }
    };
    let none = call(None, None).await;
    assert_eq!(none.code(), Code::InvalidArgument);
    assert!(
        none.message()
            .contains("refresh_intent_id, link_id, account_id or selection"),
        "{}",
        none.message()
    );
    assert_eq!(
        call(Some(link_target("  ")), None).await.code(),
        Code::InvalidArgument
    );
    let unknown = call(Some(intent_target("ri_nope")), None).await;
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(unknown.message().contains("ri_nope"));
    let ahead = call(Some(link_target("link_1")), Some(u64::MAX)).await;
    assert_eq!(ahead.code(), Code::OutOfRange, "{}", ahead.message());
    // An id never seen is accepted for feeds: its results may come later.
    let mut feed = server.watch(link_target("link_never_seen"), Some(0)).await;
    assert!(feed.try_next(Duration::from_millis(100)).await.is_none());
    let got = client
        .get_refresh(pb::GetRefreshRequest {
            refresh_intent_id: "ri_nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(got.code(), Code::NotFound);
}

on_both_backends!(a_cursor_older_than_retention_is_out_of_range_with_the_oldest_sequence);
async fn a_cursor_older_than_retention_is_out_of_range_with_the_oldest_sequence(backend: Backend) {
    let server = TestServer::on(backend).await;
    post_n(&server, "acc_1", 3, "evt_old").await;
    server.clock.advance(Duration::from_secs(8 * 24 * 3600));
    post_n(&server, "acc_1", 2, "evt_new").await; // 4, 5
    fintoc_refresh::tasks::prune(&server.app).await.unwrap();
    let err = server
        .client()
        .await
        .watch_refresh(pb::WatchRefreshRequest {
            target: Some(account_target("acc_1")),
            after_sequence: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(
        err.message().contains("oldest available sequence is 4"),
        "{}",
        err.message()
    );
    use tonic_types::StatusExt;
    let info = err.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "CURSOR_EXPIRED");
    assert_eq!(info.metadata["oldest_sequence"], "4");
    // Exactly at the edge, and "everything retained", both work.
    let mut edge = server.watch(account_target("acc_1"), Some(3)).await;
    assert_eq!(edge.next_event().await.seq(), 4);
    let mut all = server.watch(account_target("acc_1"), Some(0)).await;
    assert_eq!(all.next_event().await.seq(), 4);
}

on_both_backends!(shutdown_ends_open_streams_with_unavailable);
async fn shutdown_ends_open_streams_with_unavailable(backend: Backend) {
    let server = TestServer::on(backend).await;
    let mut feed = server.watch(link_target("link_1"), None).await;
    feed.next().await;
    let stopping = tokio::spawn(async move { server.stop().await });
    let status = feed.end().await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("after_sequence"),
        "{}",
        status.message()
    );
    stopping.await.unwrap().unwrap();
}

on_both_backends!(draining_reports_not_serving_then_ends_health_watches);
/// On shutdown the server first drains: /readyz fails and gRPC health (Check and Watch) says
/// NOT_SERVING while both ports still answer; then health watchers' streams end too, so
/// they do not hold the server open until the grace runs out.
async fn draining_reports_not_serving_then_ends_health_watches(backend: Backend) {
    use tokio_stream::StreamExt;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let server = TestServer::with(Options {
        backend,
        tune: Some(Box::new(|c| {
            c.drain_delay = Duration::from_secs(2);
            c.shutdown_grace = Duration::from_secs(30);
        })),
        ..Options::default()
    })
    .await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let status = |r: Option<Result<tonic_health::pb::HealthCheckResponse, tonic::Status>>| {
        r.expect("a status").unwrap().status
    };
    assert_eq!(status(watch.next().await), ServingStatus::Serving as i32);
    assert_eq!(server.get("/readyz").await.0, 200);
    let (http, stopping) = (server.http, tokio::time::Instant::now());
    let shutdown = server.shutdown_token();
    let stopped = tokio::spawn(async move { server.stop().await });
    shutdown.cancelled().await;
    assert_eq!(status(watch.next().await), ServingStatus::NotServing as i32);
    // Still answering, but not ready.
    let ready = reqwest::get(format!("http://{http}/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    assert!(ready.text().await.unwrap().contains("draining"));
    let check = health
        .check(HealthCheckRequest {
            service: "fintoc.refresh.v1.RefreshService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(check.status, ServingStatus::NotServing as i32);
    // Then the health watch ends and the server stops long before its 30 s grace.
    assert!(watch.next().await.is_none_or(|r| r.is_err()));
    stopped.await.unwrap().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "stopped after the drain, not at the end of the grace: {:?}",
        stopping.elapsed()
    );
}

on_both_backends!(a_disconnected_watcher_frees_its_subscription);
async fn a_disconnected_watcher_frees_its_subscription(backend: Backend) {
    let server = TestServer::on(backend).await;
    let mut feed = server.watch(link_target("link_1"), None).await;
    feed.next().await;
    assert_eq!(server.app.hub.open_streams(), 1);
    drop(feed);
    eventually("the subscription is released", || async {
        server.app.hub.open_streams() == 0
    })
    .await;
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_client::HealthClient;
    let server = TestServer::start().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "fintoc.refresh.v1.RefreshService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_request::MessageRequest,
    };
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let listed = format!("{:?}", responses.next().await.unwrap().unwrap());
    assert!(
        listed.contains("fintoc.refresh.v1.RefreshService"),
        "{listed}"
    );
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest as AlphaRequest,
        server_reflection_request::MessageRequest as AlphaMessage,
    };
    let mut alpha = AlphaClient::new(channel);
    let request = AlphaRequest {
        host: String::new(),
        message_request: Some(AlphaMessage::ListServices(String::new())),
    };
    let mut responses = alpha
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let listed = format!("{:?}", responses.next().await.unwrap().unwrap());
    assert!(
        listed.contains("fintoc.refresh.v1.RefreshService"),
        "{listed}"
    );
}

on_both_backends!(a_completed_intent_ends_with_its_summary_even_without_its_completing_result);
/// Proves a completed intent's stream always ends with its own summary, even when the result
/// that completed it is not in the stream's range: an intent an older version completed "at
/// the log's newest sequence" (another account's result, with nothing of its own), and one
/// whose result is gone from the log as retention removes it. Such streams used to stay open
/// with heartbeats for ever. And the store takes no intent that expects no account.
async fn a_completed_intent_ends_with_its_summary_even_without_its_completing_result(
    backend: Backend,
) {
    let server = TestServer::on(backend).await;
    let now = server.clock.now_ms();
    post_n(&server, "acc_other", 1, "evt_other").await; // 1: nobody's
    server
        .create_intent("ri_pruned", "link_1", &["acc_1"])
        .await;
    post_n(&server, "acc_1", 1, "evt_mine").await; // 2: completes ri_pruned
    server
        .run_sql(&format!(
            "INSERT INTO refresh_intents (id, link_id, refresh_type, status, created_at_ms, \
             completed_at_ms, completed_sequence) \
             VALUES ('ri_empty', 'link_2', 'only_last', 'succeeded', {now}, {now}, 1); \
             DELETE FROM results WHERE sequence = 2;"
        ))
        .await;
    for (id, seq) in [("ri_empty", 1), ("ri_pruned", 2)] {
        let mut watch = server.watch(intent_target(id), None).await;
        assert_eq!(
            watch.next_event().await,
            Seen::Completed {
                seq,
                status: RefreshStatus::Succeeded
            },
            "{id}"
        );
        assert_eq!(watch.end().await.code(), Code::Ok, "{id}");
    }

    let nothing_to_wait_for = fintoc_refresh::domain::NewIntent {
        id: "ri_none".into(),
        link_id: "link_3".into(),
        refresh_type: fintoc_refresh::domain::RefreshType::OnlyLast,
        accounts: Vec::new(),
        created_at_ms: now,
        mfa_widget_token: String::new(),
    };
    let refused = server
        .app
        .store
        .register_intent(nothing_to_wait_for, None)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("expects no account"),
        "{refused}"
    );
}

on_both_backends!(a_failed_read_mid_stream_ends_unavailable_with_a_cursor_to_resume_from);
/// Proves a stream whose read of the store fails once it is open ends UNAVAILABLE naming its
/// cursor (not INTERNAL without one), and resuming there gives exactly the rest.
async fn a_failed_read_mid_stream_ends_unavailable_with_a_cursor_to_resume_from(backend: Backend) {
    let server = TestServer::on(backend).await;
    post_n(&server, "acc_1", 3, "evt_r").await; // 1..3
    server.app.store.fail_log_reads_for_test(1);
    let mut broken = server.watch(account_target("acc_1"), Some(2)).await;
    let status = broken.end().await;
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    assert!(
        status.message().contains("resume with after_sequence = 2"),
        "{}",
        status.message()
    );
    let mut resumed = server.watch(account_target("acc_1"), Some(2)).await;
    assert_eq!(resumed.next_event().await.seq(), 3);
    assert!(
        resumed.try_next(Duration::from_millis(200)).await.is_none(),
        "nothing repeated, nothing extra"
    );
}

on_both_backends!(pruning_during_a_catch_up_ends_out_of_range_instead_of_skipping);
/// Proves retention pruning past a stream's cursor while it catches up ends the stream
/// OUT_OF_RANGE with CURSOR_EXPIRED instead of silently skipping what was pruned. The results
/// are large (2 kB) and the client's HTTP/2 window small (64 kB), so flow control holds the
/// first page (256 results, 512 kB) in the stream while the test prunes: the second page's
/// read finds the log pruned past the cursor.
async fn pruning_during_a_catch_up_ends_out_of_range_instead_of_skipping(backend: Backend) {
    use tonic_types::StatusExt;
    let server = TestServer::on(backend).await;
    let now = server.clock.now_ms();
    let big = "x".repeat(2000);
    for i in 0..300 {
        let body = event_with_error(&format!("evt_{i}"), "acc_1", "failed", now, Some(&big));
        assert_eq!(server.post_event(&body).await.0, 200);
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let stream = pb::refresh_service_client::RefreshServiceClient::new(channel)
        .watch_refresh(pb::WatchRefreshRequest {
            target: Some(account_target("acc_1")),
            after_sequence: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut watch = Watch { stream };
    assert_eq!(watch.next_event().await.seq(), 1);
    server.clock.advance(Duration::from_secs(8 * 24 * 3600));
    fintoc_refresh::tasks::prune(&server.app).await.unwrap();
    assert_eq!(server.counts().await.results, 0, "all pruned");
    // The first page was read before the prune: it is delivered whole.
    for seq in 2..=256 {
        assert_eq!(watch.next_event().await.seq(), seq);
    }
    let status = watch.end().await;
    assert_eq!(status.code(), Code::OutOfRange, "{}", status.message());
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "CURSOR_EXPIRED");
    assert_eq!(info.metadata["oldest_sequence"], "301");
}

/// Proves an intent stream delivers every result of its intent before the summary when the
/// intent is seen completed before this replica has handed the completing result to its
/// watchers: another replica completes it (here: rows committed behind the server's back, as
/// another replica's writer would, without the notification, so this server's log tail only
/// picks them up at its next poll, up to half a second later). The stream used to read the
/// log once more, find nothing (reads stop at what the tail handed over), and end with the
/// summary having skipped the completing result. The same window, far shorter, exists on
/// SQLite between a commit becoming durable and its publication; the delivery tests hit it
/// under load. PostgreSQL only: on SQLite nothing but this server's own writer moves the log.
#[tokio::test]
async fn an_intent_completed_elsewhere_streams_its_last_result_before_the_summary() {
    let server = TestServer::on(Backend::Postgres).await;
    server
        .create_intent("ri_1", "link_1", &["acc_1", "acc_2"])
        .await;
    let now = server.clock.now_ms();
    post_n(&server, "acc_1", 1, "evt_first").await; // 1
    server.until_published().await;
    server
        .run_sql(&format!(
            "BEGIN; \
             UPDATE log_counter SET newest = 2; \
             INSERT INTO results (sequence, account_id, link_id, refresh_intent_id, status, \
             new_movements, public_error, event_id, occurred_at_ms, committed_at_ms, \
             completes_intent) \
             VALUES (2, 'acc_2', 'link_1', 'ri_1', 'succeeded', 0, '', 'evt_elsewhere', \
             {now}, {now}, TRUE); \
             UPDATE intent_accounts SET result_sequence = 2 \
             WHERE refresh_intent_id = 'ri_1' AND account_id = 'acc_2'; \
             UPDATE refresh_intents SET status = 'succeeded', completed_at_ms = {now}, \
             completed_sequence = 2 WHERE id = 'ri_1'; \
             COMMIT;"
        ))
        .await;
    let mut watch = server.watch(intent_target("ri_1"), None).await;
    assert_eq!(watch.next_event().await.seq(), 1);
    assert!(
        matches!(watch.next_event().await, Seen::Result { seq: 2, ref event, .. } if event == "evt_elsewhere"),
        "the completing result comes before the summary"
    );
    assert_eq!(
        watch.next_event().await,
        Seen::Completed {
            seq: 2,
            status: RefreshStatus::Succeeded
        }
    );
    assert_eq!(watch.end().await.code(), Code::Ok);
}
