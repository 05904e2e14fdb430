//! The `fintoc-refresh` binary as a child process, for the end-to-end tests and the benchmark
//! harness (both include this file): which binary (this build's, or the one
//! `FINTOC_REFRESH_BIN` names), `serve` on port 0 with its output piped, the listening line
//! read and its addresses parsed, and the process killed when its handle is dropped, so a
//! failing test or an interrupted benchmark leaves nothing running.

// Each including target uses a different part of it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// This build's binary, the one cargo built for this test or bench target.
pub const THIS_BUILD: &str = env!("CARGO_BIN_EXE_fintoc-refresh");

/// The binary under test: this build's, or the one `FINTOC_REFRESH_BIN` names (to run the
/// tests against another build, e.g. to see a new test fail on the code before its fix).
pub fn path() -> String {
    std::env::var("FINTOC_REFRESH_BIN").unwrap_or_else(|_| THIS_BUILD.to_owned())
}

/// A command for the binary under test, for runs that are not a `serve` to talk to (a bad
/// configuration, `--help`, `copy-store`, the CLI).
pub fn command() -> Command {
    Command::new(path())
}

/// Where a served process's stderr goes.
enum Stderr {
    Null,
    Inherit,
    /// A pipe the test reads ([`Running::take_stderr`]).
    Piped,
    /// A temporary file, shown when the process exits before listening and readable with
    /// [`Running::stderr`].
    Log,
    /// A file of the caller's.
    File(std::fs::File),
}

/// `serve` on port 0 (gRPC and HTTP on 127.0.0.1), to be started with [`Serve::start`].
pub struct Serve {
    command: Command,
    grpc_addr: String,
    http_addr: String,
    stderr: Stderr,
    extra_lines: usize,
}

impl Serve {
    /// `serve` with the binary under test ([`path`]).
    pub fn new() -> Serve {
        Serve::with_binary(path())
    }

    /// `serve` with another build of the binary.
    pub fn with_binary(binary: impl AsRef<OsStr>) -> Serve {
        let mut command = Command::new(binary);
        command.arg("serve");
        Serve {
            command,
            grpc_addr: "127.0.0.1:0".into(),
            http_addr: "127.0.0.1:0".into(),
            stderr: Stderr::Null,
            extra_lines: 0,
        }
    }

    /// `--grpc-addr` instead of 127.0.0.1:0.
    pub fn grpc_addr(mut self, addr: &str) -> Serve {
        self.grpc_addr = addr.to_owned();
        self
    }

    /// `--http-addr` instead of 127.0.0.1:0.
    pub fn http_addr(mut self, addr: &str) -> Serve {
        self.http_addr = addr.to_owned();
        self
    }

