//! RequestRefresh end to end: the real server talking to the Fintoc simulator over HTTP,
//! webhooks delivered back to the real intake; on both backends, except the two tests of how
//! Fintoc's own failures are retried and mapped, which store nothing of their own.

use std::time::Duration;

use crate::common::*;
use fintoc_refresh::pb::{self, RefreshStatus, RefreshType};
use fintoc_refresh::simulator::{Fault, LinkSpec, Outcome};
use tonic::Code;
use tonic_types::StatusExt;

mod flow;
mod support;

use support::*;

on_both_backends!(the_cooldown_is_answered_locally_without_calling_fintoc);
async fn the_cooldown_is_answered_locally_without_calling_fintoc(backend: Backend) {
    let server = with_sim(backend, sim_config()).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    let (_, status, intent_id) = refresh_to_end(&server, &link).await;
    assert_eq!(status, RefreshStatus::Succeeded);
    server.clock.advance(Duration::from_secs(60));

    let err = request(&server, &link.token, "").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    let retry = err.get_details_retry_info().unwrap().retry_delay.unwrap();
    assert_eq!(retry, Duration::from_secs(240));
    let info = err.get_details_error_info().unwrap();
    assert_eq!(info.reason, "REFRESH_COOLDOWN");
    assert_eq!(info.metadata["refresh_intent_id"], intent_id);
    assert!(err.message().contains("4m"), "{}", err.message());
    assert_eq!(
        sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1),
        1,
        "the simulator saw no second POST"
    );

    // Historical refreshes have their own spacing.
    let historical = request_typed(&server, &link.token, "", RefreshType::Historical)
        .await
        .unwrap();
    assert!(!historical.joined_existing);
    assert_eq!(sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1), 2);
}

on_both_backends!(a_dropped_webhook_is_recovered_through_the_events_endpoint);
async fn a_dropped_webhook_is_recovered_through_the_events_endpoint(backend: Backend) {
    let server = with_sim(backend, sim_config()).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1), Outcome::Dropped]));
    let intent = request(&server, &link.token, "")
        .await
        .unwrap()
        .refresh_intent
        .unwrap();
    let mut watch = server.watch(intent_target(&intent.id), None).await;
    assert!(matches!(watch.next_event().await, Seen::Result { .. }));
    assert!(
        watch.try_next(Duration::from_millis(200)).await.is_none(),
        "the second webhook never comes"
    );
    server.clock.advance(Duration::from_secs(5 * 60));
    match watch.next_event().await {
        Seen::Result { event, status, .. } => {
            assert!(
                event.starts_with("evt_"),
                "an ordinary result with its event id"
            );
            assert_eq!(status, RefreshStatus::Succeeded);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        watch.next_event().await,
        Seen::Completed {
            status: RefreshStatus::Succeeded,
            ..
        }
    ));
    assert!(sim(&server).requests("GET", "/v2/events") >= 1);
}

