//! A real PgBouncer (Debian's package) in front of a PostgreSQL, on a port of its own, for the
//! end-to-end tests and the benchmark harness (both include this file). PgBouncer refuses to
//! run as root: as root it is told to switch to the `postgres` user (`-u`), and its files are
//! handed to that user. Without PgBouncer installed, starting one panics with how to install
//! it: nothing that needs it is skipped in silence.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One PgBouncer; stopped when dropped.
pub struct PgBouncer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe extern "C" {
        fn geteuid() -> u32;
    }
    unsafe { geteuid() == 0 }
}

impl PgBouncer {
    /// PgBouncer in `mode` (`transaction` or `session`) in front of the server of the
    /// PostgreSQL URL `url`, letting its user in (trust), with at most `sessions` server
    /// sessions per database and user.
    pub fn start(mode: &str, url: &str, sessions: u32) -> PgBouncer {
        let url = reqwest::Url::parse(url).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        std::fs::write(path("users.txt"), format!("\"{}\" \"\"\n", url.username())).unwrap();
        std::fs::write(
            path("pgbouncer.ini"),
            format!(
                "[databases]\n* = host={} port={}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
                 listen_port = {port}\nauth_type = trust\nauth_file = {}\npool_mode = {mode}\n\
                 max_client_conn = 1000\ndefault_pool_size = {sessions}\nunix_socket_dir =\n\
                 logfile = {}\n",
                url.host_str().unwrap(),
                url.port().unwrap_or(5432),
                path("users.txt"),
                path("pgbouncer.log"),
            ),
        )
        .unwrap();
        let mut command = Command::new("pgbouncer");
        if as_root() {
            let owned = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(owned.success());
            command.args(["-u", "postgres"]);
        }
        let child = command
            .arg(path("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "PgBouncer is needed (Debian: apt-get install pgbouncer), and it cannot be \
                     started: {e}"
                )
            });
        let bouncer = PgBouncer { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PgBouncer did not listen: {}",
                bouncer.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        bouncer
    }

    /// The PostgreSQL URL `url` (of the server this PgBouncer fronts), through it.
    pub fn url(&self, url: &str) -> String {
        let mut url = reqwest::Url::parse(url).unwrap();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.port)).unwrap();
        url.to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pgbouncer.log")).unwrap_or_default()
    }
}
