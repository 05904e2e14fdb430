//! Several replicas under the failures production really has, not only clean ones: a replica
//! frozen (SIGSTOP: its sockets and its locks stay) inside its commit or while it leads, a
//! crowd for one Link, a database that defaults to REPEATABLE READ, turns read-only, cancels
//! a statement, stops answering (a proxy that forwards nothing), or was rewound under the
//! replicas. Real `serve` processes and a real PostgreSQL; what each test proves is in its
//! doc comment. Waits are bounded conditions, never fixed sleeps.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fintoc_refresh::pb;
use fintoc_refresh::simulator::{Fault, LinkSpec, Outcome};
use tokio_util::sync::CancellationToken;
use tonic_health::pb::health_check_response::ServingStatus;

use crate::common::*;
use crate::proxy::{Proxy, upstream_of};
use crate::replicas::{
    Balancer, NO_FINTOC, Replica, account, eventually, health_of, log_of, simulator,
    until_completed,
};

mod support;

use support::{
    commit_continuously, database_of, not_ready, post, ready_again, readyz, sessions, sql,
    watch_readiness, with_param,
};

/// A replica frozen (SIGSTOP) inside its group commit, holding the log counter's lock with
/// its session `idle in transaction` (checked in pg_stat_activity and pg_locks), does not stop
/// the others: the server ends its session after its idle-in-transaction bound (10 s here,
/// from its `--request-timeout 100s`), and a webhook sent to the survivor meanwhile is
/// stored and acknowledged within the survivor's request timeout (200, not 408). While it
/// cannot commit, the survivor says so: /readyz 503 and gRPC health NOT_SERVING, then ready
/// again. Thawed, the frozen replica goes on; the log is gap-free with every acknowledged
/// event once. Before the fix the session kept the lock for as long as it was frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_frozen_inside_its_commit_loses_the_log_lock_and_the_others_carry_on() {
    let db = PgDb::create().await;
    let a = Replica::start(
        &with_param(&db.url, "application_name", "frozen-a"),
        NO_FINTOC,
        &["--request-timeout", "100s"],
    );
    let b = Replica::start(
        &with_param(&db.url, "application_name", "survivor-b"),
        NO_FINTOC,
        &[],
    );
    let http = reqwest::Client::new();
    for (r, id) in [(&a, "evt_warm_a"), (&b, "evt_warm_b")] {
        assert_eq!(post(&http, &r.http, id, "acc_frz").await, Some(200));
    }
    // Hold the counter's lock so that A's next commit waits for it, then freeze A there.
    let admin = sql(&db.url).await;
    admin
        .batch_execute("BEGIN; SELECT 1 FROM log_counter FOR UPDATE")
        .await
        .unwrap();
    let to_a = tokio::spawn({
        let (http, addr) = (http.clone(), a.http.clone());
        async move { post(&http, &addr, "evt_in_a", "acc_frz").await }
    });
    let observer = sql(&db.url).await;
    eventually("A's writer to wait for the counter's lock", || async {
        sessions(&observer, "frozen-a", "a.wait_event_type = 'Lock'").await == 1
    })
    .await;
    a.sigstop();
    admin.batch_execute("COMMIT").await.unwrap();
    let frozen_holding_the_lock = "a.state = 'idle in transaction' AND a.pid IN \
         (SELECT pid FROM pg_locks WHERE relation = 'log_counter'::regclass AND granted)";
    eventually("frozen A to hold the lock, idle in transaction", || async {
        sessions(&observer, "frozen-a", frozen_holding_the_lock).await == 1
    })
    .await;

    // The survivor's readiness while A is frozen, watched until the webhook is answered.
    let watching = CancellationToken::new();
    let watcher = watch_readiness(&http, &b, watching.clone());
    let started = Instant::now();
    let status = post(&http, &b.http, "evt_in_b", "acc_frz").await;
    let took = started.elapsed();
    watching.cancel();
    let (unready, not_serving) = watcher.await.unwrap();
    assert_eq!(
        status,
        Some(200),
        "a webhook on the survivor while A is frozen (after {took:?}); B said: {}",
        b.stderr()
    );
    assert!(
        took < Duration::from_secs(25),
        "acknowledged only after {took:?}"
    );
    assert!(
        unready,
        "/readyz said 200 throughout while B could not commit"
    );
    assert!(not_serving, "gRPC health said SERVING throughout");
    assert_eq!(
        sessions(&observer, "frozen-a", frozen_holding_the_lock).await,
        0,
        "the frozen session still holds the lock"
    );
    eventually("the survivor to be ready again", || async {
        readyz(&http, &b).await == Some(200)
            && health_of(&b).await == Some(ServingStatus::Serving as i32)
    })
    .await;

    a.sigcont();
    let a_status = to_a.await.unwrap();
    assert_eq!(
        post(&http, &a.http, "evt_after_a", "acc_frz").await,
        Some(200)
    );
    let log = log_of(&b, &["acc_frz"]).await;
    let seqs: Vec<u64> = log.keys().copied().collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gaps");
    let events: HashSet<&String> = log.values().collect();
    assert_eq!(events.len(), log.len(), "an event logged twice");
    for id in ["evt_warm_a", "evt_warm_b", "evt_in_b", "evt_after_a"] {
        assert!(events.contains(&id.to_owned()), "{id} is missing");
    }
    if a_status == Some(200) {
        assert!(
            events.contains(&"evt_in_a".to_owned()),
            "acknowledged evt_in_a is missing"
        );
    }
}

