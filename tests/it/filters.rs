//! Status filters on watch streams (`statuses`): only the results asked for are sent, the
//! cursor (through heartbeats) still moves past the others, an intent stream still ends
//! with its summary, and a status no account result has is refused.

use std::time::Duration;

use fintoc_refresh::pb::{self, RefreshStatus};

use crate::common::*;

async fn post(server: &TestServer, id: &str, account: &str, status: &str) {
    let now = server.clock.now_ms();
    let (code, body) = server.post_event(&event(id, account, status, now)).await;
    assert_eq!(code, 200, "{body}");
}

async fn watch_only(
    server: &TestServer,
    target: pb::watch_refresh_request::Target,
    after: Option<u64>,
    statuses: &[RefreshStatus],
) -> Result<Watch, tonic::Status> {
    let mut client = server.client().await;
    let stream = client
        .watch_refresh(pb::WatchRefreshRequest {
            target: Some(target),
            after_sequence: after,
            statuses: statuses.iter().map(|s| *s as i32).collect(),
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(Watch { stream })
}

fn event_of(seen: &Seen) -> &str {
    match seen {
        Seen::Result { event, .. } => event,
        other => panic!("expected a result, got {other:?}"),
    }
}

on_both_backends!(a_filtered_feed_sends_only_the_statuses_asked_for_and_its_cursor_moves_on);
async fn a_filtered_feed_sends_only_the_statuses_asked_for_and_its_cursor_moves_on(
    backend: Backend,
) {
    let server = TestServer::on(backend).await;
    for (id, status) in [
        ("evt_1", "succeeded"),
        ("evt_2", "failed"),
        ("evt_3", "succeeded"),
        ("evt_4", "rejected"),
        ("evt_5", "succeeded"),
    ] {
        post(&server, id, "acc_1", status).await; // sequences 1..=5
    }
    server.until_published().await;
    let only = [RefreshStatus::Failed, RefreshStatus::Rejected];
    let mut feed = watch_only(&server, account_target("acc_1"), Some(0), &only)
        .await
        .unwrap();
    let first = feed.next().await;
    assert_eq!((event_of(&first), first.seq()), ("evt_2", 2));
    let second = feed.next().await;
    assert_eq!((event_of(&second), second.seq()), ("evt_4", 4));
    // Idle: the heartbeat's cursor is past evt_5, which was not sent.
    server.clock.advance(Duration::from_secs(5));
    let beat = feed.next().await;
    assert_eq!(beat, Seen::Heartbeat { seq: 5 });

    // Live results are filtered alike; resuming after the heartbeat repeats nothing.
    post(&server, "evt_6", "acc_1", "succeeded").await; // 6
    post(&server, "evt_7", "acc_1", "failed").await; // 7
    let live = feed.next().await;
    assert_eq!((event_of(&live), live.seq()), ("evt_7", 7));
    let mut resumed = watch_only(&server, account_target("acc_1"), Some(5), &only)
        .await
        .unwrap();
    let again = resumed.next().await;
    assert_eq!((event_of(&again), again.seq()), ("evt_7", 7));

    // Repeating a status changes nothing; no filter sends everything.
    let mut all = watch_only(
        &server,
        account_target("acc_1"),
        Some(5),
        &[RefreshStatus::Succeeded, RefreshStatus::Succeeded],
    )
    .await
    .unwrap();
    assert_eq!(event_of(&all.next().await), "evt_6");
}

on_both_backends!(a_filtered_intent_stream_still_ends_with_its_summary);
async fn a_filtered_intent_stream_still_ends_with_its_summary(backend: Backend) {
    let server = TestServer::on(backend).await;
    server
        .create_intent("ri_1", "link_1", &["acc_1", "acc_2"])
        .await;
    let mut stream = watch_only(
        &server,
        intent_target("ri_1"),
        None,
        &[RefreshStatus::Failed],
    )
    .await
    .unwrap();
    post(&server, "evt_a", "acc_1", "succeeded").await;
    post(&server, "evt_b", "acc_2", "failed").await;
    let only = stream.next_event().await;
    assert_eq!(event_of(&only), "evt_b", "the succeeded result is not sent");
    assert!(matches!(
        stream.next_event().await,
        Seen::Completed {
            status: RefreshStatus::Failed,
            ..
        }
    ));
    assert_eq!(stream.end().await.code(), tonic::Code::Ok);
}

#[tokio::test]
async fn a_status_no_account_result_has_is_refused() {
    let server = TestServer::start().await;
    for (asked, named) in [
        (
            vec![RefreshStatus::Pending as i32],
            "REFRESH_STATUS_PENDING",
        ),
        (
            vec![RefreshStatus::Unspecified as i32],
            "REFRESH_STATUS_UNSPECIFIED",
        ),
        (vec![RefreshStatus::Failed as i32, 99], "99"),
    ] {
        let mut client = server.client().await;
        let status = client
            .watch_refresh(pb::WatchRefreshRequest {
                target: Some(account_target("acc_1")),
                after_sequence: None,
                statuses: asked,
                ..Default::default()
            })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().starts_with("statuses: ") && status.message().contains(named),
            "{}",
            status.message()
        );
    }
}