on_both_backends!(a_never_answered_account_times_out_so_nobody_waits_forever);
async fn a_never_answered_account_times_out_so_nobody_waits_forever(backend: Backend) {
    // The stream must outlive the 30 minutes the clock jumps (its default age is as long).
    let server = TestServer::with(Options {
        backend,
        simulator: Some(sim_config()),
        tune: Some(Box::new(|c| c.max_stream_age = Duration::from_secs(7_200))),
        ..Options::default()
    })
    .await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1), Outcome::Silent, Outcome::Silent]));
    let intent = request(&server, &link.token, "")
        .await
        .unwrap()
        .refresh_intent
        .unwrap();
    let mut watch = server.watch(intent_target(&intent.id), None).await;
    let first = watch.next_event().await.seq();
    server.clock.advance(Duration::from_secs(30 * 60));
    let mut timed_out = Vec::new();
    for _ in 0..2 {
        match watch.next_event().await {
            Seen::Result {
                seq, event, status, ..
            } => {
                assert_eq!(status, RefreshStatus::TimedOut);
                assert!(event.is_empty());
                timed_out.push(seq);
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(timed_out[0] > first && timed_out[1] > timed_out[0]);
    assert_eq!(
        watch.next_event().await,
        Seen::Completed {
            seq: timed_out[1],
            status: RefreshStatus::TimedOut
        }
    );
}

#[tokio::test]
async fn upstream_5xx_and_429_are_retried_then_succeed() {
    let server = with_sim(Backend::Sqlite, sim_config()).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    sim(&server).inject(Fault::Status(503), 2);
    sim(&server).inject(Fault::Status(429), 1);
    let answer = request(&server, &link.token, "").await.unwrap();
    assert!(answer.refresh_intent.is_some());
    let (_, metrics) = server.get("/metrics").await;
    assert!(metrics.contains(r#"outcome="status_5xx""#), "{metrics}");
    assert!(metrics.contains(r#"outcome="status_429""#), "{metrics}");
}

#[tokio::test]
async fn upstream_failures_map_to_clear_statuses() {
    // Nobody listens on the configured Fintoc address.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let server = TestServer::with(Options {
        fintoc_url: Some(url),
        tune: Some(Box::new(|c| c.fintoc_backoff = Duration::from_millis(10))),
        ..Options::default()
    })
    .await;
    let err = request(&server, "link_x_token_y", "").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("cannot connect to Fintoc"),
        "{}",
        err.message()
    );
    assert!(
        !err.message().contains("link_x_token_y"),
        "never the token: {}",
        err.message()
    );

    let server = with_sim(Backend::Sqlite, sim_config()).await;
    let unknown = request(&server, "link_nope_token_nope", "")
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(!unknown.message().contains("link_nope_token_nope"));
    assert_eq!(
        request(&server, " ", "").await.unwrap_err().code(),
        Code::InvalidArgument
    );

    sim(&server).inject(Fault::Status(500), 10);
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    let down = request(&server, &link.token, "").await.unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{}", down.message());
    assert!(down.message().contains("HTTP 500"), "{}", down.message());

    let mut wrong_key = sim_config();
    wrong_key.api_key = "sk_test_someone_else".into();
    let server = with_sim(Backend::Sqlite, wrong_key).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    let refused = request(&server, &link.token, "").await.unwrap_err();
    assert_eq!(refused.code(), Code::Internal);
    assert!(
        refused.message().contains("FINTOC_SECRET_KEY"),
        "{}",
        refused.message()
    );
}

on_both_backends!(a_late_result_starts_the_cooldown_when_fintoc_completed_the_intent);
/// Proves the cooldown counts from when Fintoc completed the intent (its results' event
/// time), not from when the result reached us: a result recovered by reconciliation five
/// minutes late does not refuse a request Fintoc accepts.
async fn a_late_result_starts_the_cooldown_when_fintoc_completed_the_intent(backend: Backend) {
    let server = with_sim(backend, sim_config()).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![Outcome::Dropped]));
    let completed_at = server.clock.now_ms();
    let intent = request(&server, &link.token, "")
        .await
        .unwrap()
        .refresh_intent
        .unwrap();
    eventually("Fintoc produced the (undelivered) event", || async {
        sim(&server).event_ids().len() == 1
    })
    .await;
    let mut watch = server.watch(intent_target(&intent.id), None).await;
    // Reconciliation finds it --reconcile-after (5 minutes) later.
    server.clock.advance(Duration::from_secs(5 * 60));
    assert!(matches!(watch.next_event().await, Seen::Result { .. }));
    assert!(matches!(
        watch.next_event().await,
        Seen::Completed {
            status: RefreshStatus::Succeeded,
            ..
        }
    ));
    let got = server.get_refresh(&intent.id).await.refresh_intent.unwrap();
    let completed = got.completed_at.unwrap();
    assert_eq!(
        completed.seconds * 1000 + i64::from(completed.nanos / 1_000_000),
        completed_at,
        "completed when Fintoc's event says"
    );
    // Fintoc's 5 minutes (from its completion) are over; ours must be too.
    server.clock.advance(Duration::from_secs(1));
    let again = request(&server, &link.token, "").await.unwrap();
    assert!(!again.joined_existing);
    assert_eq!(sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1), 2);
}