/// The replica leading the background work freezes: another takes over once its lease runs
/// out, and the work really runs there — an intent whose results never come, created after
/// the freeze, reaches TIMED_OUT. Thawed, the old leader does not lead too. Before the fix
/// the frozen leader kept its session lock, and nothing timed out anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_is_replaced_and_the_work_runs_on_the_new_leader() {
    let stop = CancellationToken::new();
    let balancer = Balancer::start(stop.clone()).await;
    let sim = simulator(&balancer.url, Duration::from_millis(50), &stop);
    let link = sim.add_link(LinkSpec::new(vec![Outcome::Silent, Outcome::Silent]));
    let db = PgDb::create().await;
    let flags = ["--reconcile-after", "1s", "--refresh-timeout", "3s"];
    let replicas = [
        Replica::start(&db.url, &sim.url(), &flags),
        Replica::start(&db.url, &sim.url(), &flags),
    ];
    for r in &replicas {
        balancer.add(r);
    }
    let http = reqwest::Client::new();
    let leading = async |r: &Replica| r.metric(&http, "fintoc_refresh_leader").await == Some(1.0);
    eventually("one leader", || async {
        leading(&replicas[0]).await != leading(&replicas[1]).await
    })
    .await;
    let leader = usize::from(!leading(&replicas[0]).await);
    let survivor = &replicas[1 - leader];
    replicas[leader].sigstop();

    let intent = survivor
        .client()
        .await
        .request_refresh(pb::RequestRefreshRequest {
            link_token: link.token.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .refresh_intent
        .unwrap();
    let mut watch = survivor
        .watch(
            pb::watch_refresh_request::Target::RefreshIntentId(intent.id.clone()),
            None,
        )
        .await;
    assert_eq!(
        until_completed(&mut watch).await,
        pb::RefreshStatus::TimedOut,
        "the intent timed out: the work ran on the survivor"
    );
    assert!(leading(survivor).await, "the survivor leads");

    replicas[leader].sigcont();
    eventually("exactly one leader after the thaw", || async {
        !leading(&replicas[leader]).await && leading(survivor).await
    })
    .await;
    stop.cancel();
}

/// 48 concurrent RequestRefresh calls for one Link on one replica whose pool has 4
/// connections, while Fintoc's create call takes 6 s: every caller gets the one intent (one
/// create call), and meanwhile the replica stays ready and acknowledges webhooks. Waiting
/// for the Link's turn holds no pooled connection. Before the fix each waiter held one, the
/// pool ran dry and callers got UNAVAILABLE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_for_one_link_gets_one_intent_without_draining_the_pool() {
    let stop = CancellationToken::new();
    let balancer = Balancer::start(stop.clone()).await;
    let sim = simulator(&balancer.url, Duration::from_secs(30), &stop);
    let link = sim.add_link(LinkSpec::new(vec![Outcome::Succeed { new_movements: 1 }]));
    sim.inject_on(
        "POST",
        "/v1/refresh_intents",
        Fault::Slow(Duration::from_secs(6)),
        1,
    );
    let db = PgDb::create().await;
    let replica = Replica::start(&db.url, &sim.url(), &["--database-pool-size", "4"]);
    let client = replica.client().await;
    let callers: Vec<_> = (0..48)
        .map(|_| {
            let (mut client, token) = (client.clone(), link.token.clone());
            tokio::spawn(async move {
                client
                    .request_refresh(pb::RequestRefreshRequest {
                        link_token: token,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner())
            })
        })
        .collect();
    let http = reqwest::Client::new();
    eventually("the create call to be under way", || async {
        sim.requests("POST", "/v1/refresh_intents") == 1
    })
    .await;
    for i in 0..10 {
        let id = format!("evt_crowd_{i}");
        assert_eq!(
            post(&http, &replica.http, &id, "acc_crowd").await,
            Some(200)
        );
        assert_eq!(readyz(&http, &replica).await, Some(200), "ready meanwhile");
    }
    let mut intents = HashSet::new();
    let mut joined = 0;
    for caller in callers {
        let answer = caller.await.unwrap().unwrap_or_else(|status| {
            panic!("a caller was refused: {status:?}; {}", replica.stderr())
        });
        intents.insert(answer.refresh_intent.unwrap().id);
        joined += usize::from(answer.joined_existing);
    }
    assert_eq!(intents.len(), 1, "one intent for everyone: {intents:?}");
    assert_eq!(joined, 47, "all but the first joined it");
    assert_eq!(sim.requests("POST", "/v1/refresh_intents"), 1);
    stop.cancel();
}

/// A database whose default isolation is REPEATABLE READ (a common setting) loses no
/// webhook: every transaction says the isolation it is written for, and conflicts are run
/// again. 900 webhooks from 24 senders over 3 replicas: all acknowledged, each logged once,
/// gap-free. Before the fix ~15% of them got a 5xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_defaulting_to_repeatable_read_loses_no_webhook() {
    let db = PgDb::create().await;
    sql(&db.url)
        .await
        .batch_execute(&format!(
            "ALTER DATABASE {} SET default_transaction_isolation = 'repeatable read'",
            database_of(&db.url)
        ))
        .await
        .unwrap();
    let replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::start(&db.url, NO_FINTOC, &[]))
        .collect();
    let http = reqwest::Client::new();
    let (senders, per_sender) = (24, 38);
    let targets: Arc<Vec<String>> = Arc::new(replicas.iter().map(|r| r.http.clone()).collect());
    let tasks: Vec<_> = (0..senders)
        .map(|s| {
            let (http, targets) = (http.clone(), targets.clone());
            tokio::spawn(async move {
                let mut refused = Vec::new();
                for i in 0..per_sender {
                    let id = format!("evt_rr_{s}_{i}");
                    let status = post(&http, &targets[(s + i) % 3], &id, "acc_rr").await;
                    if status != Some(200) {
                        refused.push(format!("{id}: {status:?}"));
                    }
                }
                refused
            })
        })
        .collect();
    let mut refused = Vec::new();
    for t in tasks {
        refused.extend(t.await.unwrap());
    }
    assert!(
        refused.is_empty(),
        "{} of {} refused, e.g. {:?}; {}",
        refused.len(),
        senders * per_sender,
        refused.first(),
        replicas[0].stderr()
    );
    let log = log_of(&replicas[1], &["acc_rr"]).await;
    assert_eq!(log.len(), senders * per_sender);
    assert_eq!(
        log.keys().copied().collect::<Vec<_>>(),
        (1..=log.len() as u64).collect::<Vec<_>>()
    );
}

