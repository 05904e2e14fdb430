//! Several replicas on one PostgreSQL database: real `serve` processes (the binary), each on
//! port 0, sharing a fresh database, called over real HTTP and gRPC. What they prove:
//! one global log every replica streams in the same order, cursors that move between
//! replicas, "once" across replicas (dedupe, single flight, held events, background work),
//! and no acknowledged event lost when a replica is SIGKILLed under load.
//!
//! These processes run on the system clock (a manual clock cannot cross processes): the
//! tests wait for conditions with a deadline, never for a fixed time.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fintoc_refresh::clock::system_now_ms;
use fintoc_refresh::fintoc::signature;
use fintoc_refresh::pb;
use fintoc_refresh::simulator::Fault;

use crate::common::*;
use crate::private_pg::PrivatePostgres;

mod feeds;
mod movements;
mod support;

pub use support::{
    Balancer, NO_FINTOC, Replica, account, eventually, health_at, health_of, log_of, simulator,
    until_completed,
};
use support::{Cluster, link_states};

/// Every replica's watcher of one account sees exactly its range of the log, in order, with
/// the same event at each sequence, while six senders post to three replicas at once: commit
/// order is sequence order cluster-wide, so no reader ever steps over a sequence still to
/// come. The log is not empty when the replicas start (60 results from an earlier one), the
/// watchers start from 0, from a cursor inside the old part, and from now; and the senders
/// send far more than `--watch-buffer` (16) before anyone reads, through HTTP/2 windows that
/// hold a few dozen messages, so every watcher lags, its mailbox overflows, and it catches
/// up from the database (capped at what its replica's
/// tail has published) while the rest still arrives live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_three_replicas_make_one_gap_free_log_every_watcher_sees() {
    let db = PgDb::create().await;
    let http = reqwest::Client::new();
    let before = 60u64;
    {
        let earlier = Replica::start(&db.url, NO_FINTOC, &[]);
        for i in 0..before {
            let body = event(
                &format!("evt_old_{i}"),
                "acc_ord",
                "succeeded",
                system_now_ms(),
            );
            assert_eq!(earlier.post(&http, &body).await.unwrap().0, 200);
        }
    }
    let replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::start(&db.url, NO_FINTOC, &["--watch-buffer", "16"]))
        .collect();
    let starts = [Some(0), Some(25), None];
    let mut watchers = Vec::new();
    for (r, after) in replicas.iter().zip(starts) {
        let mut w = Watch::over(r.slow_client().await, account("acc_ord"), after).await;
        if after.is_none() {
            assert!(matches!(w.next().await, Seen::Heartbeat { seq } if seq == before));
        }
        watchers.push(w);
    }
    let (senders, per_sender) = (6, 40);
    let mut tasks = Vec::new();
    for s in 0..senders {
        let (http, targets) = (
            http.clone(),
            replicas.iter().map(|r| r.http.clone()).collect::<Vec<_>>(),
        );
        tasks.push(tokio::spawn(async move {
            for i in 0..per_sender {
                let body = event(
                    &format!("evt_ord_{s}_{i}"),
                    "acc_ord",
                    "succeeded",
                    system_now_ms(),
                );
                let header = signature::header(SECRET, system_now_ms() / 1000, body.as_bytes());
                let status = http
                    .post(format!("http://{}/webhooks/fintoc", targets[(s + i) % 3]))
                    .header("Fintoc-Signature", header)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status();
                if status != 200 {
                    return Err(format!("evt_ord_{s}_{i}: {status}"));
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        if let Err(refused) = t.await.unwrap() {
            let logs: Vec<String> = replicas.iter().map(Replica::stderr).collect();
            panic!("{refused}; the replicas said: {logs:#?}");
        }
    }
    let n = before + (senders * per_sender) as u64;
    let mut logs = Vec::new();
    for (w, after) in watchers.iter_mut().zip(starts) {
        let first = after.unwrap_or(before) + 1;
        let mut seen = Vec::new();
        while seen.len() < (n + 1 - first) as usize {
            if let Seen::Result { seq, event, .. } = w.next_event().await {
                seen.push((seq, event));
            }
        }
        let seqs: Vec<u64> = seen.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs,
            (first..=n).collect::<Vec<_>>(),
            "gaps, repeats or disorder"
        );
        logs.push(seen);
    }
    let tail = |log: &[(u64, String)]| -> Vec<(u64, String)> {
        log.iter().filter(|(s, _)| *s > before).cloned().collect()
    };
    assert!(
        logs.windows(2).all(|w| tail(&w[0]) == tail(&w[1])),
        "replicas disagree on the log"
    );
    let ids: HashSet<&String> = logs[0].iter().map(|(_, e)| e).collect();
    assert_eq!(ids.len() as u64, n, "every event once");
    for r in &replicas {
        let lagged = r.metric(&http, "fintoc_refresh_watch_lagged_total").await;
        assert!(
            lagged.is_some_and(|n| n >= 1.0),
            "the watcher never lagged: {lagged:?}"
        );
    }
}

/// A watcher that moves from one replica to another with its cursor neither misses nor
/// repeats a result: a result's sequence and a heartbeat's are both safe cursors on any
/// replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_taken_on_one_replica_resumes_on_another_exactly() {
    let db = PgDb::create().await;
    let (a, b) = (
        Replica::start(&db.url, NO_FINTOC, &[]),
        Replica::start(&db.url, NO_FINTOC, &[]),
    );
    let http = reqwest::Client::new();
    for i in 0..10 {
        let body = event(
            &format!("evt_mv_{i}"),
            "acc_mv",
            "succeeded",
            system_now_ms(),
        );
        assert_eq!(a.post(&http, &body).await.unwrap().0, 200);
    }
    let mut on_a = a.watch(account("acc_mv"), Some(0)).await;
    for expected in 1..=5 {
        assert_eq!(on_a.next_event().await.seq(), expected);
    }
    drop(on_a);
    let mut on_b = b.watch(account("acc_mv"), Some(5)).await;
    for expected in 6..=10 {
        assert_eq!(on_b.next_event().await.seq(), expected);
    }
    // A heartbeat cursor from A, then results written through B: resuming on B after the
    // heartbeat gets exactly those.
    let mut live = a.watch(account("acc_mv"), None).await;
    let Seen::Heartbeat { seq: cursor } = live.next().await else {
        panic!("a feed from now opens with a heartbeat");
    };
    assert_eq!(cursor, 10);
    for i in 10..13 {
        let body = event(&format!("evt_mv_{i}"), "acc_mv", "failed", system_now_ms());
        assert_eq!(b.post(&http, &body).await.unwrap().0, 200);
    }
    let mut resumed = b.watch(account("acc_mv"), Some(cursor)).await;
    for expected in 11..=13 {
        assert_eq!(resumed.next_event().await.seq(), expected);
        assert_eq!(live.next_event().await.seq(), expected);
    }
    let next = resumed.try_next(Duration::from_millis(500)).await;
    assert!(
        matches!(next, None | Some(Ok(Seen::Heartbeat { .. }))),
        "nothing repeated: {next:?}"
    );
}

/// Fintoc's retry of one event landing on two replicas at once is stored once and pushed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_delivered_to_two_replicas_is_stored_and_pushed_once() {
    let db = PgDb::create().await;
    let (a, b) = (
        Replica::start(&db.url, NO_FINTOC, &[]),
        Replica::start(&db.url, NO_FINTOC, &[]),
    );
    let mut feed = b.watch(account("acc_dup"), None).await;
    feed.next().await;
    let http = reqwest::Client::new();
    let body = event("evt_twice", "acc_dup", "succeeded", system_now_ms());
    let (first, second) = tokio::join!(a.post(&http, &body), b.post(&http, &body));
    let replies = [first.unwrap(), second.unwrap()];
    assert!(replies.iter().all(|(s, _)| *s == 200), "{replies:?}");
    let stored = replies.iter().filter(|(_, r)| r.contains("stored")).count();
    let duplicate = replies
        .iter()
        .filter(|(_, r)| r.contains("duplicate"))
        .count();
    assert_eq!((stored, duplicate), (1, 1), "{replies:?}");
    assert_eq!(feed.next_event().await.seq(), 1);
    let more = feed.try_next(Duration::from_millis(500)).await;
    assert!(
        matches!(more, None | Some(Ok(Seen::Heartbeat { .. }))),
        "pushed once: {more:?}"
    );
}

/// Concurrent RequestRefresh calls for one Link on three replicas make one POST to Fintoc;
/// the others join it. The create call is slowed so all three overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_link_on_three_replicas_make_one_create_call() {
    // Results come 2 s after the create: the intent is still pending when the others join
    // (once it has succeeded they would get the cooldown instead, rightly).
    let cluster = Cluster::start(3, Duration::from_secs(2), 1).await;
    let (stop, balancer, sim, link, replicas) = cluster.parts();
    for r in replicas {
        balancer.add(r);
    }
    sim.inject_on(
        "POST",
        "/v1/refresh_intents",
        Fault::Slow(Duration::from_millis(500)),
        1,
    );
    let mut calls = Vec::new();
    for r in replicas {
        let mut client = r.client().await;
        let token = link.token.clone();
        calls.push(tokio::spawn(async move {
            client
                .request_refresh(pb::RequestRefreshRequest {
                    link_token: token,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner())
        }));
    }
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap().expect("every replica answers"));
    }
    assert_eq!(
        sim.requests("POST", "/v1/refresh_intents"),
        1,
        "one create call"
    );
    let ids: HashSet<String> = answers
        .iter()
        .map(|a| a.refresh_intent.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(ids.len(), 1, "one intent: {answers:?}");
    let joined = answers.iter().filter(|a| a.joined_existing).count();
    assert_eq!(joined, 2, "{answers:?}");
    // Its result reaches the intent's watcher on a replica that made no call.
    let id = ids.into_iter().next().unwrap();
    let mut watch = replicas[2]
        .watch(pb::watch_refresh_request::Target::RefreshIntentId(id), None)
        .await;
    assert_eq!(
        until_completed(&mut watch).await,
        pb::RefreshStatus::Succeeded
    );
    stop.cancel();
}

