//! Tests of the SQLite store as a whole (durability of reads, rebuilding tables), and the helpers other SQLite tests open stores with.

use diesel::prelude::*;
use diesel::sql_types::BigInt;

use super::*;

/// The WAL bound of stores opened by tests that do not test it: `serve`'s default.
pub(crate) const TEST_WAL_LIMIT: u64 = 64 << 20;

/// A store on a fresh file whose sink drops what it is given.
pub(crate) async fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("t.db").to_string_lossy().into_owned();
    let store = SqliteStore::open_with(
        &url,
        Clock::System,
        Arc::new(Metrics::new()),
        Arc::new(|_: &[Arc<ResultRow>]| {}),
        None,
        TEST_WAL_LIMIT,
        false,
    )
    .await
    .unwrap();
    (dir, store)
}

/// A sync that waits while its gate is closed, counting the syncs held.
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, usize)>,
    changed: std::sync::Condvar,
}

impl Gate {
    fn pass(&self) {
        let mut state = self.state.lock().unwrap();
        state.1 += 1;
        while !state.0 {
            state = self.changed.wait(state).unwrap();
        }
        state.1 -= 1;
    }

    fn set_open(&self, open: bool) {
        self.state.lock().unwrap().0 = open;
        self.changed.notify_all();
    }

    fn held(&self) -> usize {
        self.state.lock().unwrap().1
    }
}

/// Polls `check` until it holds; fails after 10 s (a broken test fails, never hangs).
async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Reads never show what is not durable: an intent registered (with its idempotency
/// key) whose commit is visible but whose fsync is held back by hand is shown by no read
/// — the intent, the Link's state, the key — until the fsync returns; then every read
/// answers with it. No timing: the test waits until the reads are parked on the
/// durability mark, checks none has answered, then lets the fsync through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_answer_only_once_what_they_saw_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("r.db").to_string_lossy().into_owned();
    let gate = Arc::new(Gate::default());
    gate.set_open(true);
    let sync: SyncFn = {
        let gate = gate.clone();
        Box::new(move || {
            gate.pass();
            Ok(())
        })
    };
    let store = SqliteStore::open_with(
        &url,
        Clock::System,
        Arc::new(Metrics::new()),
        Arc::new(|_: &[Arc<ResultRow>]| {}),
        Some(sync),
        TEST_WAL_LIMIT,
        false,
    )
    .await
    .unwrap();
    assert_eq!(store.get_intent("ri_1".into()).await.unwrap(), None);

    gate.set_open(false);
    let new = NewIntent {
        id: "ri_1".into(),
        link_id: "link_1".into(),
        refresh_type: RefreshType::OnlyLast,
        accounts: vec!["acc_1".into()],
        created_at_ms: 1,
        mfa_widget_token: String::new(),
    };
    let key = KeyRecord {
        key: "k".into(),
        token_sha256: "t".into(),
        refresh_type: RefreshType::OnlyLast,
        refresh_intent_id: String::new(),
        joined_existing: false,
    };
    let write = tokio::spawn({
        let store = store.clone();
        async move { store.register_intent(new, Some(key), None).await }
    });
    // Committed (visible to a reader's snapshot), its fsync held.
    until("the commit's fsync has begun", || gate.held() == 1).await;
    let (a, b, c) = (store.clone(), store.clone(), store.clone());
    let intent = tokio::spawn(async move { a.get_intent("ri_1".into()).await });
    let state =
        tokio::spawn(async move { b.link_state("link_1".into(), RefreshType::OnlyLast).await });
    let key = tokio::spawn(async move { c.idempotency("k".into()).await });
    until("the three reads wait for durability", || {
        store.progress.waiting.load(Ordering::SeqCst) == 3
    })
    .await;
    for (what, finished) in [
        ("the write", write.is_finished()),
        ("get_intent", intent.is_finished()),
        ("link_state", state.is_finished()),
        ("idempotency", key.is_finished()),
    ] {
        assert!(!finished, "{what} answered before the fsync returned");
    }

    gate.set_open(true);
    write.await.unwrap().unwrap();
    assert_eq!(intent.await.unwrap().unwrap().unwrap().id, "ri_1");
    assert_eq!(state.await.unwrap().unwrap().pending.unwrap().id, "ri_1");
    assert_eq!(
        key.await.unwrap().unwrap().unwrap().0.refresh_intent_id,
        "ri_1"
    );
    store.close().await;
}

#[derive(QueryableByName)]
struct Seq {
    #[diesel(sql_type = BigInt)]
    sequence: i64,
}

fn append(conn: &mut SqliteConnection) -> i64 {
    conn.batch_execute(
        "INSERT INTO results (account_id, link_id, refresh_intent_id, status, new_movements, \
         public_error, event_id, occurred_at_ms, committed_at_ms) \
         VALUES ('acc', '', '', 'succeeded', 0, '', 'evt', 0, 0)",
    )
    .unwrap();
    diesel::sql_query("SELECT last_insert_rowid() AS sequence")
        .get_result::<Seq>(conn)
        .unwrap()
        .sequence
}

/// The CHECK rebuild copies the tables; a log that retention emptied must still never
/// hand out a sequence twice.
#[test]
fn rebuilding_the_tables_keeps_rows_and_the_sequence_high_water() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("m.db").to_string_lossy().into_owned();
    let mut conn = SqliteConnection::establish(&url).unwrap();
    for _ in 0..2 {
        conn.run_next_migration(MIGRATIONS).unwrap();
    }
    for _ in 0..5 {
        append(&mut conn);
    }
    conn.batch_execute(
        "DELETE FROM results; \
         INSERT INTO webhook_events (event_key, disposition, received_at_ms, body) \
         VALUES ('evt_kept', 'held', 7, x'7b7d');",
    )
    .unwrap();
    conn.run_pending_migrations(MIGRATIONS).unwrap();
    assert_eq!(append(&mut conn), 6, "sequences continue after the rebuild");
    let held: Vec<(String, String)> = schema::webhook_events::table
        .select((
            schema::webhook_events::event_key,
            schema::webhook_events::disposition,
        ))
        .load(&mut conn)
        .unwrap();
    assert_eq!(held, vec![("evt_kept".into(), "held".into())]);
    let bad = conn.batch_execute(
        "INSERT INTO webhook_events (event_key, disposition, received_at_ms, body) \
         VALUES ('evt_bad', 'bogus', 7, x'00')",
    );
    assert!(bad.is_err(), "the closed set is still enforced");
}
