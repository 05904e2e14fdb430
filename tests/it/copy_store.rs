//! `copy-store` end to end: a SQLite store built by the real server (webhooks, a refresh
//! through the simulator with an idempotency key, an intent still pending, retention; the
//! movements tables and entries it cannot write without Fintoc written behind its back), copied
//! by the real binary into a fresh PostgreSQL database, then served from there by the real
//! server and compared with what the SQLite server answered. Where the move must be invisible
//! to Fintoc (the Idempotency-Keys it has answered), one simulator outlives both servers.

use std::sync::Arc;

use crate::common::*;
use fintoc_refresh::clock::Clock;
use fintoc_refresh::custody::Sealed;
use fintoc_refresh::domain::{Detail, MovementsEntry, Target, Unavailable, UnavailableEntry};
use fintoc_refresh::pb;
use fintoc_refresh::simulator::{Fault, LinkSpec, Outcome, SimConfig, Simulator};
use fintoc_refresh::store::LogBounds;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::Code;

mod support;

use support::*;

/// The whole history moves: every result replays from 0 with the same sequences and
/// fields, the log's bounds, counts and intents are the same, the idempotency key replays
/// without calling Fintoc, the raw events still dedupe, and a pruned cursor is refused the
/// same way. The copy runs while the SQLite server is still up (it needs neither its lock
/// nor a quiet file), prints a line per table and a summary, and never the password; a
/// second copy into the now filled database is refused with one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_store_moves_a_pruned_sqlite_store_to_postgres_keeping_every_sequence() {
    let clock = Clock::manual(START_MS);
    let (sqlite, before) = sqlite_history(&clock).await;
    let pg = Arc::new(PgDb::create().await);
    let ran = copy_store(&sqlite.db_path, &pg.url).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(
        ran.stdout,
        format!(
            "copied 4 results (sequences 4..7, next 8), 1 links, 0 link_tokens, 3 accounts, \
             0 movements, 2 refresh_intents, 3 intent_accounts, 1 idempotency_keys, \
             0 fintoc_key_series, 0 fetch_jobs, 4 webhook_events into {}\n",
            redacted(&pg)
        )
    );
    for line in [
        "copying links: 1/1",
        "copying link_tokens: 0/0",
        "copying accounts: 3/3",
        "copying movements: 0/0",
        "copying refresh_intents: 2/2",
        "copying intent_accounts: 3/3",
        "copying idempotency_keys: 1/1",
        "copying fintoc_key_series: 0/0",
        "copying results: 4/4",
        "copying fetch_jobs: 0/0",
        "copying webhook_events: 4/4",
    ] {
        assert!(
            ran.stderr.lines().any(|l| l == line),
            "{line}: {}",
            ran.stderr
        );
    }
    assert!(!format!("{}{}", ran.stdout, ran.stderr).contains(&password(&pg)));
    // The SQLite server was never disturbed.
    post_ok(&sqlite, "evt_after_copy", "acc_y").await;
    let (_dir, sqlite_file) = sqlite.stop_keep_db().await;

    let moved = server(&clock, Some(pg.clone())).await;
    for (target, replay) in before.targets.iter().zip(&before.replays) {
        let now = moved
            .app
            .store
            .results_after(target.clone(), 0, 1000)
            .await
            .unwrap()
            .rows;
        assert_eq!(&now, replay, "{target:?}");
    }
    assert_eq!(moved.app.store.log_bounds().await.unwrap(), before.bounds);
    assert_eq!(moved.counts().await, before.counts);
    assert_eq!(
        vec![
            moved.get_refresh(&before.intent).await,
            moved.get_refresh("ri_pending").await
        ],
        before.intents
    );
    // The key replays from the store: this simulator has never heard of the Link.
    let again = request_refresh(&moved, &before.link_token, "key-1")
        .await
        .unwrap();
    assert_eq!(again.refresh_intent.unwrap().id, before.intent);
    let sim = moved.sim.as_ref().unwrap();
    assert_eq!(sim.requests("POST", "/v1/refresh_intents"), 0);
    assert_eq!(
        watch_error(&moved, account_target("acc_x"), 1).await,
        before.expired
    );
    let repeated = post_ok(&moved, "evt_new_1", "acc_x").await;
    assert_eq!(repeated["outcome"], "duplicate", "{repeated}");
    assert_eq!(moved.counts().await, before.counts);

    // Copying again would mix two histories: refused, in one line, the target untouched.
    let twice = copy_store(&sqlite_file, &pg.url).await;
    assert_eq!(twice.code, Some(1), "{}", twice.stderr);
    assert_eq!(
        twice.stderr,
        format!(
            "error: cannot copy into {}: it already holds data (webhook_events, results, \
             refresh_intents, intent_accounts, links, accounts, idempotency_keys, \
             log_counter); copy-store fills only an empty database\n",
            redacted(&pg)
        )
    );
    assert_eq!(twice.stdout, "");
    assert_eq!(moved.counts().await, before.counts);
    moved.stop().await.unwrap();
}

