//! The server under test: the release binary as a child process on port 0, with a fresh
//! SQLite file on disk (under target/, not a tmpfs), and its RSS and CPU time from /proc.

use std::path::PathBuf;
use std::time::Duration;

use crate::binary::{self, Running, Serve};

pub const SECRET: &str = "whsec_bench_secret";
pub const API_KEY: &str = "sk_test_bench";

/// A running server; killed when dropped (an interrupted section leaves nothing running).
pub struct Server {
    process: Running,
    pub grpc: String,
    pub http: String,
    pub db: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `serve` with `args` added to the defaults (production durability, port 0).
    /// BENCH_SERVER_ARGS (space-separated) adds more, for experiments.
    pub fn start(args: &[&str]) -> Server {
        Self::start_on(None, args)
    }

    /// [`Server::start`] on `database_url` (a PostgreSQL database several may share), or
    /// on a fresh SQLite file when `None`.
    pub fn start_on(database_url: Option<&str>, args: &[&str]) -> Server {
        Self::start_binary(binary::THIS_BUILD, database_url, args)
    }

    /// [`Server::start_on`] with another build of the binary (`BENCH_BASELINE_BIN`: the
    /// code before a change, measured in the same run).
    pub fn start_binary(binary: &str, database_url: Option<&str>, args: &[&str]) -> Server {
        let extra = std::env::var("BENCH_SERVER_ARGS").unwrap_or_default();
        let dir = tempfile::Builder::new()
            .prefix("bench-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir");
        let db = match database_url {
            Some(url) => PathBuf::from(url),
            None => dir.path().join("bench.db"),
        };
        let process = Serve::with_binary(binary)
            .database(&db)
            .args(args)
            .args(extra.split_whitespace())
            .env("FINTOC_SECRET_KEY", API_KEY)
            .env("FINTOC_WEBHOOK_SECRET", SECRET)
            .env("RUST_LOG", "error")
            .stderr_inherit()
            .start();
        Server {
            grpc: process.grpc.clone(),
            http: process.http.clone(),
            process,
            db,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn rss_kb(&self) -> u64 {
        rss_kb(self.pid())
    }

    /// SIGTERM, then wait for a clean exit (a SIGKILL after 20 s).
    pub fn stop(mut self) -> (PathBuf, tempfile::TempDir) {
        binary::try_signal(&self.process.child, "TERM");
        if self
            .process
            .exited_within(Duration::from_secs(20))
            .is_none()
        {
            let _ = self.process.child.kill();
        }
        (self.db, self._dir)
    }
}

pub fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User + system CPU seconds of a process (all threads).
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

pub fn own_cpu_secs() -> f64 {
    cpu_secs(std::process::id())
}

pub fn describe_machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(1)
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024);
    format!("machine: {cores} cores ({cpu}), {mem} GiB RAM; server and load generator share it")
}
