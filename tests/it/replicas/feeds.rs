//! Feeds across replicas: a selection and an `all` stream on each replica see the same
//! results, each once, in sequence order, whichever replica stored them; a seek by time that
//! lands between one replica's commits and another's starts at the same result everywhere.
//!
//! The replicas share the machine's clock, so this cannot show replicas whose clocks differ:
//! that stamps never go back when a writer's clock is behind the log's newest stamp is shown
//! in-process on PostgreSQL with a clock stepped back
//! (`feeds::stored_times_never_go_back_so_a_seek_misses_nothing_after_it`).

use std::time::Duration;

use fintoc_refresh::clock::system_now_ms;
use fintoc_refresh::pb;

use super::{NO_FINTOC, Replica};
use crate::common::*;

/// Events (sequence, event id) a stream sends until it has seen `through`.
async fn read_through(watch: &mut Watch, through: u64) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    let mut last = 0;
    while last < through {
        match watch.next_event().await {
            Seen::Result { seq, event, .. } => {
                assert!(seq > last, "out of order or repeated: {seq} after {last}");
                last = seq;
                got.push((seq, event));
            }
            other => panic!("{other:?}"),
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selections_and_seeks_read_the_same_on_every_replica() {
    let db = PgDb::create().await;
    let (a, b) = (
        Replica::start(&db.url, NO_FINTOC, &[]),
        Replica::start(&db.url, NO_FINTOC, &[]),
    );
    let http = reqwest::Client::new();
    let selected = selection_target(&[], &["acc_1", "acc_3"]);
    // Live streams on both replicas before anything is stored.
    let mut live_a = a.watch(selected.clone(), None).await;
    let mut live_b = b.watch(all_target(), None).await;
    assert_eq!(live_a.next().await, Seen::Heartbeat { seq: 0 });
    assert_eq!(live_b.next().await, Seen::Heartbeat { seq: 0 });

    let post = async |replica: &Replica, id: &str, account: &str| {
        let body = event(id, account, "succeeded", system_now_ms());
        assert_eq!(replica.post(&http, &body).await.unwrap().0, 200);
    };
    post(&a, "evt_1", "acc_1").await; // 1
    post(&a, "evt_2", "acc_2").await; // 2
    post(&a, "evt_3", "acc_3").await; // 3
    // Every stamp of A's commits is at or before now; the seek time is after them, and B's
    // commits come once the clock has passed it.
    let seek_ms = system_now_ms() + 1;
    while system_now_ms() <= seek_ms {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    post(&b, "evt_4", "acc_1").await; // 4
    post(&b, "evt_5", "acc_2").await; // 5
    post(&b, "evt_6", "acc_3").await; // 6

    let only_selected = vec![
        (1, "evt_1".to_owned()),
        (3, "evt_3".to_owned()),
        (4, "evt_4".to_owned()),
        (6, "evt_6".to_owned()),
    ];
    assert_eq!(read_through(&mut live_a, 6).await, only_selected);
    assert_eq!(read_through(&mut live_b, 6).await.len(), 6);
    for replica in [&a, &b] {
        let mut replay = replica.watch(selected.clone(), Some(0)).await;
        assert_eq!(read_through(&mut replay, 6).await, only_selected);

        let mut seek = Watch {
            stream: replica
                .client()
                .await
                .watch_refresh(pb::WatchRefreshRequest {
                    target: Some(all_target()),
                    start_time: Some(fintoc_refresh::grpc::convert::timestamp(seek_ms)),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner(),
        };
        let from = read_through(&mut seek, 6).await;
        let events: Vec<&str> = from.iter().map(|(_, e)| e.as_str()).collect();
        assert_eq!(events, ["evt_4", "evt_5", "evt_6"], "on {}", replica.grpc);
    }
}