on_both_backends!(a_link_with_nothing_to_refresh_is_refused_without_calling_fintocs_create);
/// Proves a Link Fintoc would not refresh is refused before any create call, with
/// FAILED_PRECONDITION saying why: one without accounts (it would never report a result, and
/// used to "succeed" at once with another refresh's sequence) and an inactive one. A Link
/// whose answer leaves `accounts` null has them listed through `/v1/accounts`.
async fn a_link_with_nothing_to_refresh_is_refused_without_calling_fintocs_create(
    backend: Backend,
) {
    let server = with_sim(backend, sim_config()).await;
    let refused = |err: tonic::Status, reason: &str, words: &str| {
        assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
        assert!(err.message().contains(words), "{}", err.message());
        let info = err.get_details_error_info().expect("ErrorInfo");
        assert_eq!(
            (info.reason.as_str(), info.domain.as_str()),
            (reason, "fintoc-refresh")
        );
    };
    let empty = sim(&server).add_link(LinkSpec::new(vec![]));
    let err = request(&server, &empty.token, "").await.unwrap_err();
    refused(err, "LINK_WITHOUT_ACCOUNTS", "no accounts");

    let inactive = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    sim(&server).set_active(&inactive.link_id, false);
    let err = request(&server, &inactive.token, "").await.unwrap_err();
    refused(err, "LINK_INACTIVE", "inactive");

    let listed_empty = sim(&server).add_link(LinkSpec::new(vec![]));
    sim(&server).list_accounts_separately(&listed_empty.link_id);
    let err = request(&server, &listed_empty.token, "").await.unwrap_err();
    refused(err, "LINK_WITHOUT_ACCOUNTS", "no accounts");
    assert_eq!(
        sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1),
        0,
        "Fintoc's create was never called"
    );

    let listed = sim(&server).add_link(LinkSpec::new(vec![ok(1), ok(2)]));
    sim(&server).list_accounts_separately(&listed.link_id);
    let (results, status, _) = refresh_to_end(&server, &listed).await;
    assert_eq!(results.len(), 2, "one result per listed account");
    assert_eq!(status, RefreshStatus::Succeeded);
    assert_eq!(sim(&server).requests("GET", "/v1/accounts"), 2);
}

on_both_backends!(a_passing_failure_of_the_create_call_is_retried_with_a_fresh_key);
/// Fintoc keeps the first answer to an `Idempotency-Key`, failures included, so a retry
/// that reused the key would only be handed the same 503 again. Proves the create call's own
/// 5xx and 429 are retried with a fresh key each time, and succeed, with exactly one intent
/// made at Fintoc.
async fn a_passing_failure_of_the_create_call_is_retried_with_a_fresh_key(backend: Backend) {
    let server = with_sim(backend, sim_config()).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    sim(&server).inject_on(POST_INTENTS.0, POST_INTENTS.1, Fault::Status(503), 2);
    sim(&server).inject_on(POST_INTENTS.0, POST_INTENTS.1, Fault::Status(429), 1);
    let answer = request(&server, &link.token, "key-passing").await.unwrap();
    assert!(!answer.joined_existing);
    let id = answer.refresh_intent.unwrap().id;
    assert_eq!(sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1), 4);
    assert_eq!(intents_at_fintoc(&server, &link.token).await, vec![id]);
}

