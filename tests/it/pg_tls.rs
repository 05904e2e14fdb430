//! TLS to PostgreSQL as libpq does it, end to end: the real `serve` binary against a private
//! PostgreSQL (`private_pg.rs`) with TLS on, certificates made per test. What they prove:
//! `require` with an `sslrootcert` checks the chain; `verify-ca` checks the chain and not
//! the host name, `verify-full` both; a client certificate (`sslcert`/`sslkey`) passes
//! `cert` authentication; `sslrootcert=system` refuses a weak `sslmode`; and a two-host URL
//! with `target_session_attrs=read-write` finds the writable server. Every refusal comes at
//! start: a non-zero exit, one line on stderr, no listening line.

use std::io::Read;

use fintoc_refresh::clock::system_now_ms;
use rcgen::{ExtendedKeyUsagePurpose, Issuer, KeyPair};

use crate::binary::Serve;
use crate::common::*;
use crate::private_pg::{PrivatePostgres, Setup};
use crate::replicas::{NO_FINTOC, Replica, eventually};
use crate::tls::{authority, leaf};

/// Files the service reads (CA certificates, its client certificate and key).
struct Files(tempfile::TempDir);

impl Files {
    fn new() -> Files {
        Files(tempfile::tempdir().unwrap())
    }

    /// Writes `content` to `name`; its path.
    fn write(&self, name: &str, content: &str) -> String {
        let path = self.0.path().join(name);
        std::fs::write(&path, content).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

fn server_cert(ca: &Issuer<'static, KeyPair>, name: &str) -> (String, String) {
    leaf(ca, &[name], ExtendedKeyUsagePurpose::ServerAuth)
}

/// A private PostgreSQL with TLS on, serving the certificate and key `server`, trusting
/// `ca_pem` for client certificates, with `hba` as its `pg_hba.conf` if given, and a
/// database `refresh`.
async fn tls_server(server: &(String, String), ca_pem: &str, hba: Option<&str>) -> PrivatePostgres {
    let pg = PrivatePostgres::start_with(Setup {
        files: &[
            ("server.pem", &server.0),
            ("server.key", &server.1),
            ("ca.pem", ca_pem),
        ],
        conf: &[
            "ssl = on",
            "ssl_cert_file = 'server.pem'",
            "ssl_key_file = 'server.key'",
            "ssl_ca_file = 'ca.pem'",
        ],
        hba,
    });
    pg.execute("postgres", "CREATE DATABASE refresh").await;
    pg
}

/// A webhook posted to `replica` is answered 200 and stored in `pg`'s `refresh` database.
async fn stores_a_webhook(replica: &Replica, pg: &PrivatePostgres) {
    let http = reqwest::Client::new();
    let body = event("evt_pg_tls", "acc_pg_tls", "succeeded", system_now_ms());
    let (status, text) = replica
        .post(&http, &body)
        .await
        .expect("the replica answers");
    assert_eq!(status, 200, "{text}; stderr: {}", replica.stderr());
    let rows = pg
        .execute("refresh", "SELECT count(*) FROM webhook_events")
        .await;
    assert_eq!(rows[0][0].as_deref(), Some("1"));
}

/// The service's sessions on `pg` (those over TCP: the test's own come by the Unix socket),
/// as the server sees them: whether each is TLS, and the subject of the client
/// certificate it presented.
async fn sessions(pg: &PrivatePostgres) -> Vec<(bool, Option<String>)> {
    pg.execute(
        "postgres",
        "SELECT ssl, client_dn FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE datname = 'refresh' AND client_addr IS NOT NULL",
    )
    .await
    .into_iter()
    .map(|row| (row[0].as_deref() == Some("t"), row[1].clone()))
    .collect()
}

/// `serve` on `url` starts, stores a webhook in `pg`, and every connection it has open is
/// TLS; those sessions.
async fn serves_over_tls(pg: &PrivatePostgres, url: &str) -> Vec<(bool, Option<String>)> {
    let replica = Replica::start(url, NO_FINTOC, &[]);
    stores_a_webhook(&replica, pg).await;
    let sessions = sessions(pg).await;
    assert!(!sessions.is_empty(), "the service has connections open");
    assert!(sessions.iter().all(|(ssl, _)| *ssl), "{sessions:?}");
    sessions
}

/// Runs `serve` on `url`, which must refuse to start: exit non-zero with one line on stderr
/// and nothing listening. The exit code and that line.
fn refused(url: &str) -> (i32, String) {
    let mut running = Serve::new()
        .args(["--database-url", url, "--fintoc-api-url", NO_FINTOC])
        .env("FINTOC_SECRET_KEY", API_KEY)
        .env("FINTOC_WEBHOOK_SECRET", SECRET)
        .env("RUST_LOG", "off")
        .stderr_piped()
        .spawn();
    let Some(status) = running.exited_within(2 * PATIENCE) else {
        panic!("serve on {url} is still running: it should have refused to start");
    };
    let (mut out, mut err) = (String::new(), String::new());
    running
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    running.take_stderr().read_to_string(&mut err).unwrap();
    assert!(!out.contains("listening"), "{url}: {out}");
    let err = err.trim_end().to_owned();
    assert_eq!(err.lines().count(), 1, "{url}: one line, got {err:?}");
    (status.code().expect("an exit code, not a signal"), err)
}

/// libpq: "if a root CA file exists, the behavior of sslmode=require will be the same as
/// that of verify-ca". Without that, any certificate would do and the second start would
/// serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_with_an_sslrootcert_checks_the_servers_chain() {
    let (ca_pem, ca) = authority("PostgreSQL test CA");
    let (other_pem, _) = authority("some other CA");
    let pg = tls_server(&server_cert(&ca, "127.0.0.1"), &ca_pem, None).await;
    let files = Files::new();
    let url = |root: &str| format!("{}?sslmode=require&sslrootcert={root}", pg.url("refresh"));
    serves_over_tls(&pg, &url(&files.write("ca.pem", &ca_pem))).await;

    let (code, line) = refused(&url(&files.write("other-ca.pem", &other_pem)));
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("cannot open the database") && line.contains("UnknownIssuer"),
        "{line}"
    );
}