    /// `--database-url <database>` (a SQLite path or a PostgreSQL URL).
    pub fn database(mut self, database: impl AsRef<OsStr>) -> Serve {
        self.command.arg("--database-url").arg(database);
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Serve {
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Serve
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Serve {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Serve {
        self.command.env_remove(key);
        self
    }

    /// Lines after the listening line to read before [`Serve::start`] returns (`--simulate`
    /// prints its demo links there), kept in [`Running::extra`].
    pub fn extra_lines(mut self, lines: usize) -> Serve {
        self.extra_lines = lines;
        self
    }

    /// Stderr to the test's own (the benchmark's progress goes there too).
    pub fn stderr_inherit(mut self) -> Serve {
        self.stderr = Stderr::Inherit;
        self
    }

    /// Stderr to a pipe, read through [`Running::take_stderr`].
    pub fn stderr_piped(mut self) -> Serve {
        self.stderr = Stderr::Piped;
        self
    }

    /// Stderr to a temporary file: [`Running::stderr`] reads it, and a process that exits
    /// before listening panics with it.
    pub fn stderr_log(mut self) -> Serve {
        self.stderr = Stderr::Log;
        self
    }

    /// Stderr to `file`.
    pub fn stderr_file(mut self, file: std::fs::File) -> Serve {
        self.stderr = Stderr::File(file);
        self
    }

    /// Starts the process without waiting for anything: for a `serve` expected to refuse
    /// to start. Its stdout stays piped, in [`Running::child`].
    pub fn spawn(mut self) -> Running {
        let mut log = None;
        let stderr = match self.stderr {
            Stderr::Null => Stdio::null(),
            Stderr::Inherit => Stdio::inherit(),
            Stderr::Piped => Stdio::piped(),
            Stderr::File(file) => file.into(),
            Stderr::Log => {
                let file = tempfile::NamedTempFile::new().unwrap();
                let stdio = file.reopen().unwrap().into();
                log = Some(file);
                stdio
            }
        };
        let child = self
            .command
            .args([
                "--grpc-addr",
                &self.grpc_addr,
                "--http-addr",
                &self.http_addr,
            ])
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("the binary {:?} starts: {e}", self.command.get_program()));
        Running {
            child,
            grpc: String::new(),
            http: String::new(),
            extra: Vec::new(),
            log,
        }
    }

    /// Starts the process and waits for its listening line (`listening grpc=… http=…`, written
    /// once storage is open and both ports are bound), then for the extra lines asked for.
    pub fn start(self) -> Running {
        let extra_lines = self.extra_lines;
        let mut running = self.spawn();
        let mut lines = BufReader::new(running.child.stdout.take().unwrap()).lines();
        let Some(Ok(first)) = lines.next() else {
            panic!(
                "the server exited before listening: {}",
                running.stderr().trim_end()
            );
        };
        (running.grpc, running.http) = listening_addresses(&first);
        running.extra = (0..extra_lines)
            .map(|_| lines.next().expect("another line").unwrap())
            .collect();
        running
    }
}

/// The gRPC and HTTP addresses of the listening line `listening grpc=<addr> http=<addr>`;
/// panics on any other line, or on a port 0 (the bound port must be the one printed).
pub fn listening_addresses(line: &str) -> (String, String) {
    let parts: Vec<&str> = line.split(' ').collect();
    assert_eq!(parts.len(), 3, "{line}");
    assert_eq!(parts[0], "listening", "{line}");
    let grpc = parts[1].strip_prefix("grpc=").expect(line).to_owned();
    let http = parts[2].strip_prefix("http=").expect(line).to_owned();
    assert!(
        !grpc.ends_with(":0") && !http.ends_with(":0"),
        "real ports: {line}"
    );
    (grpc, http)
}

/// A started `serve`; killed (SIGKILL) and reaped when dropped.
pub struct Running {
    pub child: Child,
    pub grpc: String,
    pub http: String,
    /// The lines read after the listening line ([`Serve::extra_lines`]).
    pub extra: Vec<String>,
    log: Option<tempfile::NamedTempFile>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends the signal `name` (`TERM`, `STOP`, `CONT`, …) with `kill`.
    pub fn signal(&self, name: &str) {
        signal(&self.child, name);
    }

    pub fn sigterm(&self) {
        self.signal("TERM");
    }

    pub fn sigkill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Waits up to `within` for the process to exit; its status, if it did.
    pub fn exited_within(&mut self, within: Duration) -> Option<ExitStatus> {
        exited_within(&mut self.child, within)
    }

    /// Waits up to `within` for the process to exit, and panics if it does not.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        self.exited_within(within)
            .expect("the process did not exit in time")
    }

    /// The stderr pipe ([`Serve::stderr_piped`]).
    pub fn take_stderr(&mut self) -> ChildStderr {
        self.child.stderr.take().expect("stderr piped")
    }

    /// What the process wrote to stderr so far, with [`Serve::stderr_log`] (else nothing).
    pub fn stderr(&self) -> String {
        let mut out = String::new();
        if let Some(log) = &self.log {
            let _ = log.reopen().unwrap().read_to_string(&mut out);
        }
        out
    }
}

/// Sends the signal `name` to `child` with `kill`, and panics if it cannot be sent.
pub fn signal(child: &Child, name: &str) {
    assert!(try_signal(child, name), "kill -{name} failed");
}

/// Sends the signal `name` to `child` with `kill`; whether it was sent (not if the process
/// has exited and been reaped).
pub fn try_signal(child: &Child, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits up to `within` for `child` to exit; its status, if it did.
pub fn exited_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