/// Movements move too: sealed Link tokens byte for byte (they are sealed to their Link and
/// key ids, not to the database), every movement as last pushed, every fetch still owed
/// (unleased: its lease was the SQLite process's), and the log's movements entries with
/// their payloads and the results that await their movements, so a watcher replays the
/// same entries from PostgreSQL. Without them the first fetch after the move would push
/// every movement again as added, owed fetches would never run, and movements entries
/// would read back as empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_store_carries_sealed_tokens_movements_fetch_jobs_and_movements_entries() {
    let clock = Clock::manual(START_MS);
    let sqlite = TestServer::with(keyed_options(&clock, None)).await;
    post_ok(&sqlite, "evt_1", "acc_mv").await;
    let now = sqlite.clock.now_ms();
    let seed = MovementsSeed::new(now);
    let movements = Detail::Movements(Arc::new(MovementsEntry {
        removed_ids: vec!["mov_gone".into()],
        complete: true,
        ..MovementsEntry::default()
    }));
    let unavailable = Detail::Unavailable(Arc::new(UnavailableEntry {
        reason: Unavailable::TokenNotKept,
        message: "the Link's token is not kept here".into(),
    }));
    let (moved_text, unavailable_text) = (movements.to_stored(), unavailable.to_stored());
    sqlite
        .run_sql(&format!(
            "UPDATE results SET fetches_movements = 1 WHERE sequence = 1; {} {} {}",
            entry_sql("acc_mv", "evt_1", Detail::MOVEMENTS, &moved_text, now),
            entry_sql(
                "acc_mv",
                "evt_1",
                Detail::UNAVAILABLE,
                &unavailable_text,
                now
            ),
            seed.sql()
        ))
        .await;
    // Read back by a server started afresh on the file: the running one serves its log up
    // to what it appended itself, and these entries were written behind its back.
    let (_dir, file) = sqlite.stop_keep_db().await;
    let sqlite = TestServer::with(Options {
        db: Some(file.clone()),
        ..keyed_options(&clock, None)
    })
    .await;
    let target = Target::Account("acc_mv".into());
    let replay = sqlite
        .app
        .store
        .results_after(target.clone(), 0, 1000)
        .await
        .unwrap()
        .rows;
    // Sequence 2 the server wrote itself: evt_1 brought new movements of a Link whose token
    // it does not keep.
    let Detail::Unavailable(told) = &replay[1].detail else {
        panic!("the server's own movements_unavailable entry: {replay:?}")
    };
    assert_eq!(told.reason, Unavailable::TokenNotKept);
    let told_text = replay[1].detail.to_stored();
    let read: Vec<_> = replay
        .iter()
        .map(|r| (r.sequence, r.detail.clone(), r.fetches_movements))
        .collect();
    assert_eq!(
        read,
        vec![
            (1, Detail::Result, true),
            (2, replay[1].detail.clone(), false),
            (3, movements, false),
            (4, unavailable, false)
        ],
        "the SQLite store reads the seeded log"
    );
    sqlite.stop().await.unwrap();

    let pg = Arc::new(PgDb::create().await);
    let ran = copy_store(&file, &pg.url).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert_eq!(
        ran.stdout,
        format!(
            "copied 4 results (sequences 1..4, next 5), 0 links, 2 link_tokens, 0 accounts, \
             3 movements, 0 refresh_intents, 0 intent_accounts, 0 idempotency_keys, \
             0 fintoc_key_series, 2 fetch_jobs, 1 webhook_events into {}\n",
            redacted(&pg)
        )
    );
    for line in [
        "copying link_tokens: 2/2",
        "copying movements: 3/3",
        "copying results: 4/4",
        "copying fetch_jobs: 2/2",
    ] {
        assert!(
            ran.stderr.lines().any(|l| l == line),
            "{line}: {}",
            ran.stderr
        );
    }
    let counted = pg_tables(&pg).await;
    for (table, n) in [
        ("link_tokens", 2),
        ("movements", 3),
        ("results", 4),
        ("fetch_jobs", 2),
    ] {
        assert!(counted.contains(&(table.into(), n)), "{table}: {counted:?}");
    }
    let (tokens, moved_rows, jobs, log) = pg_movements_rows(&pg).await;
    assert_eq!(tokens, seed.tokens, "sealed tokens, byte for byte");
    let keys = link_token_keys();
    for ((link, key_id, nonce, ciphertext, _), (_, token)) in tokens.into_iter().zip(&seed.plain) {
        let sealed = Sealed {
            key_id,
            nonce,
            ciphertext,
        };
        let opened = keys.open(&link, &sealed).unwrap();
        assert_eq!(
            opened.token.expose(),
            token,
            "{link}'s token opens as sealed"
        );
    }
    assert_eq!(moved_rows, seed.movements);
    assert_eq!(jobs, seed.jobs_unleased(), "every job owed, none leased");
    assert_eq!(
        log,
        vec![
            (1, "succeeded".to_owned(), String::new(), true),
            (2, Detail::UNAVAILABLE.to_owned(), told_text, false),
            (3, Detail::MOVEMENTS.to_owned(), moved_text, false),
            (4, Detail::UNAVAILABLE.to_owned(), unavailable_text, false),
        ],
        "payloads as stored, and which result awaits its movements"
    );

    // A second copy names the new tables among what the target holds.
    let twice = copy_store(&file, &pg.url).await;
    assert_eq!(twice.code, Some(1), "{}", twice.stderr);
    assert!(
        twice
            .stderr
            .contains("(webhook_events, results, link_tokens, movements, fetch_jobs, log_counter)"),
        "{}",
        twice.stderr
    );

    let moved = TestServer::with(keyed_options(&clock, Some(pg))).await;
    let now = moved
        .app
        .store
        .results_after(target, 0, 1000)
        .await
        .unwrap()
        .rows;
    assert_eq!(now, replay, "the same entries replay from PostgreSQL");
    moved.stop().await.unwrap();
}

