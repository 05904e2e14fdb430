//! `copy-store`: a SQLite store's whole history copied into an empty PostgreSQL database,
//! every sequence and id kept, so the cursors watchers already hold resume on the new store
//! with nothing missed and nothing repeated, and new results continue after the old log's
//! high-water mark.
//!
//! The two halves meet here and nowhere else:
//! - the SQLite side (`sqlite/export/`) reads one consistent snapshot (one read
//!   transaction, read-only, without the one-process lock, so a server may keep running on
//!   the file) and streams it table by table in bounded batches;
//! - the PostgreSQL side (`postgres/import.rs`) migrates the target, refuses one that holds
//!   any data, and writes every batch with multi-row inserts inside one transaction, so a
//!   copy that fails part-way leaves the target as empty as it found it.
//!
//! What crosses between them — the rows, in batches — is defined below both, in `batch.rs`.
//! Between them runs a channel of `READ_AHEAD` batches: memory stays bounded however large
//! the store, and reading SQLite overlaps writing PostgreSQL.

use std::fmt;

use super::{is_postgres_url, postgres, redacted, sqlite};

pub(super) mod batch;

use batch::{BATCH_ROWS, Failed};
pub use batch::{NOT_COPIED, Rows, Table};

/// A progress line is due after this many more rows of one table (and when it is done).
const PROGRESS_EVERY: u64 = 10_000;

/// Where a copy went wrong; each reads as one line.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// The command line names the wrong kind of store.
    #[error("{0}")]
    Usage(String),
    #[error("cannot copy from {path}: {why}")]
    Source { path: String, why: String },
    /// `target` has its password redacted.
    #[error("cannot copy into {target}: {why}")]
    Target { target: String, why: String },
}

/// How far the copy of one table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub table: Table,
    pub copied: u64,
    pub total: u64,
}

/// What was copied, to tell the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub rows: Rows,
    /// The oldest and newest sequence copied (none when retention had emptied the log).
    pub sequences: Option<(i64, i64)>,
    /// The newest sequence the SQLite store ever handed out; the next is this plus one.
    pub high_water: i64,
    /// The target, password redacted.
    pub target: String,
}

impl fmt::Display for Copied {
    /// `copied 350000 results (sequences 1..350000, next 350001), 12000 refresh_intents, …
    /// into postgres://user:***@host/db`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let next = self.high_water + 1;
        write!(f, "copied {} results", self.rows.get(Table::Results))?;
        match self.sequences {
            Some((oldest, newest)) => write!(f, " (sequences {oldest}..{newest}, next {next})")?,
            None => write!(f, " (next sequence {next})")?,
        }
        for table in Table::ALL {
            if table != Table::Results {
                write!(f, ", {} {}", self.rows.get(table), table.name())?;
            }
        }
        write!(f, " into {}", self.target)
    }
}

/// When a progress line is due: after [`PROGRESS_EVERY`] more rows of a table, and at its
/// end unless that very count was just reported (so an empty table still gets its line).
#[derive(Debug, Default)]
struct Throttle {
    reported: [Option<u64>; Table::ALL.len()],
}

impl Throttle {
    fn due(&mut self, table: Table, copied: u64, done: bool) -> bool {
        let last = &mut self.reported[table as usize];
        let due = if done {
            *last != Some(copied)
        } else {
            copied >= last.unwrap_or(0) + PROGRESS_EVERY
        };
        if due {
            *last = Some(copied);
        }
        due
    }
}

