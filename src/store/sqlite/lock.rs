//! One process per SQLite store. The hub that pushes results to watchers lives in memory and
//! only hears of the commits its own process makes, so a second `serve` on the same file would
//! acknowledge webhooks whose results the first one's watchers never see. [`Store::open`]
//! therefore takes an exclusive lock before it touches the database and the store keeps it
//! until it is closed or dropped; a second opener, in this process or another, is refused with
//! the holder's pid and a pointer to PostgreSQL, which is where several replicas belong.
//!
//! The lock is an OS advisory lock (`flock` on Unix, `LockFileEx` on Windows, through std's
//! `File::try_lock`) on a file beside the database, `<db>.lock`, holding the holder's pid:
//! - It dies with its holder: the kernel drops it when the process exits, SIGKILL included, so
//!   a restart takes over at once and a stale file on disk means nothing (it is never deleted:
//!   unlinking a lock file lets two processes lock two different inodes).
//! - It leaves SQLite alone. SQLite's own `locking_mode = EXCLUSIVE` would hold the database's
//!   lock from the first write on: the read pool and the checkpoint thread, separate
//!   connections in this same process, could no longer read beside the writer, and WAL would
//!   drop its shared-memory index. Locking the database file itself is no better: SQLite uses
//!   POSIX locks on it, which a process loses when it closes *any* descriptor of that file,
//!   and on some systems `flock` is emulated with those very locks.
//! - It is per open file description, so a second [`lock_exclusive`] in the same process is
//!   refused too (two stores on one file would split the stream the same way). Each store
//!   takes it exactly once, in [`Store::open`].
//! - The path is resolved through symlinks first, as SQLite resolves the database's, so two
//!   spellings of one file meet on one lock file. Percent-escapes in a `file:` URI are not
//!   decoded; spell the path the same way everywhere. Advisory locks may not work across
//!   machines on a network file system, where SQLite itself is unsafe anyway.
//!
//! In-memory databases (`:memory:`, an empty path, `mode=memory`) belong to their connection
//! and need no lock.
//!
//! Other subcommands: one that only reads (`copy-store`, through `export.rs`) opens the
//! file without this lock and reads inside one transaction, which WAL
//! gives a consistent snapshot of while a server keeps writing. Anything that writes to the
//! file must hold this lock, that is, open it through [`Store::open`] or take
//! [`lock_exclusive`] first.
//!
//! [`Store::open`]: crate::store::Store::open

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Held while a store owns its database file; dropping it releases the lock.
#[derive(Debug)]
pub struct DbLock {
    _file: File,
    /// Kept for the tests, which check where the lock went.
    #[cfg_attr(not(test), expect(dead_code))]
    path: PathBuf,
}

impl DbLock {
    /// The lock file beside the database.
    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the database cannot be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it: another process (its pid when it wrote one), or another store
    /// in this process.
    #[error("{}", held_message(*.pid))]
    Held { pid: Option<u32> },
    #[error("cannot lock {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn held_message(pid: Option<u32>) -> String {
    let holder = match pid {
        Some(pid) if pid == std::process::id() => {
            format!("already open in this process (pid {pid})")
        }
        Some(pid) => format!("in use by another process (pid {pid})"),
        None => "in use by another process".to_owned(),
    };
    // Read after "cannot open the database …: ", so it names no subject of its own.
    format!(
        "{holder}; a SQLite database serves one process, so several replicas need PostgreSQL \
         (a postgres:// DATABASE_URL)"
    )
}

/// Takes the exclusive lock for the SQLite database at `url` (a path, or a `file:` /
/// `sqlite://` URI), without waiting. `None` for an in-memory database, which needs none.
pub fn lock_exclusive(url: &str) -> Result<Option<DbLock>, LockError> {
    let Some(db) = database_file(url) else {
        return Ok(None);
    };
    let path = lock_path(&db);
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            // The holder writes its pid just after locking; in that instant it is not there
            // yet and the line goes without it.
            let mut text = String::new();
            let pid = file
                .read_to_string(&mut text)
                .ok()
                .and_then(|_| text.trim().parse().ok());
            return Err(LockError::Held { pid });
        }
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    file.set_len(0).map_err(io)?;
    writeln!(file, "{}", std::process::id()).map_err(io)?;
    Ok(Some(DbLock { _file: file, path }))
}

/// The file SQLite opens for `url`, or `None` for an in-memory database. Follows how diesel
/// and SQLite read it: `sqlite://` means `file:`, a URI's query and fragment are not part of
/// the path, and its authority is empty or `localhost`.
pub(super) fn database_file(url: &str) -> Option<PathBuf> {
    let path = match url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("file:"))
    {
        None => url,
        Some(rest) => {
            let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            if query.split('&').any(|param| param == "mode=memory") {
                return None;
            }
            match path.strip_prefix("//") {
                Some(authority_and_path) => authority_and_path
                    .find('/')
                    .map_or("", |slash| &authority_and_path[slash..]),
                None => path,
            }
        }
    };
    if path.is_empty() || path == ":memory:" {
        return None;
    }
    Some(PathBuf::from(path))
}