/// A database that turns read-only under a running replica (a failover onto a standby, an
/// operator's `default_transaction_read_only`): webhooks get 503 (Fintoc retries), RPCs
/// UNAVAILABLE, /readyz 503 — never 500 or INTERNAL; once writable again it recovers without
/// a restart. Before the fix the read-only refusal was a 500 and an INTERNAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_turned_read_only_is_unavailable_never_internal() {
    let db = PgDb::create().await;
    let name = database_of(&db.url);
    let replica = Replica::start(&db.url, NO_FINTOC, &[]);
    let http = reqwest::Client::new();
    assert_eq!(
        post(&http, &replica.http, "evt_ro_1", "acc_ro").await,
        Some(200)
    );
    let admin = sql(&db.url).await;
    let reconnect_everyone = format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{name}' AND pid <> pg_backend_pid()"
    );
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET default_transaction_read_only = on; {reconnect_everyone}"
        ))
        .await
        .unwrap();
    let status = post(&http, &replica.http, "evt_ro_2", "acc_ro").await;
    assert_eq!(status, Some(503), "a webhook to a read-only database");
    not_ready(&http, &replica).await;
    let refused = replica
        .client()
        .await
        .request_refresh(pb::RequestRefreshRequest {
            link_token: "link_ro_token_x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");

    let admin = sql(&db.url).await;
    // A statement of its own: a transaction keeps the read-only state it began with.
    admin
        .batch_execute("SET default_transaction_read_only = off")
        .await
        .unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} RESET default_transaction_read_only; {reconnect_everyone}"
        ))
        .await
        .unwrap();
    eventually("webhooks to be stored again", || async {
        post(&http, &replica.http, "evt_ro_2", "acc_ro").await == Some(200)
    })
    .await;
    ready_again(&http, &replica).await;
}

