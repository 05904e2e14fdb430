//! The binary as an operator runs it: the listening line, signals, bad configuration,
//! durability across SIGKILL, and one process per SQLite file. The first, a clean run from
//! the listening line to SIGTERM, runs on both backends; the rest are about the binary's
//! flags or a SQLite file (PostgreSQL replicas under SIGKILL: `replicas.rs`).

use std::io::{BufRead, BufReader};
use std::time::Duration;

use crate::binary::{self, Serve};
use crate::common::*;
use crate::tls::Pki;
use fintoc_refresh::clock::system_now_ms;
use fintoc_refresh::fintoc::signature;
use fintoc_refresh::pb::{self, refresh_service_client::RefreshServiceClient};
use tokio_stream::StreamExt;

mod support;

pub use support::fails_with_one_line;
use support::{exit_code, kill_repeatedly, post, spawn};

on_both_backends!(the_binary_announces_its_ports_serves_and_exits_cleanly_on_sigterm);
async fn the_binary_announces_its_ports_serves_and_exits_cleanly_on_sigterm(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let pg = match backend {
        Backend::Postgres => Some(PgDb::create().await),
        Backend::Sqlite => None,
    };
    let mut running = match &pg {
        Some(pg) => spawn(&pg.url, &[], 0),
        None => spawn(dir.path().join("bin.db"), &[], 0),
    };
    let mut client = RefreshServiceClient::connect(format!("http://{}", running.grpc))
        .await
        .unwrap();
    let mut feed = client
        .watch_refresh(pb::WatchRefreshRequest {
            target: Some(account_target("acc_1")),
            after_sequence: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    feed.next().await.unwrap().unwrap();
    let http = reqwest::Client::new();
    let status = post(
        &http,
        &running.http,
        &event("evt_bin", "acc_1", "succeeded", system_now_ms()),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let got = feed.next().await.unwrap().unwrap();
    assert_eq!(got.sequence, 1);
    running.sigterm();
    let end = tokio::time::timeout(PATIENCE, feed.next()).await.unwrap();
    assert!(
        matches!(end, Some(Err(ref s)) if s.code() == tonic::Code::Unavailable),
        "{end:?}"
    );
    let status = running.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn simulate_prints_the_demo_link_tokens_after_the_listening_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = spawn(dir.path().join("sim.db"), &["--simulate"], 4);
    let names: Vec<&str> = running
        .extra
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(
        names,
        ["all-succeed", "one-fails", "rejected", "mfa-required"]
    );
    for line in &running.extra {
        assert!(
            line.starts_with("demo ") && line.contains(" link_token=link_"),
            "{line}"
        );
    }
    running.sigterm();
    assert_eq!(running.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn bad_configuration_exits_with_one_line_naming_the_problem() {
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&["serve"], &[], "FINTOC_SECRET_KEY"),
        (
            &["serve", "--heartbeat-interval", "5x"],
            &[],
            "--heartbeat-interval",
        ),
        (&["serve", "--grpc-addr", "nowhere"], &[], "--grpc-addr"),
        (
            &["serve", "--simulate", "--reconcile-after", "1h"],
            &[],
            "--reconcile-after",
        ),
        (
            &[
                "serve",
                "--simulate",
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "203.0.113.1:1",
            ],
            &[],
            "--http-addr",
        ),
        (&["watch"], &[], "--link-id"),
        (
            &["serve", "--simulate"],
            &[("GRPC_BEARER_TOKENS", " , ")],
            "GRPC_BEARER_TOKENS",
        ),
    ];
    for (args, env, needle) in cases {
        fails_with_one_line(args, env, needle);
    }
}

/// A `--retention` shorter than Fintoc's redelivery window is a configuration error like the
/// others (exit 2, one line naming the flag and the minimum), and `--help` says why.
#[test]
fn a_retention_shorter_than_fintocs_redelivery_window_is_refused() {
    for short in ["1d", "4d23h"] {
        let line = fails_with_one_line(
            &["serve", "--simulate", "--retention", short],
            &[],
            "--retention (RETENTION)",
        );
        assert!(line.contains("at least 5d"), "{line}");
        assert_eq!(exit_code(&["serve", "--simulate", "--retention", short]), 2);
    }
    let help = binary::command()
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("at least 5d"), "{help}");
}

/// The listening line promises storage is open: a database that cannot be opened (a path
/// in a folder that does not exist, or a folder) ends `serve` with exit 1 and one line on
/// stderr, and no listening line ever reaches stdout.
#[test]
fn a_database_that_cannot_be_opened_exits_1_before_the_listening_line() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-folder").join("x.db");
    let folder = dir.path().to_path_buf();
    for db in [missing, folder] {
        let db = db.to_str().unwrap();
        let args = [
            "serve",
            "--simulate",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
            "--database-url",
            db,
        ];
        let line = fails_with_one_line(&args, &[], "cannot open the database");
        assert!(line.contains(db), "names the database: {line}");
        assert_eq!(exit_code(&args), 1, "{db}");
    }
}

#[test]
fn bad_tls_settings_exit_with_one_line_naming_the_flag() {
    let pki = Pki::new();
    let p = |name: &str| pki.path(name).to_str().unwrap().to_owned();
    let (cert, key, ca) = (p("server.pem"), p("server.key"), p("ca.pem"));
    let (client_cert, client_key, missing) = (p("client.pem"), p("client.key"), p("missing.pem"));
    let serve = ["serve", "--simulate"];
    let watch = ["watch", "--link-id", "link_1", "--server"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            [&serve[..], &["--grpc-tls-cert", &cert]].concat(),
            "--grpc-tls-key",
        ),
        (
            [
                &serve[..],
                &["--grpc-tls-cert", &missing, "--grpc-tls-key", &key],
            ]
            .concat(),
            "--grpc-tls-cert (GRPC_TLS_CERT)",
        ),
        (
            [
                &serve[..],
                &["--grpc-tls-cert", &key, "--grpc-tls-key", &key],
            ]
            .concat(),
            "holds no PEM certificate",
        ),
        (
            [&serve[..], &["--grpc-client-ca", &ca]].concat(),
            "--grpc-client-ca",
        ),
        (
            [
                &serve[..],
                &["--http-tls-cert", &cert, "--http-tls-key", &client_key],
            ]
            .concat(),
            "--http-tls-key (HTTP_TLS_KEY)",
        ),
        (
            [&watch[..], &["http://127.0.0.1:1", "--ca-cert", &ca]].concat(),
            "--ca-cert",
        ),
        (
            [&watch[..], &["https://127.0.0.1:1", "--ca-cert", &key]].concat(),
            "--ca-cert (FINTOC_REFRESH_CA_CERT)",
        ),
        (
            [
                &watch[..],
                &["https://127.0.0.1:1", "--client-cert", &client_cert],
            ]
            .concat(),
            "--client-key",
        ),
    ];
    let key_line = pki.read("server.key").lines().nth(1).unwrap().to_owned();
    for (args, needle) in &cases {
        let stderr = fails_with_one_line(args, &[], needle);
        assert!(
            !stderr.contains(&key_line),
            "{args:?}: key material in {stderr}"
        );
    }
}

