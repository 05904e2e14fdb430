//! Tests of the SQLite side of `copy-store`: a consistent snapshot read in bounded batches.

use super::*;
use crate::store::seam::Backend as _;

fn write(url: &str, sql: &str) {
    SqliteConnection::establish(url)
        .unwrap()
        .batch_execute(sql)
        .unwrap();
}

fn results(n: usize, first_event: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "INSERT INTO results (account_id, link_id, refresh_intent_id, status, \
                 new_movements, public_error, event_id, occurred_at_ms, committed_at_ms) \
                 VALUES ('acc', '', '', 'succeeded', 0, '', 'evt_{}', 0, 0);",
                first_event + i
            )
        })
        .collect()
}

async fn drain(export: &mut Export) -> (Vec<i64>, Vec<Table>) {
    let (mut sequences, mut done) = (Vec::new(), Vec::new());
    while let Some(read) = export.batches.recv().await {
        match read.unwrap() {
            Batch::Results(rows) => sequences.extend(rows.iter().map(|r| r.sequence)),
            Batch::Done(table) => done.push(table),
            _ => {}
        }
    }
    (sequences, done)
}

/// The copy is the store as it was when the snapshot began: rows written and deleted
/// afterwards (while the reader is held back by its full channel, with most of the log
/// still unread) do not show. Reading page by page outside one transaction would see
/// them, so this fails if the snapshot is not kept.
#[tokio::test]
async fn the_snapshot_is_the_store_as_it_was_when_the_copy_began() {
    let (dir, store) = crate::store::sqlite::tests::open().await;
    let url = dir.path().join("t.db").to_string_lossy().into_owned();
    write(&url, &results(100, 0));
    let mut export = open(&url, 10).await.unwrap();
    assert_eq!(export.snapshot.rows.get(Table::Results), 100);
    assert_eq!(export.snapshot.sequences, Some((1, 100)));
    // The server goes on: new results, and retention at the log's oldest end.
    write(
        &url,
        &format!(
            "{} DELETE FROM results WHERE sequence <= 50;",
            results(5, 100)
        ),
    );
    let (sequences, done) = drain(&mut export).await;
    assert_eq!(sequences, (1..=100).collect::<Vec<_>>());
    assert_eq!(done, Table::ALL.to_vec(), "every table ends, in order");
    store.close().await;
}

/// Retention may have emptied the log: the high-water mark still comes along.
#[tokio::test]
async fn the_high_water_mark_survives_a_log_that_retention_emptied() {
    let (dir, store) = crate::store::sqlite::tests::open().await;
    let url = dir.path().join("t.db").to_string_lossy().into_owned();
    write(&url, &format!("{} DELETE FROM results;", results(7, 0)));
    let export = open(&url, 10).await.unwrap();
    assert_eq!(export.snapshot.sequences, None);
    assert_eq!(export.snapshot.high_water, 7);
    store.close().await;
}

#[tokio::test]
async fn a_missing_file_or_one_that_is_not_a_store_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    let err = open(&missing.to_string_lossy(), 10).await.err().unwrap();
    assert!(err.contains("no such file"), "{err}");
    assert!(!missing.exists(), "never created");
    let text = dir.path().join("notes.txt");
    std::fs::write(
        &text,
        "not a database at all, but long enough to have a header",
    )
    .unwrap();
    let err = open(&text.to_string_lossy(), 10).await.err().unwrap();
    assert!(err.contains("not a fintoc-refresh store"), "{err}");
    let other = dir.path().join("other.db");
    write(&other.to_string_lossy(), "CREATE TABLE t (x INTEGER);");
    let err = open(&other.to_string_lossy(), 10).await.err().unwrap();
    assert!(err.contains("no migrations table"), "{err}");
    let err = open(":memory:", 10).await.err().unwrap();
    assert!(err.contains("in-memory"), "{err}");
}