/// A statement of the writer cancelled by the server (an operator's pg_cancel_backend, as
/// a statement timeout would) while it waits for the counter's lock is retried on a fresh
/// connection: the webhook is acknowledged, not answered 500. Before the fix the unknown
/// error failed the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_statement_is_retried_not_a_500() {
    let db = PgDb::create().await;
    let replica = Replica::start(
        &with_param(&db.url, "application_name", "cancelled"),
        NO_FINTOC,
        &[],
    );
    let http = reqwest::Client::new();
    assert_eq!(
        post(&http, &replica.http, "evt_c_1", "acc_c").await,
        Some(200)
    );
    let admin = sql(&db.url).await;
    admin
        .batch_execute("BEGIN; SELECT 1 FROM log_counter FOR UPDATE")
        .await
        .unwrap();
    let posted = tokio::spawn({
        let (http, addr) = (http.clone(), replica.http.clone());
        async move { post(&http, &addr, "evt_c_2", "acc_c").await }
    });
    let observer = sql(&db.url).await;
    eventually("the writer to wait for the counter's lock", || async {
        sessions(&observer, "cancelled", "a.wait_event_type = 'Lock'").await == 1
    })
    .await;
    observer
        .batch_execute(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'cancelled' AND wait_event_type = 'Lock'",
        )
        .await
        .unwrap();
    admin.batch_execute("COMMIT").await.unwrap();
    assert_eq!(posted.await.unwrap(), Some(200), "{}", replica.stderr());
    let log = log_of(&replica, &["acc_c"]).await;
    assert_eq!(log.len(), 2);
}

