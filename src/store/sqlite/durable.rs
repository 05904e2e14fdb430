//! Making commits durable off the writer's thread: the second half of the group commit.
//!
//! With `synchronous=FULL` SQLite fsyncs the WAL inside every COMMIT, while it holds the only
//! write lock: the writer sat idle for that fsync (half of each group commit's time here), and
//! nothing else could be written meanwhile. So the writer connection runs with
//! `synchronous=NORMAL` — COMMIT writes the WAL frames but does not sync them — and hands each
//! committed group to this thread, then goes straight on to the next group. This thread takes
//! every group committed so far, syncs the WAL file once (`fdatasync` after the frames were
//! written, so it covers them all), and only then hands their results to the sink (the hub) and
//! answers their callers. The promise is unchanged: no caller hears "done" before its work is
//! on disk. What changes is that the next group's statements run during this group's fsync,
//! and one fsync covers every group that committed while the previous one was running.
//!
//! Two things keep that honest:
//! - Readers must not show what is not yet durable. A reader can see a committed but unsynced
//!   row, so every read answers only once the groups it could have seen are settled here,
//!   after the sync (`progress.rs`), and reads of the result log are also capped at the
//!   durable high water, which moves here too (`SqliteStore::results_after`).
//! - The file synced must be the WAL SQLite writes. It is opened by the path SQLite reports,
//!   right after the writer's connection created it, and kept open: SQLite writes through its
//!   own descriptor of that same file until its last connection closes (only then may it
//!   delete the WAL), and the writer's connection outlives this thread. An fsync flushes the
//!   file, whichever descriptor wrote to it. Its directory is synced once at start so the
//!   WAL's own directory entry is durable.
//!
//! A failed fsync leaves the file in an unknown state (the kernel may have dropped the dirty
//! pages): retrying could report success for data that never reached the disk. So the process
//! stops, loudly, and recovers from what the disk holds on restart; every caller of the failed
//! groups is still unanswered, so nothing acknowledged is lost.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Instant;

use diesel::prelude::*;
use diesel::sql_types::Text;
use diesel::sqlite::SqliteConnection;

use super::progress::Progress;
use crate::metrics::Metrics;
use crate::store::{Publish, StoreError, StoreResult};

/// The WAL file of the writer's database, opened for syncing.
pub(super) struct WalFile {
    path: PathBuf,
    file: File,
}

#[derive(QueryableByName)]
struct DatabaseFile {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    file: String,
}

impl WalFile {
    /// The WAL of `conn`'s main database, or `None` for a database without a file (`:memory:`,
    /// which has no durability to promise). The WAL must exist: the connection is in WAL mode
    /// and has already read the database.
    pub(super) fn open(conn: &mut SqliteConnection) -> StoreResult<Option<WalFile>> {
        let Some(path) = wal_path(conn)? else {
            return Ok(None);
        };
        let file = File::open(&path).map_err(|source| StoreError::Io {
            doing: "opening the WAL file",
            source,
        })?;
        // The WAL was just created: make its directory entry durable too.
        if let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| StoreError::Io {
                    doing: "syncing the database directory",
                    source,
                })?;
        }
        Ok(Some(WalFile { path, file }))
    }

    /// Flushes everything written to the WAL so far to the disk.
    fn sync(&self) -> std::io::Result<()> {
        self.file
            .sync_data()
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }

    /// The sync as the syncer thread calls it.
    pub(super) fn into_sync(self) -> SyncFn {
        Box::new(move || self.sync())
    }
}

/// Where the WAL of `conn`'s main database lives, or `None` for a database without a file.
pub(super) fn wal_path(conn: &mut SqliteConnection) -> StoreResult<Option<PathBuf>> {
    let files: Vec<DatabaseFile> = diesel::sql_query("PRAGMA database_list").load(conn)?;
    let Some(main) = files.into_iter().find(|f| f.name == "main") else {
        return Err(StoreError::Corrupt(
            "SQLite reports no main database".into(),
        ));
    };
    if main.file.is_empty() {
        return Ok(None);
    }
    Ok(Some(PathBuf::from(format!("{}-wal", main.file))))
}

/// Makes everything committed so far durable.
pub(super) type SyncFn = Box<dyn Fn() -> std::io::Result<()> + Send>;

/// A group the writer committed (or failed to commit), as the syncer sees it.
pub(super) trait Group: Send {
    /// Whether its commit succeeded: only those need the sync.
    fn committed(&self) -> bool;
    /// The number it took before its COMMIT (the previous group's if it never got there).
    fn number(&self) -> u64;
    /// Publishes its results and answers its callers; called once it is durable (or its
    /// commit failed).
    fn finish(self, publish: &Publish, metrics: &Metrics);
}

/// The syncer thread's loop: until the writer hangs up, sync every group committed so far
/// with one fsync, settle their numbers (readers may now show them), then publish and answer
/// them in commit order. `sync` is `None` for a database without a file.
pub(super) fn run<G: Group>(
    rx: Receiver<G>,
    sync: Option<SyncFn>,
    publish: Publish,
    metrics: Arc<Metrics>,
    progress: Arc<Progress>,
) {
    let mut groups = Vec::new();
    while let Ok(first) = rx.recv() {
        groups.push(first);
        while let Ok(more) = rx.try_recv() {
            groups.push(more);
        }
        if groups.iter().any(Group::committed)
            && let Some(sync) = sync.as_ref()
        {
            let started = Instant::now();
            if let Err(e) = sync() {
                tracing::error!(
                    error = %e,
                    "fsync of the WAL failed: durability can no longer be promised; stopping so \
                     a restart recovers from what the disk holds (unanswered webhooks are retried)"
                );
                std::process::abort();
            }
            metrics.wal_syncs.inc();
            metrics
                .wal_sync_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        if let Some(number) = groups.iter().map(Group::number).max() {
            progress.settle(number);
        }
        for group in groups.drain(..) {
            group.finish(&publish, &metrics);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::Connection;
    use diesel::connection::SimpleConnection;

    #[test]
    fn finds_the_wal_of_a_file_database_and_none_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.db");
        let mut conn = SqliteConnection::establish(&path.to_string_lossy()).unwrap();
        conn.batch_execute("PRAGMA journal_mode = WAL; CREATE TABLE t (x);")
            .unwrap();
        let wal = WalFile::open(&mut conn).unwrap().expect("a WAL");
        assert_eq!(wal.path, dir.path().join("d.db-wal"));
        conn.batch_execute("INSERT INTO t VALUES (1)").unwrap();
        wal.sync().unwrap();

        let mut memory = SqliteConnection::establish(":memory:").unwrap();
        assert!(WalFile::open(&mut memory).unwrap().is_none());
    }
}
