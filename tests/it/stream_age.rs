//! Streams that end on purpose (`--max-stream-age`): a stream lives its age (±10 %), then
//! sends a heartbeat — a safe cursor — and ends UNAVAILABLE with ErrorInfo `STREAM_MAX_AGE`;
//! resuming after that heartbeat misses and repeats nothing, and `fintoc-refresh watch`
//! rides across it without a note. The clock is the server's injected one: the age passes
//! when the test says so.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use tonic_types::StatusExt;

use crate::common::*;

const AGE: Duration = Duration::from_secs(60);

async fn server(backend: Backend) -> TestServer {
    TestServer::with(Options {
        backend,
        tune: Some(Box::new(|c| {
            c.max_stream_age = AGE;
            c.heartbeat_interval = Duration::from_secs(5);
        })),
        ..Options::default()
    })
    .await
}

async fn post(server: &TestServer, id: &str, account: &str) {
    let now = server.clock.now_ms();
    let (status, body) = server
        .post_event(&event(id, account, "succeeded", now))
        .await;
    assert_eq!(status, 200, "{body}");
}

on_both_backends!(a_stream_ends_at_its_age_after_a_heartbeat_and_resumes_exactly);
async fn a_stream_ends_at_its_age_after_a_heartbeat_and_resumes_exactly(backend: Backend) {
    let server = server(backend).await;
    post(&server, "evt_other_1", "acc_other").await; // 1, someone else's
    server.until_published().await;
    let mut feed = server.watch(account_target("acc_1"), None).await;
    assert_eq!(feed.next().await, Seen::Heartbeat { seq: 1 });
    post(&server, "evt_mine_1", "acc_1").await; // 2
    assert_eq!(feed.next().await.seq(), 2);

    // Short of the youngest possible end (0.9 × 60 s): only heartbeats.
    server.clock.advance(Duration::from_secs(50));
    assert!(matches!(feed.next().await, Seen::Heartbeat { .. }));
    assert!(
        feed.try_next(Duration::from_millis(200)).await.is_none(),
        "the stream ended before 0.9 × its age"
    );
    post(&server, "evt_other_2", "acc_other").await; // 3, not ours: the cursor moves past it
    server.until_published().await;

    // Past the oldest possible end (1.1 × 60 s): a heartbeat, then UNAVAILABLE.
    server.clock.advance(Duration::from_secs(17));
    let beat = feed.next().await;
    assert_eq!(
        beat,
        Seen::Heartbeat { seq: 3 },
        "the last heartbeat is current"
    );
    let status = match feed.try_next(PATIENCE).await {
        Some(Err(status)) => status,
        other => panic!("expected the stream to end, got {other:?}"),
    };
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("--max-stream-age")
            && status.message().contains("after_sequence = 3"),
        "says why and where to resume: {}",
        status.message()
    );
    let info = status.get_details_error_info().expect("ErrorInfo");
    assert_eq!(
        (info.domain.as_str(), info.reason.as_str()),
        ("fintoc-refresh", "STREAM_MAX_AGE")
    );
    assert_eq!(
        info.metadata.get("after_sequence").map(String::as_str),
        Some("3")
    );

    // Resumed after the heartbeat: the next result of ours, nothing before it again.
    post(&server, "evt_mine_2", "acc_1").await; // 4
    let mut resumed = server
        .watch(account_target("acc_1"), Some(beat.seq()))
        .await;
    match resumed.next_event().await {
        Seen::Result { seq, event, .. } => assert_eq!((seq, event.as_str()), (4, "evt_mine_2")),
        other => panic!("expected evt_mine_2, got {other:?}"),
    }

    // Intent streams age too (their results are replayed after the cursor on resume).
    server.create_intent("ri_1", "link_1", &["acc_9"]).await;
    let mut intent = server.watch(intent_target("ri_1"), None).await;
    server.clock.advance(Duration::from_secs(67));
    assert_eq!(intent.end().await.code(), tonic::Code::Unavailable);
}

/// `fintoc-refresh watch` (the real binary, JSON lines) across a stream's end of life: it
/// reconnects at once with its cursor, prints nothing on stderr, and shows every result
/// once.
#[tokio::test]
async fn the_watch_command_rides_across_a_streams_end_of_life_quietly() {
    let server = server(Backend::Sqlite).await;
    let mut child = crate::binary::command()
        .args(["watch", "--account-id", "acc_1", "--json", "--server"])
        .arg(format!("http://{}", server.grpc))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the watch command");
    // Lines arrive on a channel the test awaits: the server runs on this test's runtime, so
    // the test must never block it.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut next_line = async || {
        tokio::time::timeout(PATIENCE, lines.recv())
            .await
            .ok()
            .flatten()
            .expect("the watch command printed nothing")
    };
    assert!(
        next_line().await.contains("heartbeat"),
        "opens with a heartbeat"
    );
    post(&server, "evt_a", "acc_1").await;
    assert!(next_line().await.contains("evt_a"));

    // Its stream reaches its age: the last heartbeat is printed, then it reconnects.
    server.clock.advance(Duration::from_secs(67));
    assert!(
        next_line().await.contains("heartbeat"),
        "the stream's last heartbeat"
    );
    post(&server, "evt_b", "acc_1").await;
    let mut after: Vec<String> = Vec::new();
    while !after.iter().any(|l| l.contains("evt_b")) {
        after.push(next_line().await);
    }
    assert!(
        after.iter().all(|l| !l.contains("evt_a")),
        "nothing repeated: {after:?}"
    );

    child.kill().unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("connection lost") && !stderr.contains("reconnecting"),
        "an end on purpose alarms nobody: {stderr}"
    );
}

on_both_backends!(a_stream_aged_out_mid_burst_resumes_with_nothing_missed_or_repeated);
async fn a_stream_aged_out_mid_burst_resumes_with_nothing_missed_or_repeated(backend: Backend) {
    let server = server(backend).await;
    let all = all_target();
    let mut feed = server.watch(all.clone(), None).await;
    assert_eq!(feed.next().await, Seen::Heartbeat { seq: 0 });
    // A burst, partly read when the stream reaches its age: whatever it had not sent yet
    // (queued in its mailbox or not yet stored) comes on the resumed stream.
    for i in 1..=6 {
        post(&server, &format!("evt_{i}"), &format!("acc_{}", i % 3)).await;
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(feed.next_event().await.seq());
    }
    server
        .clock
        .advance(AGE + AGE / 10 + Duration::from_secs(1));
    let mut cursor = *seen.last().unwrap();
    loop {
        match feed.try_next(PATIENCE).await {
            Some(Ok(Seen::Result { seq, .. })) => {
                seen.push(seq);
                cursor = seq;
            }
            Some(Ok(Seen::Heartbeat { seq })) => cursor = seq,
            Some(Err(status)) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                break;
            }
            other => panic!("expected the stream to end, got {other:?}"),
        }
    }
    for i in 7..=12 {
        post(&server, &format!("evt_{i}"), &format!("acc_{}", i % 3)).await;
    }
    let mut resumed = server.watch(all, Some(cursor)).await;
    while seen.last() != Some(&12) {
        seen.push(resumed.next_event().await.seq());
    }
    assert_eq!(seen, (1..=12).collect::<Vec<u64>>(), "each once, in order");
    assert!(
        matches!(
            resumed.try_next(Duration::from_millis(300)).await,
            None | Some(Ok(Seen::Heartbeat { .. }))
        ),
        "nothing repeated after the last"
    );
}