on_both_backends!(a_caller_retrying_with_its_key_after_fintoc_failed_gets_a_fresh_attempt);
/// Proves a caller that retries with its own idempotency key after a failed call is not
/// locked out for the 24 hours Fintoc replays a stored failure: the next call starts after
/// every key Fintoc already answered. The same after a failure that is not retried within
/// the call (an answered 4xx). Either way exactly one intent is made.
async fn a_caller_retrying_with_its_key_after_fintoc_failed_gets_a_fresh_attempt(backend: Backend) {
    let server = with_sim(backend, sim_config()).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    sim(&server).inject_on(POST_INTENTS.0, POST_INTENTS.1, Fault::Status(503), 1000);
    let down = request(&server, &link.token, "key-retry")
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{}", down.message());
    let tried = sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1);
    assert!(tried >= 2, "retried within the call: {tried}");
    sim(&server).clear_faults();

    let answer = request(&server, &link.token, "key-retry").await.unwrap();
    let id = answer.refresh_intent.unwrap().id;
    assert_eq!(
        sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1),
        tried + 1,
        "one more attempt, with a key Fintoc had not answered"
    );
    assert_eq!(
        intents_at_fintoc(&server, &link.token).await,
        vec![id.clone()]
    );
    // From now on the key is answered here.
    let again = request(&server, &link.token, "key-retry").await.unwrap();
    assert_eq!(again.refresh_intent.unwrap().id, id);
    assert_eq!(
        sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1),
        tried + 1
    );

    let other = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    sim(&server).inject_on(POST_INTENTS.0, POST_INTENTS.1, Fault::Status(400), 1);
    let refused = request(&server, &other.token, "key-400").await.unwrap_err();
    assert_eq!(refused.code(), Code::Internal, "{}", refused.message());
    let answer = request(&server, &other.token, "key-400").await.unwrap();
    assert_eq!(
        intents_at_fintoc(&server, &other.token).await,
        vec![answer.refresh_intent.unwrap().id]
    );
}

on_both_backends!(fintocs_own_cooldown_names_the_last_success_known_here);
/// Proves Fintoc's own `rate_limit_exceeded` is answered like a local cooldown and names the
/// last success known here (with Fintoc's full spacing when the time left is not known
/// here): here Fintoc knows of a later success, made elsewhere, that this service has only
/// seen as unsolicited results. For a Link without a success known here the id is empty.
async fn fintocs_own_cooldown_names_the_last_success_known_here(backend: Backend) {
    let server = with_sim(backend, sim_config()).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    let (_, status, ours) = refresh_to_end(&server, &link).await;
    assert_eq!(status, RefreshStatus::Succeeded);
    // Once Fintoc allows it, someone else refreshes the Link at Fintoc; its result reaches
    // this service as one of no intent.
    server.clock.advance(Duration::from_secs(5 * 60));
    someone_else_refreshes(&server, &link.token).await;
    eventually("the other refresh completed at Fintoc", || async {
        sim(&server).event_ids().len() == 2
    })
    .await;
    // Our cooldown (5 minutes from our success) is over; Fintoc's, from the other, is not.
    server.clock.advance(Duration::from_secs(60));
    let err = request(&server, &link.token, "").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("Fintoc says"), "{}", err.message());
    let info = err.get_details_error_info().unwrap();
    assert_eq!(info.reason, "REFRESH_COOLDOWN");
    assert_eq!(info.metadata["refresh_intent_id"], ours);
    assert_eq!(
        err.get_details_retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(300))
    );

    let stranger = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    someone_else_refreshes(&server, &stranger.token).await;
    eventually("the stranger's refresh completed at Fintoc", || async {
        sim(&server).event_ids().len() == 3
    })
    .await;
    let err = request(&server, &stranger.token, "").await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    let info = err.get_details_error_info().unwrap();
    assert_eq!(info.metadata["refresh_intent_id"], "");
    assert_eq!(
        err.get_details_retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(300))
    );
}

on_both_backends!(the_historical_cooldown_lasts_an_hour);
/// Proves historical refreshes are spaced by 60 minutes, end to end on the manual clock:
/// refused locally (without calling Fintoc) with the time left and the last intent's id
/// until the hour is over, accepted after.
async fn the_historical_cooldown_lasts_an_hour(backend: Backend) {
    let server = with_sim(backend, sim_config()).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    let first = request_typed(&server, &link.token, "", RefreshType::Historical)
        .await
        .unwrap()
        .refresh_intent
        .unwrap();
    let mut watch = server.watch(intent_target(&first.id), None).await;
    watch.next_event().await;
    assert!(matches!(
        watch.next_event().await,
        Seen::Completed {
            status: RefreshStatus::Succeeded,
            ..
        }
    ));
    server.clock.advance(Duration::from_secs(59 * 60));
    let err = request_typed(&server, &link.token, "", RefreshType::Historical)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert_eq!(
        err.get_details_retry_info().unwrap().retry_delay,
        Some(Duration::from_secs(60))
    );
    assert_eq!(
        err.get_details_error_info().unwrap().metadata["refresh_intent_id"],
        first.id
    );
    assert_eq!(sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1), 1);

    server.clock.advance(Duration::from_secs(60));
    let second = request_typed(&server, &link.token, "", RefreshType::Historical)
        .await
        .unwrap();
    assert!(!second.joined_existing);
    assert_ne!(second.refresh_intent.unwrap().id, first.id);
    assert_eq!(sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1), 2);
}

