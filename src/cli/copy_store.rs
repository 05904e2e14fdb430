//! `fintoc-refresh copy-store`: moving a SQLite store's history into an empty PostgreSQL
//! database, every sequence kept (`store::copy` does the work). Progress goes to stderr, one
//! line per table and more for big ones; the summary is the one line on stdout.

use std::process::ExitCode;

use clap::Args;

use super::init_tracing;
use crate::store::copy::{self, CopyError, Progress};

#[derive(Clone, Args)]
pub struct CopyStoreArgs {
    /// The SQLite store to copy: its path. Only read, never locked or changed, so a server
    /// may keep running on it; the copy is the store as it was when the copy began.
    #[arg(long, value_name = "SQLITE_PATH")]
    pub from: String,
    /// The PostgreSQL database to fill (postgres://… or postgresql://…). It is migrated,
    /// and refused if it already holds data. Prefer the env var: a password on the command
    /// line is visible to other users of the machine.
    #[arg(
        long,
        value_name = "POSTGRES_URL",
        env = "DATABASE_URL",
        hide_env_values = true
    )]
    pub to: String,
}

// By hand, so the target's password cannot leak through `{:?}`.
impl std::fmt::Debug for CopyStoreArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyStoreArgs")
            .field("from", &self.from)
            .field("to", &crate::store::redacted(&self.to))
            .finish()
    }
}

pub async fn run(args: CopyStoreArgs) -> ExitCode {
    init_tracing("text");
    let mut progress = |p: Progress| {
        eprintln!("copying {}: {}/{}", p.table.name(), p.copied, p.total);
    };
    match copy::sqlite_to_postgres(&args.from, &args.to, &mut progress).await {
        Ok(copied) => {
            println!("{copied}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e {
                CopyError::Usage(_) => 2,
                CopyError::Source { .. } | CopyError::Target { .. } => 1,
            })
        }
    }
}