/// Raw events are cut by bytes as well as by rows, each batch holding at least one.
#[tokio::test]
async fn raw_event_batches_are_cut_by_their_bodies_bytes() {
    let (dir, store) = crate::store::sqlite::tests::open().await;
    let url = dir.path().join("t.db").to_string_lossy().into_owned();
    let big = BATCH_EVENT_BYTES / 2 + 1;
    write(
        &url,
        &(0..3)
            .map(|i| {
                format!(
                    "INSERT INTO webhook_events (event_key, disposition, received_at_ms, \
                     body) VALUES ('evt_{i}', 'ignored', 0, zeroblob({big}));"
                )
            })
            .collect::<String>(),
    );
    let mut export = open(&url, 10).await.unwrap();
    let mut sizes = Vec::new();
    while let Some(read) = export.batches.recv().await {
        if let Batch::WebhookEvents(rows) = read.unwrap() {
            sizes.push(rows.len());
        }
    }
    assert_eq!(sizes, vec![1, 1, 1]);
    store.close().await;
}

/// The movements tables are read whole, page by page in their keys' order (the composite
/// key of `movements` included, across a page boundary inside one account), sealed tokens
/// byte for byte and fetch jobs with their leases as SQLite holds them (the writer clears
/// those).
#[tokio::test]
async fn the_movements_tables_are_paged_in_key_order_and_read_as_stored() {
    let (dir, store) = crate::store::sqlite::tests::open().await;
    let url = dir.path().join("t.db").to_string_lossy().into_owned();
    write(
        &url,
        "INSERT INTO link_tokens VALUES ('link_b', 'k2', X'00ff', X'ff00fe', 2), \
                                        ('link_a', 'k1', X'01', X'', 1), \
                                        ('link_c', 'k1', X'02', X'80', 3); \
         INSERT INTO movements VALUES ('acc_2', 'm_1', 'link_a', '2026-01-01', '{}'), \
                                      ('acc_1', 'm_3', 'link_a', '2026-01-03', '{\"a\":1}'), \
                                      ('acc_1', 'm_1', 'link_a', '2026-01-02', '{}'), \
                                      ('acc_1', 'm_2', 'link_a', '2026-01-01', '{}'); \
         INSERT INTO fetch_jobs VALUES (7, 'acc_1', 'link_a', 'evt_7', 1, 5, 2, 9, 'me', 99), \
                                       (3, 'acc_2', 'link_a', 'evt_3', 0, 4, 0, 8, '', 0), \
                                       (5, 'acc_1', 'link_a', 'evt_5', 2, 6, 1, 7, '', 0);",
    );
    let mut export = open(&url, 2).await.unwrap();
    let rows = export.snapshot.rows;
    assert_eq!(
        [Table::LinkTokens, Table::Movements, Table::FetchJobs].map(|t| rows.get(t)),
        [3, 4, 3]
    );
    let (mut tokens, mut movements, mut jobs, mut pages) = (vec![], vec![], vec![], 0);
    while let Some(read) = export.batches.recv().await {
        match read.unwrap() {
            Batch::LinkTokens(rows) => {
                pages += 1;
                tokens.extend(rows);
            }
            Batch::Movements(rows) => {
                pages += 1;
                movements.extend(rows.into_iter().map(|r| (r.account_id, r.movement_id)));
            }
            Batch::FetchJobs(rows) => {
                pages += 1;
                jobs.extend(rows.into_iter().map(|r| {
                    (
                        r.result_sequence,
                        r.attempts,
                        r.lease_owner,
                        r.lease_until_ms,
                    )
                }));
            }
            _ => {}
        }
    }
    assert_eq!(pages, 2 + 2 + 2, "two rows a page");
    let token = |link: &str, key: &str, nonce: &[u8], sealed: &[u8], at| LinkTokenRow {
        link_id: link.into(),
        key_id: key.into(),
        nonce: nonce.to_vec(),
        ciphertext: sealed.to_vec(),
        given_at_ms: at,
    };
    assert_eq!(
        tokens,
        vec![
            token("link_a", "k1", &[0x01], &[], 1),
            token("link_b", "k2", &[0x00, 0xff], &[0xff, 0x00, 0xfe], 2),
            token("link_c", "k1", &[0x02], &[0x80], 3),
        ]
    );
    let pair = |a: &str, m: &str| (a.to_owned(), m.to_owned());
    assert_eq!(
        movements,
        vec![
            pair("acc_1", "m_1"),
            pair("acc_1", "m_2"),
            pair("acc_1", "m_3"),
            pair("acc_2", "m_1")
        ]
    );
    assert_eq!(
        jobs,
        vec![
            (3, 0, String::new(), 0),
            (5, 1, String::new(), 0),
            (7, 2, "me".to_owned(), 99)
        ]
    );
    store.close().await;
}