/// A server certificate for another name than the host connected to (db.example, reached
/// as 127.0.0.1): `verify-ca` accepts it, `verify-full` refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ca_checks_the_chain_not_the_name_and_verify_full_both() {
    let (ca_pem, ca) = authority("PostgreSQL test CA");
    let pg = tls_server(&server_cert(&ca, "db.example"), &ca_pem, None).await;
    let ca_file = Files::new();
    let root = ca_file.write("ca.pem", &ca_pem);
    let url = |mode: &str| format!("{}?sslmode={mode}&sslrootcert={root}", pg.url("refresh"));
    serves_over_tls(&pg, &url("verify-ca")).await;

    let (code, line) = refused(&url("verify-full"));
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("not valid for name") && line.contains("127.0.0.1"),
        "{line}"
    );
}

/// `pg_hba.conf` requires a client certificate on TCP (`cert`, the user being its CN): with
/// `sslcert`/`sslkey` the service connects and the server sees the certificate; without,
/// the start is refused with the server's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_passes_cert_authentication() {
    let (ca_pem, ca) = authority("PostgreSQL test CA");
    let hba = "local all all trust\nhostssl all all 127.0.0.1/32 cert\n";
    let pg = tls_server(&server_cert(&ca, "127.0.0.1"), &ca_pem, Some(hba)).await;
    let (cert, key) = leaf(&ca, &["postgres"], ExtendedKeyUsagePurpose::ClientAuth);
    let files = Files::new();
    let base = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url("refresh"),
        files.write("ca.pem", &ca_pem)
    );
    let with_cert = format!(
        "{base}&sslcert={}&sslkey={}",
        files.write("client.pem", &cert),
        files.write("client.key", &key)
    );
    let sessions = serves_over_tls(&pg, &with_cert).await;
    assert!(
        sessions
            .iter()
            .all(|(_, dn)| dn.as_deref() == Some("/CN=postgres")),
        "{sessions:?}"
    );

    let (code, line) = refused(&base);
    assert_eq!(code, 1, "{line}");
    assert!(
        line.contains("connection requires a valid client certificate"),
        "{line}"
    );
}

/// libpq 16: `sslrootcert=system` allows only `verify-full`. And a client certificate
/// without its key is refused naming both. Both before any connection is tried (exit 2,
/// the configuration's code).
#[test]
fn weak_or_half_ssl_settings_are_refused_at_start() {
    let (code, line) =
        refused("postgres://postgres@127.0.0.1:1/refresh?sslrootcert=system&sslmode=require");
    assert_eq!(code, 2, "{line}");
    assert!(
        line.contains(
            r#"weak sslmode "require" may not be used with sslrootcert=system (use "verify-full")"#
        ),
        "{line}"
    );
    let (code, line) = refused("postgres://postgres@127.0.0.1:1/refresh?sslcert=/nowhere/c.pem");
    assert_eq!(code, 2, "{line}");
    assert!(line.contains("sslcert is set but sslkey is not"), "{line}");
}

/// Two hosts, the first read-only: `target_session_attrs=read-write` makes the service pass
/// it by and use the second; without it the service connects to the first, cannot migrate,
/// and refuses to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_session_attrs_read_write_passes_a_read_only_first_host_by() {
    let (read_only, writable) = (PrivatePostgres::start(), PrivatePostgres::start());
    for pg in [&read_only, &writable] {
        pg.execute("postgres", "CREATE DATABASE refresh").await;
    }
    read_only
        .execute(
            "postgres",
            "ALTER SYSTEM SET default_transaction_read_only = on",
        )
        .await;
    read_only
        .execute("postgres", "SELECT pg_reload_conf()")
        .await;
    eventually("the first server to be read-only", || async {
        let rows = read_only
            .execute("refresh", "SHOW default_transaction_read_only")
            .await;
        rows[0][0].as_deref() == Some("on")
    })
    .await;
    let hosts = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/refresh",
        read_only.port(),
        writable.port()
    );

    let replica = Replica::start(
        &format!("{hosts}?target_session_attrs=read-write"),
        NO_FINTOC,
        &[],
    );
    stores_a_webhook(&replica, &writable).await;
    let tables = read_only
        .execute(
            "refresh",
            "SELECT count(*) FROM pg_tables WHERE tablename = 'webhook_events'",
        )
        .await;
    assert_eq!(tables[0][0].as_deref(), Some("0"), "nothing on the first");
    drop(replica);

    let (code, line) = refused(&hosts);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("read-only transaction"), "{line}");
}
