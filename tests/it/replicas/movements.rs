//! Movements on several replicas (real processes on one PostgreSQL database): every replica
//! runs a fetcher, and they race for the same jobs the moment a result is committed. Each
//! event's movements are listed at Fintoc once (one listing pass per account, counted at the
//! simulator) and pushed once (counted on an `all` feed with movements, on another replica
//! than any that stored the results).

use std::collections::HashMap;
use std::time::Duration;

use fintoc_refresh::pb;
use fintoc_refresh::simulator::{LinkSpec, Outcome};
use tokio_util::sync::CancellationToken;

use super::{Balancer, Replica, simulator};
use crate::common::*;

const KEYS: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_racing_for_the_same_fetches_list_and_push_each_once() {
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let balancer = Balancer::start(stop.clone()).await;
    let sim = simulator(&balancer.url, Duration::ZERO, &stop);
    let db = PgDb::create().await;
    let replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::start_with(&db.url, &sim.url(), &[], &[("LINK_TOKEN_KEYS", KEYS)]))
        .collect();
    for replica in &replicas {
        balancer.add(replica);
    }
    let ok = Outcome::Succeed { new_movements: 0 };
    let links: Vec<_> = (0..4)
        .map(|_| sim.add_link(LinkSpec::new(vec![ok.clone(), ok.clone()])))
        .collect();
    for (i, link) in links.iter().enumerate() {
        replicas[i % 3]
            .client()
            .await
            .register_link(pb::RegisterLinkRequest {
                link_token: link.token.clone(),
            })
            .await
            .unwrap();
    }
    let mut feed = {
        let stream = replicas[2]
            .client()
            .await
            .watch_refresh(pb::WatchRefreshRequest {
                target: Some(all_target()),
                include_movements: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        Watch { stream }
    };
    // Every Link's scheduled refresh at once: 8 results over 3 replicas, 3 movements each.
    for link in &links {
        sim.scheduled_refresh(&link.link_id, 3);
    }
    let mut added: HashMap<String, Vec<String>> = HashMap::new();
    let mut complete = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while complete < 8 {
        assert!(tokio::time::Instant::now() < deadline, "{added:?}");
        match feed.next_event().await {
            Seen::Movements {
                account,
                added: ids,
                complete: done,
                ..
            } => {
                added.entry(account).or_default().extend(ids);
                complete += usize::from(done);
            }
            Seen::Result { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    // Racers that lost may still be settling: nothing more may come.
    match feed.try_next(Duration::from_secs(1)).await {
        None | Some(Ok(Seen::Heartbeat { .. })) => {}
        other => panic!("pushed again: {other:?}"),
    }
    for link in &links {
        for account in &link.account_ids {
            let ids = &added[account];
            let mut unique = ids.clone();
            unique.sort();
            unique.dedup();
            assert_eq!((ids.len(), unique.len()), (3, 3), "{account}: {ids:?}");
            assert_eq!(
                sim.movements_requests(account),
                1,
                "{account}: listed once, by one replica"
            );
        }
    }
}