/// Copies the SQLite store at `from` (a path, or a `file:`/`sqlite://` URI) into the empty
/// PostgreSQL database at `to`, calling `progress` every 10,000 rows of a table
/// and when each table is done. Either everything is copied or the target is left empty.
pub async fn sqlite_to_postgres(
    from: &str,
    to: &str,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Copied, CopyError> {
    if is_postgres_url(from) {
        return Err(CopyError::Usage(
            "--from takes the SQLite store's path, not a PostgreSQL URL".into(),
        ));
    }
    if !is_postgres_url(to) {
        return Err(CopyError::Usage(
            "--to takes a postgres:// or postgresql:// URL (copy-store copies into PostgreSQL)"
                .into(),
        ));
    }
    let target = redacted(to);
    let source = |why: String| CopyError::Source {
        path: from.to_owned(),
        why,
    };
    // The source first: a path that is not a store must not even migrate the target.
    let mut export = sqlite::export::open(from, BATCH_ROWS)
        .await
        .map_err(source)?;
    let snapshot = export.snapshot.clone();
    let mut throttle = Throttle::default();
    let mut report = |table: Table, copied: u64, done: bool| {
        if throttle.due(table, copied, done) {
            progress(Progress {
                table,
                copied,
                total: snapshot.rows.get(table),
            });
        }
    };
    postgres::import::fill(to, &snapshot, &mut export.batches, &mut report)
        .await
        .map_err(|failed| match failed {
            Failed::Source(why) => source(why),
            Failed::Target(why) => CopyError::Target {
                target: target.clone(),
                why,
            },
        })?;
    Ok(Copied {
        rows: snapshot.rows,
        sequences: snapshot.sequences,
        high_water: snapshot.high_water,
        target,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_reported_every_ten_thousand_rows_and_once_at_each_end() {
        let mut throttle = Throttle::default();
        let mut lines = Vec::new();
        let mut feed = |table, copied, done| {
            if throttle.due(table, copied, done) {
                lines.push((table, copied));
            }
        };
        for copied in [5_000, 10_000, 15_000, 20_000] {
            feed(Table::Results, copied, false);
        }
        feed(Table::Results, 20_000, true);
        feed(Table::Links, 0, true);
        feed(Table::WebhookEvents, 9_999, false);
        feed(Table::WebhookEvents, 9_999, true);
        assert_eq!(
            lines,
            vec![
                (Table::Results, 10_000),
                (Table::Results, 20_000),
                (Table::Links, 0),
                (Table::WebhookEvents, 9_999),
            ],
            "20,000 is not repeated at the end; an empty table gets its line"
        );
    }

    #[test]
    fn the_summary_names_every_table_the_sequences_and_the_redacted_target() {
        let mut rows = Rows::default();
        for (i, table) in Table::ALL.into_iter().enumerate() {
            rows.set(table, i as u64 + 1);
        }
        let copied = Copied {
            rows,
            sequences: Some((4, 8)),
            high_water: 9,
            target: redacted("postgres://app:s3cret@db/refresh"),
        };
        assert_eq!(
            copied.to_string(),
            "copied 9 results (sequences 4..8, next 10), 1 links, 2 link_tokens, \
             3 accounts, 4 movements, 5 refresh_intents, 6 intent_accounts, \
             7 idempotency_keys, 8 fintoc_key_series, 10 fetch_jobs, 11 webhook_events \
             into postgres://app:***@db/refresh"
        );
        let emptied = Copied {
            sequences: None,
            ..copied
        };
        assert!(
            emptied
                .to_string()
                .starts_with("copied 9 results (next sequence 10), "),
            "{emptied}"
        );
    }

    /// The `diesel::table!` names in a generated `schema.rs`: each block's first line that
    /// is not a doc comment or an attribute (`print-schema` writes table comments and
    /// `#[sql_name]` there) starts with the name.
    fn tables_in(schema: &str) -> Vec<&str> {
        schema
            .split("diesel::table! {")
            .skip(1)
            .map(|block| {
                let line = block
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with('#'))
                    .unwrap_or("");
                let name = line.split([' ', '(']).next().unwrap_or("");
                assert!(!name.is_empty(), "a table! block without a name: {block}");
                name
            })
            .collect()
    }

    /// Every table of either schema is copied or deliberately left behind (in
    /// [`NOT_COPIED`], with its reason), never forgotten: a migration that adds a table fails
    /// here until the copy carries it or the list says why it need not. And every table
    /// copied is in both schemas. (The schemas are what `diesel print-schema` generates from
    /// the migrations; CI checks that they are.)
    #[test]
    fn every_table_of_both_schemas_is_copied_or_listed_as_not_copied_with_its_reason() {
        let schemas = [
            ("sqlite", include_str!("../sqlite/schema.rs")),
            ("postgres", include_str!("../postgres/schema.rs")),
        ];
        let copied: Vec<&str> = Table::ALL.iter().map(|t| t.name()).collect();
        for (name, why) in NOT_COPIED {
            assert!(!copied.contains(&name), "{name} is both copied and not");
            assert!(!why.is_empty(), "{name} is not copied without a reason");
        }
        for (backend, schema) in schemas {
            let tables = tables_in(schema);
            for table in &tables {
                assert!(
                    copied.contains(table) || NOT_COPIED.iter().any(|(n, _)| n == table),
                    "the {backend} table {table} is neither copied by copy-store (copy::Table) \
                     nor in copy::NOT_COPIED with why it need not be: a store moved to \
                     PostgreSQL would lose it"
                );
            }
            for table in &copied {
                assert!(
                    tables.contains(table),
                    "{table} is copied but the {backend} schema has no such table"
                );
            }
        }
    }
}
