//! The PostgreSQL backend end to end, in one process: what the SQLite tests show, on a fresh
//! PostgreSQL database.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_on_postgres_is_stored_once_and_streamed() {
    let server = TestServer::with(Options {
        backend: Backend::Postgres,
        ..Options::default()
    })
    .await;
    let mut feed = server.watch(account_target("acc_1"), None).await;
    let opened = feed.next().await;
    assert!(matches!(opened, Seen::Heartbeat { seq: 0 }), "{opened:?}");
    let body = event("evt_pg_1", "acc_1", "succeeded", server.clock.now_ms());
    let (status, reply) = server.post_event(&body).await;
    assert_eq!(status, 200, "{reply}");
    let (status, _) = server.post_event(&body).await;
    assert_eq!(status, 200);
    let got = feed.next_event().await;
    assert_eq!(got.seq(), 1, "{got:?}");
    let counts = server.counts().await;
    assert_eq!((counts.webhook_events, counts.results), (1, 1));
    let db = server.pg.clone();
    server.stop().await.unwrap();
    // A new server on the same database replays it with the same sequence.
    let again = TestServer::with(Options {
        pg: db,
        ..Options::default()
    })
    .await;
    let mut replay = again.watch(account_target("acc_1"), Some(0)).await;
    assert_eq!(replay.next_event().await.seq(), 1);
    again.stop().await.unwrap();
}