on_both_backends!(an_adopted_intent_gets_its_results_from_before_and_after_the_adoption);
/// Proves an intent created elsewhere and adopted here gets every result of its refresh: one
/// that arrived before anyone here knew the intent (logged then, without an intent) and one
/// that arrives after the adoption, both attributed to it; then it completes.
async fn an_adopted_intent_gets_its_results_from_before_and_after_the_adoption(backend: Backend) {
    let mut config = sim_config();
    // Fintoc's own deliveries stay away; the test delivers the results itself.
    config.delivery_delay = Duration::from_secs(600);
    let server = with_sim(backend, config).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1), ok(2)]));
    let theirs = someone_else_refreshes(&server, &link.token).await;
    let (before, after) = (&link.account_ids[0], &link.account_ids[1]);
    let at = server.clock.now_ms();
    let (status, _) = server
        .post_event(&event("evt_before", before, "succeeded", at))
        .await;
    assert_eq!(status, 200);

    let answer = request(&server, &link.token, "").await.unwrap();
    assert!(answer.joined_existing);
    assert_eq!(answer.refresh_intent.unwrap().id, theirs);
    let mut watch = server.watch(intent_target(&theirs), None).await;
    assert!(
        matches!(watch.next_event().await, Seen::Result { ref event, ref intent, .. } if event == "evt_before" && *intent == theirs)
    );
    let (status, _) = server
        .post_event(&event("evt_after", after, "succeeded", at + 1000))
        .await;
    assert_eq!(status, 200);
    assert!(
        matches!(watch.next_event().await, Seen::Result { ref event, ref intent, .. } if event == "evt_after" && *intent == theirs)
    );
    assert!(matches!(
        watch.next_event().await,
        Seen::Completed {
            status: RefreshStatus::Succeeded,
            ..
        }
    ));
}

on_both_backends!(events_held_during_a_create_that_fails_are_logged_not_lost);
/// Proves events held while a create call is in flight are not lost when that call fails:
/// once it has failed they are logged as results of no intent, and pushed.
async fn events_held_during_a_create_that_fails_are_logged_not_lost(backend: Backend) {
    let server = with_sim(backend, sim_config()).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    let account = link.account_ids[0].clone();
    let mut feed = server.watch(account_target(&account), None).await;
    feed.next().await;
    // The create call hangs at Fintoc beyond the caller's deadline.
    sim(&server).inject_on(
        POST_INTENTS.0,
        POST_INTENTS.1,
        Fault::Slow(Duration::from_secs(60)),
        1,
    );
    let pending = {
        let mut call = tonic::Request::new(pb::RequestRefreshRequest {
            link_token: link.token.clone(),
            refresh_type: 0,
            idempotency_key: String::new(),
            keep_link_token: false,
        });
        call.set_timeout(Duration::from_millis(1500));
        let mut client = server.client().await;
        tokio::spawn(async move { client.request_refresh(call).await })
    };
    eventually("the create call is in flight", || async {
        sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1) == 1
    })
    .await;
    let (status, _) = server
        .post_event(&event(
            "evt_held",
            &account,
            "succeeded",
            server.clock.now_ms(),
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.counts().await.held_events, 1, "held for the intent");

    let failed = pending.await.unwrap().unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable, "{}", failed.message());
    assert!(
        matches!(feed.next_event().await, Seen::Result { ref event, ref intent, .. } if event == "evt_held" && intent.is_empty())
    );
    eventually("nothing is held any more", || async {
        server.counts().await.held_events == 0
    })
    .await;
}
