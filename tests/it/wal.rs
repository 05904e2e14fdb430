//! The SQLite WAL stays bounded under continuous writes. Counted, never timed: the test posts
//! a fixed number of events without pause and looks at what the server did.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::*;

const LIMIT: u64 = 1 << 20;
const SENDERS: usize = 16;
const EVENTS: usize = 2_400;

/// After 2,400 events from 16 senders that never pause (several MiB of WAL at the 1 MiB
/// limit the test sets), the writer has restarted the WAL at least once, the file was never
/// seen above the limit (checked after every acknowledgement) and is below it at the end, and
/// every acknowledged event is stored once and reached its watcher in order. Without the
/// restarts the WAL only grows: this fails on a server that runs PASSIVE checkpoints alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_restarts_under_continuous_writes_and_stays_below_its_limit() {
    let server = TestServer::with(Options {
        tune: Some(Box::new(|config| config.sqlite_wal_limit_bytes = LIMIT)),
        ..Options::default()
    })
    .await;
    let wal = std::path::PathBuf::from(format!("{}-wal", server.db_path.display()));
    let mut feed = server.watch(account_target("acc_wal"), None).await;
    assert_eq!(feed.next().await, Seen::Heartbeat { seq: 0 });

    let server = Arc::new(server);
    let largest = Arc::new(AtomicU64::new(0));
    let now = server.clock.now_ms();
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (server, largest, wal) = (server.clone(), largest.clone(), wal.clone());
        senders.push(tokio::spawn(async move {
            for i in 0..EVENTS / SENDERS {
                let id = format!("evt_wal_{sender:02}_{i:04}");
                let (status, body) = server
                    .post_event(&event(&id, "acc_wal", "succeeded", now))
                    .await;
                assert_eq!(status, 200, "{id}: {body}");
                let size = std::fs::metadata(&wal).map_or(0, |m| m.len());
                largest.fetch_max(size, Ordering::Relaxed);
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }

    let (_, metrics) = server.get("/metrics").await;
    let restarted = sample(
        &metrics,
        "fintoc_refresh_wal_restarts_total{outcome=\"restarted\"}",
    );
    assert!(restarted >= 1, "the WAL was never restarted:\n{metrics}");
    let largest = largest.load(Ordering::Relaxed);
    assert!(largest <= LIMIT, "the WAL reached {largest} bytes");
    let size = std::fs::metadata(&wal).unwrap().len();
    assert!(size <= LIMIT, "the WAL ends at {size} bytes");
    eprintln!("{EVENTS} events: {restarted} WAL restarts, largest file seen {largest} bytes");

    assert_eq!(server.counts().await.webhook_events, EVENTS as i64);
    let mut seen = std::collections::HashSet::new();
    for expected in 1..=EVENTS as u64 {
        match feed.next_event().await {
            Seen::Result { seq, event, .. } => {
                assert_eq!(seq, expected, "out of order");
                assert!(seen.insert(event.clone()), "{event} pushed twice");
            }
            other => panic!("expected a result, got {other:?}"),
        }
    }
}