/// An account event landing on replica B while replica A's create call is still in flight
/// is held (the create mark is a row every replica sees), then attributed to A's intent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_on_one_replica_during_a_create_on_another_is_held_then_attributed() {
    // Fintoc's own deliveries come long after the test: only the event posted here counts.
    let cluster = Cluster::start(2, Duration::from_secs(600), 2).await;
    let (stop, balancer, sim, link, replicas) = cluster.parts();
    let (a, b) = (&replicas[0], &replicas[1]);
    balancer.add(a);
    sim.inject_on(
        "POST",
        "/v1/refresh_intents",
        Fault::Slow(Duration::from_secs(2)),
        1,
    );
    let mut client = a.client().await;
    let token = link.token.clone();
    let call = tokio::spawn(async move {
        client
            .request_refresh(pb::RequestRefreshRequest {
                link_token: token,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    });
    eventually("the create call to reach Fintoc", || async {
        sim.requests("POST", "/v1/refresh_intents") == 1
    })
    .await;
    let http = reqwest::Client::new();
    let account_id = &link.account_ids[0];
    // Fintoc's result for the intent being created (dated after it).
    let body = event(
        "evt_early",
        account_id,
        "succeeded",
        system_now_ms() + 5_000,
    );
    let (status, reply) = b.post(&http, &body).await.unwrap();
    assert_eq!((status, reply.contains("held")), (200, true), "{reply}");
    let answer = call.await.unwrap().expect("the create succeeds");
    let intent = answer.refresh_intent.unwrap();
    let mut watch = b
        .watch(
            pb::watch_refresh_request::Target::RefreshIntentId(intent.id.clone()),
            Some(0),
        )
        .await;
    match watch.next_event().await {
        Seen::Result {
            event, intent: of, ..
        } => {
            assert_eq!(
                (event.as_str(), of.as_str()),
                ("evt_early", intent.id.as_str())
            );
        }
        other => panic!("expected the held result, got {other:?}"),
    }
    stop.cancel();
}

/// Background work runs on one replica (the one holding the leader lock) and moves to
/// another when that one dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_work_has_one_leader_and_moves_when_it_dies() {
    let db = PgDb::create().await;
    let mut replicas = vec![
        Replica::start(&db.url, NO_FINTOC, &[]),
        Replica::start(&db.url, NO_FINTOC, &[]),
    ];
    let http = reqwest::Client::new();
    let leaders = async |replicas: &[Replica]| {
        let mut out = Vec::new();
        for r in replicas {
            out.push(r.metric(&http, "fintoc_refresh_leader").await == Some(1.0));
        }
        out
    };
    eventually("one leader", || async {
        leaders(&replicas).await.iter().filter(|l| **l).count() == 1
    })
    .await;
    let leader = leaders(&replicas).await.iter().position(|l| *l).unwrap();
    replicas[leader].sigkill();
    let survivor = [replicas.remove(1 - leader)];
    eventually("the survivor to take over", || async {
        leaders(&survivor).await == [true]
    })
    .await;
}