#[tokio::test]
async fn the_binary_serves_mutual_tls_and_https_from_its_flags_and_drains_on_sigterm() {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| pki.path(name).to_str().unwrap().to_owned();
    let (cert, key, ca) = (p("server.pem"), p("server.key"), p("ca.pem"));
    let args = [
        "--grpc-tls-cert",
        &cert,
        "--grpc-tls-key",
        &key,
        "--grpc-client-ca",
        &ca,
        "--http-tls-cert",
        &cert,
        "--http-tls-key",
        &key,
    ];
    let mut running = spawn(dir.path().join("tls.db"), &args, 0);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(pki.read("ca.pem")))
        .identity(Identity::from_pem(
            pki.read("client.pem"),
            pki.read("client.key"),
        ));
    let channel = Endpoint::from_shared(format!("https://{}", running.grpc))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut feed = RefreshServiceClient::new(channel)
        .watch_refresh(pb::WatchRefreshRequest {
            target: Some(account_target("acc_tls")),
            after_sequence: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    feed.next().await.unwrap().unwrap();
    let https = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(pki.read("ca.pem").as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let body = event("evt_https", "acc_tls", "succeeded", system_now_ms());
    let header = signature::header(SECRET, system_now_ms() / 1000, body.as_bytes());
    let response = https
        .post(format!("https://{}/webhooks/fintoc", running.http))
        .header("Fintoc-Signature", header)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(feed.next().await.unwrap().unwrap().sequence, 1);
    running.sigterm();
    let end = tokio::time::timeout(PATIENCE, feed.next()).await.unwrap();
    assert!(
        matches!(end, Some(Err(ref s)) if s.code() == tonic::Code::Unavailable),
        "{end:?}"
    );
    let status = running.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

/// The warning is for a reachable, unauthenticated API; nothing is sent to the wildcard
/// address, only bound.
#[test]
fn an_exposed_grpc_port_without_authentication_logs_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    let mut running = Serve::new()
        .grpc_addr("0.0.0.0:0")
        .arg("--simulate")
        .database(dir.path().join("exposed.db"))
        .env_remove("GRPC_BEARER_TOKENS")
        .env("RUST_LOG", "warn")
        .stderr_piped()
        .spawn();
    let mut stdout = BufReader::new(running.child.stdout.take().unwrap()).lines();
    let first = stdout.next().unwrap().unwrap();
    assert!(first.starts_with("listening grpc=0.0.0.0:"), "{first}");
    let mut stderr = BufReader::new(running.take_stderr()).lines();
    // `--simulate` also warns that its movements run on a demo key; that one comes first.
    let demo = stderr.next().unwrap().unwrap();
    assert!(demo.contains("WARN") && demo.contains("demo key"), "{demo}");
    let warning = stderr.next().unwrap().unwrap();
    assert!(
        warning.contains("WARN") && warning.contains("accepts calls from anyone"),
        "{warning}"
    );
    running.sigterm();
    assert_eq!(running.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

/// Five times: concurrent senders, SIGKILL at a random moment, restart on the same file.
/// After every restart each acknowledged event is stored exactly once and replayable by
/// cursor, and the log's sequences run 1..=n with no gap or duplicate.
#[tokio::test]
async fn every_acknowledged_event_survives_repeated_sigkill() {
    // The default WAL limit is usually out of this load's reach, but a slow disk or a busy
    // machine can make the writer restart the WAL once: that path is the next test's, and
    // what this one proves (nothing acknowledged lost or repeated) holds either way.
    let restarts = kill_repeatedly(&[]).await;
    eprintln!("WAL restarts under the default limit: {restarts}");
}

/// The same with the smallest WAL limit, so the writer restarts the WAL again and again and
/// the kills land between, during and after restarts: nothing acknowledged is lost or
/// replayed twice. The servers' own counts (read just before each kill) show the restarts
/// happened.
#[tokio::test]
async fn every_acknowledged_event_survives_repeated_sigkill_while_the_wal_restarts() {
    let restarts = kill_repeatedly(&["--sqlite-wal-limit-bytes", "1048576"]).await;
    assert!(restarts > 0, "the WAL never restarted");
}

/// Two processes on one SQLite file would each push only their own commits to their own
/// watchers. The second `serve` must exit non-zero before announcing itself, with one line
/// naming the holder's pid and PostgreSQL, and the first must go on serving untouched.
/// Without the lock the second one starts and serves: it never exits and this test fails.
#[tokio::test]
async fn a_second_serve_on_the_same_database_is_refused_while_the_first_runs() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let mut first = spawn(&db, &[], 0);
    let mut second = Serve::new()
        .database(&db)
        .env("FINTOC_SECRET_KEY", API_KEY)
        .env("FINTOC_WEBHOOK_SECRET", SECRET)
        // What a new user sees: the default log level.
        .env_remove("RUST_LOG")
        .stderr_piped()
        .spawn();
    let status = second.wait_exit(Duration::from_secs(10));
    let (mut stdout, mut stderr) = (String::new(), String::new());
    second
        .child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    second.take_stderr().read_to_string(&mut stderr).unwrap();
    assert!(!status.success(), "{status:?}");
    assert_eq!(stdout, "", "no listening line");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    let pid = format!("in use by another process (pid {})", first.child.id());
    assert!(stderr.contains(&pid), "{stderr}");
    assert!(
        stderr.contains("PostgreSQL") && stderr.contains("postgres://"),
        "{stderr}"
    );

    // The first one is unaffected: it acknowledges and streams as before.
    let mut client = RefreshServiceClient::connect(format!("http://{}", first.grpc))
        .await
        .unwrap();
    let mut feed = client
        .watch_refresh(pb::WatchRefreshRequest {
            target: Some(account_target("acc_1")),
            after_sequence: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let body = event("evt_first", "acc_1", "succeeded", system_now_ms());
    assert_eq!(
        post(&reqwest::Client::new(), &first.http, &body)
            .await
            .unwrap(),
        200
    );
    loop {
        let msg = tokio::time::timeout(PATIENCE, feed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(pb::watch_refresh_response::Event::AccountResult(r)) = msg.event {
            assert_eq!((msg.sequence, r.event_id.as_str()), (1, "evt_first"));
            break;
        }
    }
    first.sigterm();
    assert_eq!(first.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

/// The lock dies with its holder: right after a SIGKILL (no pause, no cleanup, the old
/// pid still in the lock file) a new `serve` on the same file starts and has everything the
/// killed one acknowledged. A lock that outlived its process would make `spawn` fail here.
#[tokio::test]
async fn a_new_serve_starts_right_after_the_first_is_sigkilled() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("killed.db");
    let lock_file = dir.path().canonicalize().unwrap().join("killed.db.lock");
    let mut first = spawn(&db, &[], 0);
    let first_pid = first.child.id().to_string();
    let body = event("evt_before_kill", "acc_1", "succeeded", system_now_ms());
    assert_eq!(
        post(&reqwest::Client::new(), &first.http, &body)
            .await
            .unwrap(),
        200
    );
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    assert_eq!(
        std::fs::read_to_string(&lock_file).unwrap().trim(),
        first_pid,
        "stale file"
    );

    let mut second = spawn(&db, &["--heartbeat-interval", "50ms"], 0);
    assert_eq!(
        std::fs::read_to_string(&lock_file).unwrap().trim(),
        second.child.id().to_string()
    );
    let mut client = RefreshServiceClient::connect(format!("http://{}", second.grpc))
        .await
        .unwrap();
    let mut feed = client
        .watch_refresh(pb::WatchRefreshRequest {
            target: Some(account_target("acc_1")),
            after_sequence: Some(0),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let msg = tokio::time::timeout(PATIENCE, feed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(pb::watch_refresh_response::Event::AccountResult(r)) = msg.event {
            assert_eq!((msg.sequence, r.event_id.as_str()), (1, "evt_before_kill"));
            break;
        }
    }
    second.sigterm();
    assert_eq!(second.wait_exit(Duration::from_secs(10)).code(), Some(0));
}