/// A cursor taken on the SQLite server resumes on the PostgreSQL one with nothing missed or
/// repeated, and the log goes on after SQLite's high-water mark: the next result is 8, and it
/// completes the intent that was still pending when the store moved. This copy runs after
/// the SQLite server stopped (no WAL left beside the file: the read-only open still works).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_taken_on_sqlite_resumes_on_postgres_with_nothing_missed_or_repeated() {
    let clock = Clock::manual(START_MS);
    let (sqlite, _) = sqlite_history(&clock).await;
    let mut feed = sqlite.watch(account_target("acc_x"), Some(0)).await;
    let cursor = feed.next_event().await.seq();
    assert_eq!(cursor, 6);
    drop(feed);
    let (_dir, file) = sqlite.stop_keep_db().await;
    let pg = Arc::new(PgDb::create().await);
    let ran = copy_store(&file, &pg.url).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);

    let moved = server(&clock, Some(pg)).await;
    let mut resumed = moved.watch(account_target("acc_x"), Some(cursor)).await;
    let mut pending = moved.watch(intent_target("ri_pending"), Some(0)).await;
    let next = post_ok(&moved, "evt_pg_pending", "acc_pending").await;
    assert_eq!(next["sequence"], 8, "after the high-water mark: {next}");
    assert_eq!(pending.next_event().await.seq(), 8);
    assert!(matches!(
        pending.next_event().await,
        Seen::Completed {
            seq: 8,
            status: pb::RefreshStatus::Succeeded
        }
    ));
    post_ok(&moved, "evt_pg_x", "acc_x").await;
    let mut seen = Vec::new();
    for _ in 0..2 {
        match resumed.next_event().await {
            Seen::Result { seq, event, .. } => seen.push((seq, event)),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        seen,
        vec![(7, "evt_new_2".to_owned()), (9, "evt_pg_x".to_owned())]
    );
    moved.stop().await.unwrap();
}