/// SIGKILL of a replica under load loses no acknowledged event: every event either replica
/// answered 2xx is in the log exactly once, and the log is gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_replica_under_load_loses_no_acknowledged_event() {
    let db = PgDb::create().await;
    let mut a = Replica::start(&db.url, NO_FINTOC, &[]);
    let b = Replica::start(&db.url, NO_FINTOC, &[]);
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for s in 0..8 {
        let (http, acked) = (http.clone(), acked.clone());
        let targets = [a.http.clone(), b.http.clone()];
        tasks.push(tokio::spawn(async move {
            for i in 0..60 {
                let id = format!("evt_kill_{s}_{i}");
                let body = event(
                    &id,
                    &format!("acc_k{}", s % 3),
                    "succeeded",
                    system_now_ms(),
                );
                let header = signature::header(SECRET, system_now_ms() / 1000, body.as_bytes());
                let sent = http
                    .post(format!("http://{}/webhooks/fintoc", targets[(s + i) % 2]))
                    .header("Fintoc-Signature", header)
                    .body(body)
                    .send()
                    .await;
                if let Ok(r) = sent
                    && r.status() == 200
                {
                    acked.lock().unwrap().push(id);
                }
            }
        }));
    }
    eventually("some load to be acknowledged", || async {
        acked.lock().unwrap().len() >= 60
    })
    .await;
    a.sigkill();
    for t in tasks {
        t.await.unwrap();
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    let seen = log_of(&b, &["acc_k0", "acc_k1", "acc_k2"]).await;
    let logged: HashSet<&String> = seen.values().collect();
    assert_eq!(logged.len(), seen.len(), "an event logged twice");
    for id in &acked {
        assert!(logged.contains(id), "acknowledged {id} is missing");
    }
    let seqs: Vec<u64> = seen.keys().copied().collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "gaps in the log"
    );
    assert!(
        acked.len() > 60,
        "the load went on through B after the kill"
    );
    let _ = b.stderr();
}

