//! A PostgreSQL server of a test's own (initdb into a temp dir, its own port), for tests that
//! stop and start it, configure it (TLS, `pg_hba.conf`, read-only), or need several: nothing
//! they do touches another test. initdb refuses to run as root: as root it runs as the
//! `postgres` user, and the files handed to the server are given to that user.

use std::path::{Path, PathBuf};
use std::process::Command;

/// How a private server is set up before its first start.
#[derive(Default)]
pub struct Setup<'a> {
    /// Files written into the data directory as `(name, content)`, readable by the server's
    /// user only (it refuses a key file others may read). Settings name them relative to the
    /// data directory: `ssl_cert_file = 'server.pem'`.
    pub files: &'a [(&'a str, &'a str)],
    /// Lines appended to `postgresql.conf`, e.g. `ssl = on`.
    pub conf: &'a [&'a str],
    /// The whole of `pg_hba.conf`, instead of initdb's (which trusts everyone). Keep a
    /// `local all all trust` line for [`PrivatePostgres::execute`].
    pub hba: Option<&'a str>,
}

pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl PrivatePostgres {
    /// A server as initdb makes it (everyone trusted), started.
    pub fn start() -> PrivatePostgres {
        PrivatePostgres::start_with(Setup::default())
    }

    pub fn start_with(setup: Setup<'_>) -> PrivatePostgres {
        let bindir = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .expect("a private PostgreSQL needs PostgreSQL's server binaries (pg_config --bindir)");
        let bin = PathBuf::from(String::from_utf8(bindir.stdout).unwrap().trim());
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePostgres { dir, port, bin };
        pg.give(pg.dir.path(), true);
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        for (name, content) in setup.files {
            let path = data.join(name);
            std::fs::write(&path, content).unwrap();
            pg.give(&path, false);
        }
        if !setup.conf.is_empty() {
            let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
            conf.push('\n');
            for line in setup.conf {
                conf.push_str(line);
                conf.push('\n');
            }
            std::fs::write(data.join("postgresql.conf"), conf).unwrap();
        }
        if let Some(hba) = setup.hba {
            std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
        }
        pg.ctl("start");
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn as_root(&self) -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe extern "C" {
            fn geteuid() -> u32;
        }
        unsafe { geteuid() == 0 }
    }

    /// Makes `path` the server user's (when running as root); a file, readable by it alone.
    fn give(&self, path: &Path, recursive: bool) {
        if self.as_root() {
            let ok = Command::new("chown")
                .args(if recursive { &["-R"][..] } else { &[] })
                .arg("postgres:postgres")
                .arg(path)
                .status()
                .unwrap();
            assert!(ok.success());
        }
        if !recursive {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let out = if self.as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        }
        .unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `pg_ctl start` / `stop` (fast) on this server.
    pub fn ctl(&self, action: &str) {
        let data = self.data();
        let log = self.dir.path().join("log");
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-m",
                "fast",
                "-w",
                action,
            ],
        );
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:<port>/<database>`, over TCP.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Runs `sql` (one statement or several) on `database` as `postgres`, over the Unix
    /// socket, whatever `pg_hba.conf` asks of TCP connections. The rows of a query, each
    /// column as text.
    pub async fn execute(&self, database: &str, sql: &str) -> Vec<Vec<Option<String>>> {
        let (client, connection) = tokio_postgres::Config::new()
            .host_path(self.dir.path())
            .port(self.port)
            .user("postgres")
            .dbname(database)
            .connect(tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let mut rows = Vec::new();
        for message in client.simple_query(sql).await.unwrap() {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
                rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                );
            }
        }
        rows
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.data();
        let program = self.bin.join("pg_ctl");
        let args = ["-D", data.to_str().unwrap(), "-m", "immediate", "stop"];
        let _ = if self.as_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&program)
                .args(args)
                .output()
        } else {
            Command::new(&program).args(args).output()
        };
    }
}