/// Fintoc keeps its first answer to an Idempotency-Key, errors included, for a day. A caller
/// key whose Fintoc keys Fintoc answered with errors on SQLite starts after them on
/// PostgreSQL: its retry after the move is sent under a fresh key and creates the intent,
/// instead of being replayed Fintoc's stored 500s (which it is when the count of keys spent
/// per caller key, `fintoc_key_series`, is not moved). Fintoc, one simulator, outlives both
/// servers, as the real one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_key_fintoc_failed_before_the_move_gets_a_fresh_fintoc_key_after_it() {
    const CREATE: (&str, &str) = ("POST", "/v1/refresh_intents");
    let clock = Clock::manual(START_MS);
    let stop_fintoc = CancellationToken::new();
    let fintoc = Simulator::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        SimConfig {
            clock: clock.0.clone(),
            ..sim_config()
        },
        stop_fintoc.clone(),
    )
    .unwrap();
    let _stop_fintoc = stop_fintoc.drop_guard();
    let link = fintoc.add_link(LinkSpec::new(vec![Outcome::Succeed { new_movements: 1 }]));
    let sqlite = server_calling(&clock, None, &fintoc).await;
    fintoc.inject_on(CREATE.0, CREATE.1, Fault::Status(500), 1000);
    let down = request_refresh(&sqlite, &link.token, "key-down")
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable, "{}", down.message());
    let tried = fintoc.requests(CREATE.0, CREATE.1);
    assert!(tried >= 2, "retried within the call: {tried}");
    fintoc.clear_faults();
    let (_dir, file) = sqlite.stop_keep_db().await;

    let pg = Arc::new(PgDb::create().await);
    let ran = copy_store(&file, &pg.url).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stderr
            .lines()
            .any(|l| l == "copying fintoc_key_series: 1/1"),
        "{}",
        ran.stderr
    );
    let moved = server_calling(&clock, Some(pg), &fintoc).await;
    let retried = request_refresh(&moved, &link.token, "key-down").await;
    let answer = retried.unwrap_or_else(|e| {
        panic!(
            "the retry after the move was answered {:?} ({}) after {} more create calls: \
             Fintoc replayed the failures it had stored for the keys already spent",
            e.code(),
            e.message(),
            fintoc.requests(CREATE.0, CREATE.1) - tried
        )
    });
    assert!(!answer.refresh_intent.unwrap().id.is_empty());
    assert_eq!(
        fintoc.requests(CREATE.0, CREATE.1),
        tried + 1,
        "one more create call, under a key Fintoc had not answered"
    );
    moved.stop().await.unwrap();
}

/// Retention may have emptied the log entirely; its high-water mark (kept by SQLite apart
/// from the rows) still comes along, so no sequence is ever handed out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_store_carries_the_high_water_mark_of_a_log_that_retention_emptied() {
    let clock = Clock::manual(START_MS);
    let sqlite = server(&clock, None).await;
    for i in 1..=5 {
        post_ok(&sqlite, &format!("evt_{i}"), "acc_1").await;
    }
    sqlite.clock.advance(8 * DAY);
    fintoc_refresh::tasks::prune(&sqlite.app).await.unwrap();
    let emptied = LogBounds {
        newest: 5,
        oldest: 6,
    };
    assert_eq!(sqlite.app.store.log_bounds().await.unwrap(), emptied);
    let (_dir, file) = sqlite.stop_keep_db().await;
    let pg = Arc::new(PgDb::create().await);
    let ran = copy_store(&file, &pg.url).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    assert!(
        ran.stdout
            .starts_with("copied 0 results (next sequence 6), "),
        "{}",
        ran.stdout
    );
    let moved = server(&clock, Some(pg)).await;
    assert_eq!(moved.app.store.log_bounds().await.unwrap(), emptied);
    let (code, message, oldest) = watch_error(&moved, account_target("acc_1"), 2).await;
    assert_eq!(
        (code, oldest.as_str()),
        (Code::OutOfRange, "6"),
        "{message}"
    );
    let next = post_ok(&moved, "evt_6", "acc_1").await;
    assert_eq!(next["sequence"], 6, "{next}");
    moved.stop().await.unwrap();
}

