//! The webhook intake: signatures, limits, dedupe, durability across restarts; on both
//! backends, except what only a SQLite file has (its one-process lock).

use crate::common::*;
use fintoc_refresh::fintoc::signature;
use fintoc_refresh::pb::RefreshStatus;

on_both_backends!(signed_event_is_stored_and_pushed_to_intent_link_and_account_watchers);
async fn signed_event_is_stored_and_pushed_to_intent_link_and_account_watchers(backend: Backend) {
    let server = TestServer::on(backend).await;
    server
        .create_intent("ri_1", "link_1", &["acc_1", "acc_2"])
        .await;
    let mut by_intent = server.watch(intent_target("ri_1"), None).await;
    let mut by_link = server.watch(link_target("link_1"), None).await;
    let mut by_account = server.watch(account_target("acc_1"), None).await;
    // Feeds "from now" open with a heartbeat carrying their start cursor.
    assert_eq!(by_link.next().await, Seen::Heartbeat { seq: 0 });
    assert_eq!(by_account.next().await, Seen::Heartbeat { seq: 0 });

    let now = server.clock.now_ms();
    let (status, body) = server
        .post_event(&event("evt_1", "acc_1", "succeeded", now + 1000))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"stored\""), "{body}");

    let expected = Seen::Result {
        seq: 1,
        account: "acc_1".into(),
        intent: "ri_1".into(),
        event: "evt_1".into(),
        status: RefreshStatus::Succeeded,
    };
    assert_eq!(by_intent.next_event().await, expected);
    assert_eq!(by_link.next_event().await, expected);
    assert_eq!(by_account.next_event().await, expected);

    // The intent stream ends after its last expected account, with the final intent.
    server
        .post_event(&event("evt_2", "acc_2", "failed", now + 2000))
        .await;
    assert!(matches!(
        by_intent.next_event().await,
        Seen::Result { seq: 2, .. }
    ));
    assert_eq!(
        by_intent.next_event().await,
        Seen::Completed {
            seq: 2,
            status: RefreshStatus::Failed
        }
    );
    assert_eq!(by_intent.end().await.code(), tonic::Code::Ok);
    assert!(matches!(
        by_link.next_event().await,
        Seen::Result { seq: 2, .. }
    ));

    let got = server
        .client()
        .await
        .get_refresh(fintoc_refresh::pb::GetRefreshRequest {
            refresh_intent_id: "ri_1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .refresh_intent
        .unwrap();
    assert_eq!(got.status(), RefreshStatus::Failed);
    assert_eq!(got.accounts.len(), 2);
    assert_eq!(got.accounts[0].status(), RefreshStatus::Succeeded);
    assert_eq!(got.accounts[1].status(), RefreshStatus::Failed);
    assert!(got.completed_at.is_some());
}

on_both_backends!(a_duplicate_is_acknowledged_stored_once_and_pushed_once);
async fn a_duplicate_is_acknowledged_stored_once_and_pushed_once(backend: Backend) {
    let server = TestServer::on(backend).await;
    let mut feed = server.watch(account_target("acc_1"), None).await;
    feed.next().await;
    let body = event("evt_dup", "acc_1", "succeeded", server.clock.now_ms());
    let (first, _) = server.post_event(&body).await;
    let (second, reply) = server.post_event(&body).await;
    assert_eq!((first, second), (200, 200));
    assert!(reply.contains("duplicate"), "{reply}");
    assert!(matches!(
        feed.next_event().await,
        Seen::Result { seq: 1, .. }
    ));
    // Anything after it is the next event, not the duplicate.
    server
        .post_event(&event(
            "evt_next",
            "acc_1",
            "succeeded",
            server.clock.now_ms(),
        ))
        .await;
    assert!(
        matches!(feed.next_event().await, Seen::Result { seq: 2, ref event, .. } if event == "evt_next")
    );
    let counts = server.counts().await;
    assert_eq!((counts.webhook_events, counts.results), (2, 2));
}

on_both_backends!(bad_signatures_get_401_and_change_nothing);
async fn bad_signatures_get_401_and_change_nothing(backend: Backend) {
    let server = TestServer::on(backend).await;
    let mut feed = server.watch(account_target("acc_1"), None).await;
    feed.next().await;
    let body = event("evt_bad", "acc_1", "succeeded", server.clock.now_ms());
    let now = server.now_secs();
    let cases = [
        (
            "wrong secret",
            Some(signature::header("whsec_other", now, body.as_bytes())),
        ),
        (
            "stale",
            Some(signature::header(SECRET, now - 301, body.as_bytes())),
        ),
        (
            "future",
            Some(signature::header(SECRET, now + 301, body.as_bytes())),
        ),
        ("missing header", None),
        ("garbage header", Some("nonsense".to_owned())),
        (
            "signature of another body",
            Some(signature::header(SECRET, now, b"{}")),
        ),
    ];
    for (name, header) in cases {
        let (status, reply) = server.post(&body, header).await;
        assert_eq!(status, 401, "{name}: {reply}");
        assert!(!reply.contains(SECRET), "{name}");
    }
    let counts = server.counts().await;
    assert_eq!(
        (counts.webhook_events, counts.results),
        (0, 0),
        "nothing stored"
    );
    assert!(
        feed.try_next(std::time::Duration::from_millis(200))
            .await
            .is_none(),
        "nothing pushed"
    );
    // A rejected event id is still accepted later when correctly signed.
    let (status, _) = server.post_event(&body).await;
    assert_eq!(status, 200);
    assert!(
        matches!(feed.next_event().await, Seen::Result { ref event, .. } if event == "evt_bad")
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(r#"outcome="rejected_signature""#),
        "{metrics}"
    );
}

on_both_backends!(bodies_over_the_limit_get_413_and_exactly_the_limit_is_accepted);
async fn bodies_over_the_limit_get_413_and_exactly_the_limit_is_accepted(backend: Backend) {
    let limit = 600;
    let server = TestServer::with(Options {
        backend,
        tune: Some(Box::new(move |c| c.max_body_bytes = limit)),
        ..Options::default()
    })
    .await;
    let base = event("evt_big", "acc_1", "succeeded", server.clock.now_ms());
    // Pad inside the JSON with spaces so the body stays valid.
    let exact = format!("{}{}", base, " ".repeat(limit - base.len()));
    assert_eq!(exact.len(), limit);
    assert_eq!(server.post_event(&exact).await.0, 200);
    let over = format!("{} ", exact);
    let (status, reply) = server.post_event(&over).await;
    assert_eq!(status, 413, "{reply}");
    assert_eq!(server.counts().await.webhook_events, 1);
}

on_both_backends!(unknown_types_and_unparseable_bodies_are_kept_acknowledged_and_never_pushed);
async fn unknown_types_and_unparseable_bodies_are_kept_acknowledged_and_never_pushed(
    backend: Backend,
) {
    let server = TestServer::on(backend).await;
    let mut feed = server.watch(account_target("acc_1"), None).await;
    feed.next().await;
    let other = r#"{"id":"evt_o","type":"link.credentials_changed","data":{"id":"link_1"}}"#;
    let (status, reply) = server.post_event(other).await;
    assert_eq!(status, 200);
    assert!(reply.contains("ignored"), "{reply}");
    let (status, reply) = server.post_event("this is not json").await;
    assert_eq!(status, 200);
    assert!(reply.contains("unparseable"), "{reply}");
    // Stored once even when Fintoc retries the same bytes.
    assert_eq!(server.post_event("this is not json").await.0, 200);
    let broken = r#"{"id":"evt_b","type":"account.refresh_intent.succeeded","data":{}}"#;
    assert_eq!(server.post_event(broken).await.0, 200);
    let counts = server.counts().await;
    assert_eq!((counts.webhook_events, counts.results), (3, 0));
    assert!(
        feed.try_next(std::time::Duration::from_millis(200))
            .await
            .is_none()
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(r#"event_type="unparseable",outcome="unparseable""#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"event_type="link.credentials_changed",outcome="ignored""#),
        "{metrics}"
    );
}

on_both_backends!(a_restart_on_the_same_store_keeps_everything_and_sequences_keep_increasing);
async fn a_restart_on_the_same_store_keeps_everything_and_sequences_keep_increasing(
    backend: Backend,
) {
    let server = TestServer::on(backend).await;
    server
        .create_intent("ri_1", "link_1", &["acc_1", "acc_2"])
        .await;
    let now = server.clock.now_ms();
    for (i, acc) in ["acc_1", "acc_3"].iter().enumerate() {
        server
            .post_event(&event(&format!("evt_{i}"), acc, "succeeded", now + 1))
            .await;
    }
    let kept = server.stop_keep_store().await;

    // A new server on the same SQLite file, or the same PostgreSQL database.
    let server = TestServer::with(kept.options()).await;
    let mut replay = server.watch(link_target("link_1"), Some(0)).await;
    assert!(
        matches!(replay.next_event().await, Seen::Result { seq: 1, ref event, .. } if event == "evt_0")
    );
    // The duplicate of an event acknowledged before the restart is still recognized.
    let (_, reply) = server
        .post_event(&event("evt_0", "acc_1", "succeeded", now + 1))
        .await;
    assert!(reply.contains("duplicate"), "{reply}");
    server
        .post_event(&event("evt_9", "acc_2", "succeeded", now + 2))
        .await;
    assert!(
        matches!(replay.next_event().await, Seen::Result { seq: 3, ref event, .. } if event == "evt_9")
    );
    let mut intent = server.watch(intent_target("ri_1"), None).await;
    assert!(matches!(
        intent.next_event().await,
        Seen::Result { seq: 1, .. }
    ));
    assert!(matches!(
        intent.next_event().await,
        Seen::Result { seq: 3, .. }
    ));
    assert_eq!(
        intent.next_event().await,
        Seen::Completed {
            seq: 3,
            status: RefreshStatus::Succeeded
        }
    );
    drop((server, kept));
}

/// Two servers in one process on one file would split the stream just like two processes:
/// the second `App::start` is refused (and touches nothing) while the first runs, and
/// succeeds as soon as the first has stopped, even though the test still holds the first's
/// `App`. Without the lock the second start succeeds and this test fails.
#[tokio::test]
async fn a_second_server_on_the_same_file_in_one_process_is_refused_until_the_first_stops() {
    let server = TestServer::start().await;
    let path = server.db_path.clone();
    let config =
        || fintoc_refresh::Config::new(path.to_string_lossy(), "http://127.0.0.1:9".to_owned());
    let refused = match fintoc_refresh::app::App::start(config()).await {
        Ok(_) => panic!("a second server opened a database in use"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        refused.contains("already open in this process"),
        "{refused}"
    );
    assert!(refused.contains("PostgreSQL"), "{refused}");
    // The first one still works.
    let now = server.clock.now_ms();
    let (status, _) = server
        .post_event(&event("evt_1", "acc_1", "succeeded", now))
        .await;
    assert_eq!(status, 200);
    let app = server.app.clone();
    let (dir, _) = server.stop_keep_db().await;
    let second = fintoc_refresh::app::App::start(config())
        .await
        .expect("the file is free once the first server has stopped");
    assert_eq!(second.store.counts().await.unwrap().results, 1);
    second.store.close().await;
    drop((app, dir));
}

on_both_backends!(health_readiness_and_metrics_answer);
async fn health_readiness_and_metrics_answer(backend: Backend) {
    let server = TestServer::on(backend).await;
    assert_eq!(server.get("/healthz").await.0, 200);
    assert_eq!(server.get("/readyz").await.0, 200);
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    // Families appear once they have a series; these two always do.
    for name in [
        "fintoc_refresh_webhook_intake_seconds",
        "fintoc_refresh_watch_streams",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {name} ")),
            "{name} missing:\n{metrics}"
        );
    }
    assert!(
        metrics.contains("fintoc_refresh_watch_streams 0"),
        "{metrics}"
    );
}

/// Another connection to the server's database that keeps its writer from committing an
/// event until released.
enum Blocker {
    /// Holds SQLite's write lock.
    Sqlite(diesel::sqlite::SqliteConnection),
    /// Holds a lock on the raw events' table that every insert into it waits for (reads
    /// go on).
    Postgres(tokio_postgres::Client),
}

impl Blocker {
    async fn hold(server: &TestServer) -> Blocker {
        use diesel::Connection;
        use diesel::connection::SimpleConnection;
        match &server.pg {
            None => {
                let mut conn =
                    diesel::sqlite::SqliteConnection::establish(&server.db_path.to_string_lossy())
                        .unwrap();
                conn.batch_execute("BEGIN IMMEDIATE").unwrap();
                Blocker::Sqlite(conn)
            }
            Some(pg) => {
                let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
                    .await
                    .unwrap();
                tokio::spawn(connection);
                client
                    .batch_execute("BEGIN; LOCK TABLE webhook_events IN EXCLUSIVE MODE")
                    .await
                    .unwrap();
                Blocker::Postgres(client)
            }
        }
    }

    async fn release(self) {
        use diesel::connection::SimpleConnection;
        match self {
            Blocker::Sqlite(mut conn) => conn.batch_execute("COMMIT").unwrap(),
            Blocker::Postgres(client) => client.batch_execute("COMMIT").await.unwrap(),
        }
    }
}

on_both_backends!(a_webhook_is_answered_only_after_the_commit_that_contains_it);
/// Proves the answer waits for the commit holding the event: another connection keeps the
/// server's writer from committing it (see [`Blocker`]), and the request stays unanswered
/// until it can. It does not prove the wait for the fsync after the commit on SQLite (an
/// answer given right after COMMIT would pass here): `store::sqlite::writer::tests::
/// nothing_is_answered_or_published_before_its_commit_is_durable` proves that one; on
/// PostgreSQL, COMMIT returns once durable (`synchronous_commit = on`).
async fn a_webhook_is_answered_only_after_the_commit_that_contains_it(backend: Backend) {
    let server = TestServer::on(backend).await;
    let blocker = Blocker::hold(&server).await;
    let body = event("evt_wait", "acc_1", "succeeded", server.clock.now_ms());
    let post = {
        let (http, sig) = (
            server.http,
            fintoc_refresh::fintoc::signature::header(SECRET, server.now_secs(), body.as_bytes()),
        );
        let body = body.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("http://{http}/webhooks/fintoc"))
                .header("Fintoc-Signature", sig)
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !post.is_finished(),
        "answered while its event could not be committed"
    );
    blocker.release().await;
    assert_eq!(post.await.unwrap(), 200);
    assert_eq!(server.counts().await.webhook_events, 1);
}

on_both_backends!(storage_that_stops_for_good_stops_the_server_with_an_error);
/// Proves storage that can no longer commit (through a test hook: on SQLite its sync thread
/// panics, on PostgreSQL one of the store's own tasks is reported stopped, as a bug there
/// would) does not leave the server half-dead, answering 500 to every webhook while probes
/// say it is fine: the store reports it, and the server stops with an error (so `serve`
/// exits non-zero and its supervisor restarts it on what the database holds).
async fn storage_that_stops_for_good_stops_the_server_with_an_error(backend: Backend) {
    let server = TestServer::on(backend).await;
    assert_eq!(server.get("/readyz").await.0, 200);
    assert!(server.app.store.is_healthy());
    server.app.store.break_for_test();
    eventually("the store reports it stopped", || async {
        !server.app.store.is_healthy()
    })
    .await;
    let err = server
        .ended()
        .await
        .expect_err("the server stops with an error");
    assert!(err.to_string().contains("storage"), "{err:#}");
}