/// A database that stops answering (a proxy that forwards nothing and closes nothing:
/// packets dropped, no RST): every caller gets a clear status within its deadline instead of
/// waiting for ever — 40 concurrent webhooks each a 503 (not a 408) within the 6 s request
/// timeout (the whole batch fails at once, not job by job), /readyz 503, gRPC health
/// NOT_SERVING, RequestRefresh and GetRefresh UNAVAILABLE; forwarding again, it recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_database_answers_every_caller_in_time() {
    let db = PgDb::create().await;
    let proxy = Proxy::start(upstream_of(&db.url)).await;
    let replica = Replica::start(&proxy.url(&db.url), NO_FINTOC, &["--request-timeout", "6s"]);
    let http = reqwest::Client::new();
    assert_eq!(
        post(&http, &replica.http, "evt_bh_0", "acc_bh").await,
        Some(200)
    );
    let known = replica
        .client()
        .await
        .get_refresh(pb::GetRefreshRequest {
            refresh_intent_id: "ri_unknown".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(known.code(), tonic::Code::NotFound);

    proxy.freeze();
    let started = Instant::now();
    let posts: Vec<_> = (0..40)
        .map(|i| {
            let (http, addr) = (http.clone(), replica.http.clone());
            tokio::spawn(async move {
                let status = post(&http, &addr, &format!("evt_bh_{}", i + 1), "acc_bh").await;
                (status, started.elapsed())
            })
        })
        .collect();
    for p in posts {
        let (status, took) = p.await.unwrap();
        assert_eq!(status, Some(503), "after {took:?}; {}", replica.stderr());
        assert!(took < Duration::from_secs(6), "answered after {took:?}");
    }
    not_ready(&http, &replica).await;
    eventually("gRPC health to say NOT_SERVING", || async {
        health_of(&replica).await == Some(ServingStatus::NotServing as i32)
    })
    .await;
    let mut client = replica.client().await;
    let asked = Instant::now();
    let refresh = client
        .request_refresh(pb::RequestRefreshRequest {
            link_token: "link_bh_token_x".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refresh.code(), tonic::Code::Unavailable, "{refresh:?}");
    let get = client
        .get_refresh(pb::GetRefreshRequest {
            refresh_intent_id: "ri_unknown".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(get.code(), tonic::Code::Unavailable, "{get:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(12),
        "{:?}",
        asked.elapsed()
    );

    proxy.thaw();
    eventually("webhooks to be stored again", || async {
        post(&http, &replica.http, "evt_bh_back", "acc_bh").await == Some(200)
    })
    .await;
    ready_again(&http, &replica).await;
}

/// The log rewound under a running replica (a failover that lost commits, a restored
/// backup: here results 2 and 3 deleted and the counter set back to 1): the replica stops
/// (exit non-zero) with a line that says so, after moving the counter past every sequence
/// it handed out, so no sequence is ever handed out twice: a watcher's cursor 3 resumes on
/// a new replica with the next new result. Before the fix the replica went on and gave the
/// next result sequence 2, which the watcher at 3 never saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewound_log_stops_the_replica_and_no_sequence_is_handed_out_twice() {
    let db = PgDb::create().await;
    let mut a = Replica::start(&db.url, NO_FINTOC, &[]);
    let http = reqwest::Client::new();
    for i in 1..=3 {
        let id = format!("evt_rw_{i}");
        assert_eq!(post(&http, &a.http, &id, "acc_rw").await, Some(200));
    }
    assert_eq!(log_of(&a, &["acc_rw"]).await.len(), 3);
    let admin = sql(&db.url).await;
    admin
        .batch_execute("DELETE FROM results WHERE sequence > 1; UPDATE log_counter SET newest = 1")
        .await
        .unwrap();
    let _ = post(&http, &a.http, "evt_rw_4", "acc_rw").await;
    let exited = a.exited_within(Duration::from_secs(15));
    assert!(
        exited.is_some_and(|s| !s.success()),
        "the replica went on serving a rewound log: {exited:?}"
    );
    assert!(a.stderr().contains("rewound"), "{}", a.stderr());
    let counter: i64 = admin
        .query_one("SELECT newest FROM log_counter", &[])
        .await
        .unwrap()
        .get(0);
    assert!(counter >= 3, "the counter was left at {counter}");

    let b = Replica::start(&db.url, NO_FINTOC, &[]);
    let mut resumed = b.watch(account("acc_rw"), Some(3)).await;
    assert_eq!(post(&http, &b.http, "evt_rw_5", "acc_rw").await, Some(200));
    loop {
        match resumed.next_event().await {
            Seen::Result { seq, event, .. } => {
                assert!(seq > 3, "sequence {seq} handed out twice");
                if event == "evt_rw_5" {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
    }
    let reused: i64 = admin
        .query_one("SELECT count(*) FROM results WHERE sequence IN (2, 3)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reused, 0, "a rewound sequence was handed out again");
}

/// A replica's hub starts where its log tail starts, never at a later read of the log: a
/// stream resumed right after the start is never told of a cursor (a heartbeat, the hub's
/// high water) past what it can be given. Replicas start while another commits
/// continuously, their log tail slow to connect (their direct URL, which the tail listens
/// on, goes through a proxy that holds new connections for a second): right after each
/// start the hub's high water is at most what the store has handed to it. Before the fix the
/// hub started at a second read of the counter, taken after the tail's, and was ahead
/// whenever a commit fell in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_starts_its_hub_where_its_log_tail_starts() {
    use fintoc_refresh::app::App;
    use fintoc_refresh::config::Config;
    let db = Arc::new(PgDb::create().await);
    let busy = TestServer::with(Options {
        backend: Backend::Postgres,
        pg: Some(db.clone()),
        ..Options::default()
    })
    .await;
    let stop = CancellationToken::new();
    let writers = commit_continuously(&busy.app.store, 4, &stop);
    let slow = Proxy::start(upstream_of(&db.url)).await;
    slow.delay_new_connections(Duration::from_millis(700));
    let mut ahead = Vec::new();
    for _ in 0..6 {
        let mut config = Config::new(db.url.clone(), NO_FINTOC);
        config.database_direct_url = Some(slow.url(&db.url));
        let app = App::start(config).await.unwrap();
        let (hub, published) = (
            app.hub.high_water(),
            app.store.published_through().await.unwrap(),
        );
        app.store.close().await;
        if hub > published {
            ahead.push((hub, published));
        }
    }
    stop.cancel();
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        ahead.is_empty(),
        "hubs started past what their store handed over: {ahead:?}"
    );
}