/// A source that is missing or not a store, and a command line that swaps the kinds, are
/// each refused with one line before the target is touched: it is not even migrated, and a
/// missing file is not created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_store_refuses_a_missing_or_foreign_source_and_leaves_the_target_untouched() {
    let pg = PgDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let ran = copy_store(&missing, &pg.url).await;
    assert_eq!(ran.code, Some(1));
    assert_eq!(
        ran.stderr,
        format!(
            "error: cannot copy from {}: no such file (copy-store reads an existing SQLite \
             store, it never creates one)\n",
            missing.display()
        )
    );
    assert!(!missing.exists(), "never created");
    let notes = dir.path().join("notes.txt");
    std::fs::write(
        &notes,
        "these are notes, not a database, and long enough to tell",
    )
    .unwrap();
    let ran = copy_store(&notes, &pg.url).await;
    assert_eq!(ran.code, Some(1));
    assert!(
        ran.stderr.contains("is not a fintoc-refresh store") && ran.stderr.lines().count() == 1,
        "{}",
        ran.stderr
    );
    let ran = copy_store(&notes, &notes.to_string_lossy()).await;
    assert_eq!(ran.code, Some(2));
    assert!(
        ran.stderr.contains("--to takes a postgres://"),
        "{}",
        ran.stderr
    );
    assert_eq!(pg_tables(&pg).await, vec![], "not even migrated");
}

/// A database a server has already written to is refused, naming what it holds; so is one
/// whose log is empty but has handed out sequences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_store_refuses_a_target_a_server_already_wrote_to() {
    let clock = Clock::manual(START_MS);
    let sqlite = server(&clock, None).await;
    post_ok(&sqlite, "evt_1", "acc_1").await;
    let (_dir, file) = sqlite.stop_keep_db().await;
    let pg = Arc::new(PgDb::create().await);
    let on_pg = server(&clock, Some(pg.clone())).await;
    post_ok(&on_pg, "evt_pg", "acc_pg").await;
    on_pg.stop().await.unwrap();
    let before = pg_tables(&pg).await;
    let ran = copy_store(&file, &pg.url).await;
    assert_eq!(ran.code, Some(1));
    assert_eq!(
        ran.stderr,
        format!(
            "error: cannot copy into {}: it already holds data (webhook_events, results, \
             log_counter); copy-store fills only an empty database\n",
            redacted(&pg)
        )
    );
    assert_eq!(pg_tables(&pg).await, before);
}