/// PostgreSQL stopped under two replicas: webhooks get 5xx (Fintoc retries), /readyz 503,
/// gRPC health NOT_SERVING, RequestRefresh UNAVAILABLE, and an open watch stream waits;
/// started again, both replicas recover by themselves and the stream goes on from where it
/// was, nothing skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_ride_out_a_postgres_restart_without_a_restart_of_their_own() {
    use tonic_health::pb::health_check_response::ServingStatus;
    let pg = PrivatePostgres::start();
    pg.execute("postgres", "CREATE DATABASE refresh").await;
    let url = pg.url("refresh");
    let (a, b) = (
        Replica::start(&url, NO_FINTOC, &[]),
        Replica::start(&url, NO_FINTOC, &[]),
    );
    let http = reqwest::Client::new();
    let mut feed = a.watch(account("acc_pg"), None).await;
    feed.next().await;
    let first = event("evt_pg_1", "acc_pg", "succeeded", system_now_ms());
    assert_eq!(b.post(&http, &first).await.unwrap().0, 200);
    assert_eq!(feed.next_event().await.seq(), 1);

    pg.ctl("stop");
    let down = event("evt_pg_down", "acc_pg", "succeeded", system_now_ms());
    for r in [&a, &b] {
        let (status, _) = r.post(&http, &down).await.unwrap();
        assert!(
            status >= 500,
            "a webhook while PostgreSQL is down: {status}"
        );
        let ready = http
            .get(format!("http://{}/readyz", r.http))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(ready, 503);
        eventually("gRPC health to say NOT_SERVING", || async {
            health_of(r).await == Some(ServingStatus::NotServing as i32)
        })
        .await;
        let refused = r
            .client()
            .await
            .request_refresh(pb::RequestRefreshRequest {
                link_token: "link_x_token_y".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    }
    // The stream waits (heartbeats only) rather than skipping or failing.
    let waiting = feed.try_next(Duration::from_millis(500)).await;
    assert!(
        matches!(waiting, None | Some(Ok(Seen::Heartbeat { seq: 1 }))),
        "{waiting:?}"
    );

    pg.ctl("start");
    for r in [&a, &b] {
        eventually("webhooks to be stored again", || async {
            let body = event(
                &format!("evt_pg_up_{}", r.http),
                "acc_pg",
                "failed",
                system_now_ms(),
            );
            r.post(&http, &body).await.map(|(s, _)| s) == Some(200)
        })
        .await;
        eventually("gRPC health to say SERVING", || async {
            health_of(r).await == Some(ServingStatus::Serving as i32)
        })
        .await;
    }
    // Fintoc retries the event refused during the outage: it is stored now.
    assert_eq!(a.post(&http, &down).await.unwrap().0, 200);
    let mut after: Vec<u64> = Vec::new();
    while after.len() < 3 {
        after.push(feed.next_event().await.seq());
    }
    assert_eq!(
        after,
        vec![2, 3, 4],
        "the stream goes on with nothing skipped"
    );
}

/// Idempotency keys and cooldowns hold across replicas: a key used on A returns the same
/// intent on B without a second create call, and once the refresh has succeeded a new
/// request on a third replica is refused with the cooldown, naming that intent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_and_cooldowns_are_shared_by_every_replica() {
    let cluster = Cluster::start(3, Duration::from_millis(50), 1).await;
    let (stop, balancer, sim, link, replicas) = cluster.parts();
    balancer.add(&replicas[0]);
    let ask = |key: &str| pb::RequestRefreshRequest {
        link_token: link.token.clone(),
        idempotency_key: key.to_owned(),
        ..Default::default()
    };
    let first = replicas[0]
        .client()
        .await
        .request_refresh(ask("key-1"))
        .await
        .unwrap()
        .into_inner();
    let intent = first.refresh_intent.unwrap();
    let again = replicas[1]
        .client()
        .await
        .request_refresh(ask("key-1"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.refresh_intent.unwrap().id, intent.id);
    assert!(!again.joined_existing, "answered as first answered");
    assert_eq!(sim.requests("POST", "/v1/refresh_intents"), 1);
    let mut watch = replicas[1]
        .watch(
            pb::watch_refresh_request::Target::RefreshIntentId(intent.id.clone()),
            None,
        )
        .await;
    assert_eq!(
        until_completed(&mut watch).await,
        pb::RefreshStatus::Succeeded
    );
    let refused = replicas[2]
        .client()
        .await
        .request_refresh(ask("key-2"))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains(&intent.id),
        "{}",
        refused.message()
    );
    assert_eq!(
        sim.requests("POST", "/v1/refresh_intents"),
        1,
        "no call to Fintoc"
    );
    // Every replica tells the same Link state: the cooldown RequestRefresh just answered,
    // to the same end, and the account's result at the same sequence.
    let states = link_states(replicas, &link.link_id).await;
    assert!(
        states.iter().all(|s| s.0 == "REFRESH_COOLDOWN"),
        "{states:?}"
    );
    assert!(states.windows(2).all(|w| w[0] == w[1]), "{states:?}");
    stop.cancel();
}