/// `<db>.lock` beside the file SQLite really opens: symlinks resolved, as SQLite does, so every
/// spelling of one database meets on one lock. The database may not exist yet; then its
/// directory is resolved instead.
fn lock_path(db: &Path) -> PathBuf {
    let resolved = std::fs::canonicalize(db).ok().or_else(|| {
        let dir = db.parent().filter(|dir| !dir.as_os_str().is_empty());
        let dir = std::fs::canonicalize(dir.unwrap_or(Path::new("."))).ok()?;
        Some(dir.join(db.file_name()?))
    });
    let mut name = resolved
        .unwrap_or_else(|| db.to_path_buf())
        .into_os_string();
    name.push(".lock");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(dir: &tempfile::TempDir, name: &str) -> String {
        dir.path().join(name).to_string_lossy().into_owned()
    }

    /// The lock excludes a second holder (here a second open file description in the same
    /// process, which the kernel treats like another process) and names the holder's pid.
    #[test]
    fn a_second_lock_on_the_same_database_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let db = url(&dir, "a.db");
        let held = lock_exclusive(&db).unwrap().expect("a file needs a lock");
        assert_eq!(
            held.path(),
            dir.path().canonicalize().unwrap().join("a.db.lock")
        );
        let pid = std::fs::read_to_string(held.path()).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());
        let err = lock_exclusive(&db).unwrap_err();
        assert!(
            matches!(err, LockError::Held { pid: Some(p) } if p == std::process::id()),
            "{err:?}"
        );
        let line = err.to_string();
        assert!(
            line.contains(&format!("(pid {})", std::process::id())),
            "{line}"
        );
        assert!(
            line.contains("PostgreSQL") && line.contains("postgres://"),
            "{line}"
        );
        assert!(!line.contains('\n'), "one line: {line}");
        // Other spellings of the same file meet on the same lock.
        let relative = dir.path().join(".").join("a.db");
        assert!(lock_exclusive(&relative.to_string_lossy()).is_err());
        assert!(lock_exclusive(&format!("file:{db}?cache=private")).is_err());
        assert!(lock_exclusive(&format!("sqlite://{db}")).is_err());
        // A different database is unaffected.
        assert!(lock_exclusive(&url(&dir, "b.db")).unwrap().is_some());
    }

    /// Dropping the holder releases the lock at once; the stale file left behind (with a pid
    /// in it) does not count.
    #[test]
    fn dropping_the_lock_releases_it_and_the_stale_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let db = url(&dir, "a.db");
        let first = lock_exclusive(&db).unwrap().unwrap();
        let path = first.path().to_owned();
        drop(first);
        std::fs::write(&path, "999999\n").unwrap();
        let second = lock_exclusive(&db).unwrap().unwrap();
        let pid = std::fs::read_to_string(second.path()).unwrap();
        assert_eq!(
            pid,
            format!("{}\n", std::process::id()),
            "the old pid is replaced"
        );
    }

    /// A holder that has not written its pid yet (or an unreadable file) still refuses,
    /// only without the pid.
    #[test]
    fn a_holder_without_a_pid_is_still_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = url(&dir, "a.db");
        let held = lock_exclusive(&db).unwrap().unwrap();
        std::fs::write(held.path(), "").unwrap();
        let err = lock_exclusive(&db).unwrap_err();
        assert!(matches!(err, LockError::Held { pid: None }), "{err:?}");
        assert!(
            err.to_string().contains("in use by another process;"),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_to_the_database_meets_the_same_lock() {
        let dir = tempfile::tempdir().unwrap();
        let real = url(&dir, "real.db");
        std::fs::write(&real, "").unwrap();
        let link = url(&dir, "link.db");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let _held = lock_exclusive(&real).unwrap().unwrap();
        assert!(matches!(lock_exclusive(&link), Err(LockError::Held { .. })));
    }

    #[test]
    fn in_memory_databases_need_no_lock() {
        for url in [
            "",
            ":memory:",
            "file::memory:",
            "file:shared?mode=memory&cache=shared",
        ] {
            assert!(lock_exclusive(url).unwrap().is_none(), "{url:?}");
            assert!(lock_exclusive(url).unwrap().is_none(), "twice: {url:?}");
        }
    }

    #[test]
    fn uris_name_the_file_sqlite_opens() {
        let cases = [
            ("data.db", Some("data.db")),
            ("/var/lib/x.db", Some("/var/lib/x.db")),
            ("file:data.db?mode=rwc", Some("data.db")),
            ("file:///var/lib/x.db", Some("/var/lib/x.db")),
            ("file://localhost/var/lib/x.db#frag", Some("/var/lib/x.db")),
            ("sqlite://data.db", Some("data.db")),
            ("sqlite:///var/lib/x.db", Some("/var/lib/x.db")),
            ("file:?mode=ro", None),
        ];
        for (url, want) in cases {
            assert_eq!(database_file(url), want.map(PathBuf::from), "{url}");
        }
    }
}