/// One transaction: a copy that fails on its last table (raw events, refused here by a
/// trigger) leaves every table it had already filled empty again and the counter at 0, so
/// the same copy simply runs again once the cause is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_that_fails_part_way_leaves_the_target_empty_and_can_run_again() {
    let clock = Clock::manual(START_MS);
    let sqlite = server(&clock, None).await;
    sqlite.create_intent("ri_1", "link_1", &["acc_1"]).await;
    post_ok(&sqlite, "evt_1", "acc_1").await;
    let (_dir, file) = sqlite.stop_keep_db().await;
    let pg = Arc::new(PgDb::create().await);
    server(&clock, Some(pg.clone())).await.stop().await.unwrap();
    let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$; \
             CREATE TRIGGER refuse BEFORE INSERT ON webhook_events \
             FOR EACH STATEMENT EXECUTE FUNCTION refuse();",
        )
        .await
        .unwrap();
    let ran = copy_store(&file, &pg.url).await;
    assert_eq!(ran.code, Some(1), "{}", ran.stderr);
    let error: Vec<&str> = ran
        .stderr
        .lines()
        .filter(|l| !l.starts_with("copying "))
        .collect();
    assert_eq!(error.len(), 1, "{}", ran.stderr);
    assert!(
        error[0].starts_with(&format!("error: cannot copy into {}: ", redacted(&pg)))
            && error[0].contains("refused by the test"),
        "{}",
        error[0]
    );
    assert!(
        ran.stderr.contains("copying results: 1/1"),
        "the results were copied before the failure: {}",
        ran.stderr
    );
    assert_eq!(pg_tables(&pg).await, empty_tables());
    client
        .batch_execute("DROP TRIGGER refuse ON webhook_events")
        .await
        .unwrap();
    let ran = copy_store(&file, &pg.url).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    let copied = pg_tables(&pg).await;
    assert!(copied.contains(&("results".into(), 1)), "{copied:?}");
    assert!(copied.contains(&("webhook_events".into(), 1)), "{copied:?}");
}

/// A large store reports its progress along the way (every 10,000 rows of a table, and at
/// its end), and arrives whole through many batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_store_prints_progress_for_large_stores() {
    const N: usize = 12_000;
    let clock = Clock::manual(START_MS);
    let sqlite = server(&clock, None).await;
    let now = sqlite.clock.now_ms();
    for chunk in 0..N / 1000 {
        let bodies = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                bytes::Bytes::from(event(
                    &format!("evt_{n}"),
                    &format!("acc_{}", n % 7),
                    "succeeded",
                    now,
                ))
            })
            .collect();
        sqlite
            .app
            .store
            .ingest_reconciled(bodies, now)
            .await
            .unwrap();
    }
    let sample = Target::Account("acc_3".into());
    let replay = sqlite
        .app
        .store
        .results_after(sample.clone(), 0, 10_000)
        .await
        .unwrap()
        .rows;
    let counts = sqlite.counts().await;
    let (_dir, file) = sqlite.stop_keep_db().await;
    let pg = Arc::new(PgDb::create().await);
    let ran = copy_store(&file, &pg.url).await;
    assert_eq!(ran.code, Some(0), "{}", ran.stderr);
    for table in ["results", "webhook_events"] {
        let lines: Vec<&str> = ran
            .stderr
            .lines()
            .filter(|l| l.starts_with(&format!("copying {table}: ")))
            .collect();
        assert_eq!(
            lines,
            vec![
                format!("copying {table}: 10000/{N}"),
                format!("copying {table}: {N}/{N}")
            ],
            "{}",
            ran.stderr
        );
    }
    assert!(
        ran.stdout.starts_with(&format!(
            "copied {N} results (sequences 1..{N}, next {})",
            N + 1
        )),
        "{}",
        ran.stdout
    );
    let moved = server(&clock, Some(pg.clone())).await;
    assert_eq!(moved.counts().await, counts);
    let now = moved
        .app
        .store
        .results_after(sample, 0, 10_000)
        .await
        .unwrap()
        .rows;
    assert!(
        now == replay,
        "the replay differs: {} rows, first {:?}; before: {} rows, first {:?}",
        now.len(),
        now.first(),
        replay.len(),
        replay.first()
    );
    // The raw events kept their ids, and new ones continue after them.
    let next = post_ok(&moved, "evt_on_pg", "acc_1").await;
    assert_eq!(next["sequence"], N + 1, "{next}");
    let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let ids = client
        .query_one(
            "SELECT min(id), max(id), (SELECT id FROM webhook_events WHERE event_key = 'evt_on_pg') \
             FROM webhook_events WHERE event_key <> 'evt_on_pg'",
            &[],
        )
        .await
        .unwrap();
    let ids: (i64, i64, i64) = (ids.get(0), ids.get(1), ids.get(2));
    assert_eq!(ids, (1, N as i64, N as i64 + 1));
    moved.stop().await.unwrap();
}
