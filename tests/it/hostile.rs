//! Hostile or careless callers: watchers that never read, connect/disconnect storms, the
//! stream limit, oversized and overlong requests, and webhook senders that trickle their
//! body. Each gets a clear status; none slows anyone else or leaves anything behind. Stalled
//! watchers run on both backends (on PostgreSQL the log tail feeds the hub, and must not
//! stall either); the rest never reach the store and run on SQLite.

use std::time::Duration;

use crate::common::*;
use fintoc_refresh::pb::{self, refresh_service_client::RefreshServiceClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(format!("http://{}", server.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn watch_request(target: pb::watch_refresh_request::Target) -> pb::WatchRefreshRequest {
    pb::WatchRefreshRequest {
        target: Some(target),
        after_sequence: None,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_connects_and_disconnects_leave_nothing_behind() {
    let server = TestServer::start().await;
    let mut tasks = Vec::new();
    for lane in 0..4 {
        let grpc = server.grpc;
        tasks.push(tokio::spawn(async move {
            for connection in 0..25 {
                // Ten streams per connection, then the connection goes away with them.
                let channel = Channel::from_shared(format!("http://{grpc}"))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                let mut client = RefreshServiceClient::new(channel);
                let mut kept = Vec::new();
                for stream in 0..10 {
                    let target = account_target(&format!("acc_{lane}_{connection}_{stream}"));
                    let mut opened = client
                        .watch_refresh(watch_request(target))
                        .await
                        .unwrap()
                        .into_inner();
                    opened.next().await.expect("opening heartbeat").unwrap();
                    // Every other stream is dropped at once; the rest with the connection.
                    if stream % 2 == 0 {
                        kept.push(opened);
                    }
                }
                drop(client);
                drop(kept);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eventually("every subscription is released", || async {
        server.app.hub.open_streams() == 0
    })
    .await;
    // And the server still serves: a new watcher gets a new result.
    let mut feed = server.watch(account_target("acc_after"), None).await;
    feed.next().await;
    let (status, _) = server
        .post_event(&event(
            "evt_after",
            "acc_after",
            "succeeded",
            server.clock.now_ms(),
        ))
        .await;
    assert_eq!(status, 200);
    assert!(matches!(feed.next_event().await, Seen::Result { .. }));
}

#[tokio::test]
async fn the_watch_stream_limit_refuses_clearly_and_frees_on_disconnect() {
    let server = TestServer::with(Options {
        tune: Some(Box::new(|c| c.max_watch_streams = 3)),
        ..Options::default()
    })
    .await;
    let mut open = Vec::new();
    for i in 0..3 {
        let mut feed = server
            .watch(account_target(&format!("acc_{i}")), None)
            .await;
        feed.next().await;
        open.push(feed);
    }
    let refused = server
        .client()
        .await
        .watch_refresh(watch_request(account_target("acc_4")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("--max-watch-streams"),
        "{}",
        refused.message()
    );
    assert_eq!(
        server.app.hub.open_streams(),
        3,
        "the refused one holds nothing"
    );
    open.pop();
    eventually("a slot is free again", || async {
        server.app.hub.open_streams() == 2
    })
    .await;
    let mut again = server.watch(account_target("acc_4"), None).await;
    again.next().await;
}

#[tokio::test]
async fn oversized_and_overlong_requests_get_clear_statuses() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    let huge = "x".repeat(200 * 1024);
    let too_big = client
        .request_refresh(pb::RequestRefreshRequest {
            link_token: huge.clone(),
            refresh_type: 0,
            idempotency_key: String::new(),
            keep_link_token: false,
        })
        .await
        .unwrap_err();
    assert_eq!(too_big.code(), Code::OutOfRange, "{}", too_big.message());
    assert!(
        too_big.message().contains("too large"),
        "{}",
        too_big.message()
    );

    let long_token = format!("link_x_token_{}", "y".repeat(2000));
    let overlong = client
        .request_refresh(pb::RequestRefreshRequest {
            link_token: long_token.clone(),
            refresh_type: 0,
            idempotency_key: String::new(),
            keep_link_token: false,
        })
        .await
        .unwrap_err();
    assert_eq!(overlong.code(), Code::InvalidArgument);
    assert!(
        !overlong.message().contains("yyyy"),
        "never echoes the token: {}",
        overlong.message()
    );

    let long_id = "acc_".repeat(100);
    let bad_watch = client
        .watch_refresh(watch_request(account_target(&long_id)))
        .await
        .unwrap_err();
    assert_eq!(bad_watch.code(), Code::InvalidArgument);
    assert!(
        bad_watch.message().contains("at most 255"),
        "{}",
        bad_watch.message()
    );
    let bad_get = client
        .get_refresh(pb::GetRefreshRequest {
            refresh_intent_id: long_id,
        })
        .await
        .unwrap_err();
    assert_eq!(bad_get.code(), Code::InvalidArgument);
    let bad_key = client
        .request_refresh(pb::RequestRefreshRequest {
            link_token: "link_x_token_y".into(),
            refresh_type: 0,
            idempotency_key: "k".repeat(300),
            keep_link_token: false,
        })
        .await
        .unwrap_err();
    assert_eq!(bad_key.code(), Code::InvalidArgument);
    // Nothing of it reached the database.
    assert_eq!(server.counts().await.webhook_events, 0);
}

on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    watchers_that_never_read_hold_up_neither_the_intake_nor_other_watchers
);
/// Watchers that open a stream and never read: the HTTP/2 window stops their stream, their
/// mailboxes overflow and are dropped (they would catch up from the database if they ever
/// read again). Meanwhile every webhook is answered and a reading watcher gets every result.
async fn watchers_that_never_read_hold_up_neither_the_intake_nor_other_watchers(backend: Backend) {
    let server = TestServer::with(Options {
        backend,
        tune: Some(Box::new(|c| c.watch_buffer = 16)),
        ..Options::default()
    })
    .await;
    let stalled_channel = channel(&server).await;
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let mut client = RefreshServiceClient::new(stalled_channel.clone());
        let stream = client
            .watch_refresh(watch_request(account_target("acc_busy")))
            .await
            .unwrap()
            .into_inner();
        stalled.push(stream); // never polled again
    }
    let mut reader = server.watch(account_target("acc_busy"), None).await;
    reader.next().await;
    // Big results fill the stalled streams' windows quickly.
    let error = "e".repeat(2000);
    let total = 400;
    let now = server.clock.now_ms();
    let server = &server;
    let posts: Vec<_> = (0..total)
        .map(|i| {
            let body = event_with_error(
                &format!("evt_busy_{i}"),
                "acc_busy",
                "failed",
                now,
                Some(&error),
            );
            async move { server.post_event(&body).await.0 }
        })
        .collect();
    let reading = async {
        let mut seen = Vec::new();
        while seen.len() < total {
            if let Seen::Result { seq, .. } = reader.next_event().await {
                seen.push(seq);
            }
        }
        seen
    };
    let (statuses, seen) = tokio::join!(futures_util::future::join_all(posts), reading);
    assert!(statuses.iter().all(|s| *s == 200), "every webhook answered");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "in order");
    sorted.dedup();
    assert_eq!(sorted.len(), total, "every result, once");
    assert_eq!(server.app.hub.open_streams(), 51);
    drop(stalled);
    drop(stalled_channel);
    eventually("the stalled streams are released", || async {
        server.app.hub.open_streams() == 1
    })
    .await;
}

/// A sender that announces a body and trickles it (or stops) gets 408 after
/// `--request-timeout`; nothing is stored.
#[tokio::test]
async fn a_webhook_body_that_never_arrives_gets_408() {
    let server = TestServer::with(Options {
        tune: Some(Box::new(|c| c.request_timeout = Duration::from_millis(300))),
        ..Options::default()
    })
    .await;
    let mut tcp = tokio::net::TcpStream::connect(server.http).await.unwrap();
    tcp.write_all(
        b"POST /webhooks/fintoc HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          fintoc-signature: t=1,v1=00\r\ncontent-length: 100\r\n\r\n{\"id\":",
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 512];
    let n = tokio::time::timeout(PATIENCE, tcp.read(&mut answer))
        .await
        .expect("an answer, not a hang")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(server.counts().await.webhook_events, 0);
}
