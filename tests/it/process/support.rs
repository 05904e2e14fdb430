//! The process tests' helpers: `serve` as these tests run it, a signed post, the binary's
//! exit code and its one-line refusals, and the rounds of SIGKILLs under load.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::binary::{self, Running, Serve};
use crate::common::*;
use fintoc_refresh::clock::system_now_ms;
use fintoc_refresh::fintoc::signature;
use fintoc_refresh::pb::{self, refresh_service_client::RefreshServiceClient};
use tokio_stream::StreamExt;

/// Starts `serve` on port 0 on the database `db` with `args`, and reads the contract's
/// stdout line(s).
pub fn spawn(db: impl AsRef<std::ffi::OsStr>, args: &[&str], extra_lines: usize) -> Running {
    Serve::new()
        .args(["--shutdown-grace", "5s"])
        .database(db)
        .args(args)
        .env("FINTOC_SECRET_KEY", API_KEY)
        .env("FINTOC_WEBHOOK_SECRET", format!("whsec_old, {SECRET}"))
        .env("RUST_LOG", "warn")
        .extra_lines(extra_lines)
        .start()
}

pub async fn post(http: &reqwest::Client, addr: &str, body: &str) -> Result<u16, reqwest::Error> {
    let header = signature::header(SECRET, system_now_ms() / 1000, body.as_bytes());
    let response = http
        .post(format!("http://{addr}/webhooks/fintoc"))
        .header("Fintoc-Signature", header)
        .body(body.to_owned())
        .send()
        .await?;
    Ok(response.status().as_u16())
}

/// The exit code of the binary run with `args` (and no secrets in its environment).
pub fn exit_code(args: &[&str]) -> i32 {
    binary::command()
        .args(args)
        .env_remove("FINTOC_SECRET_KEY")
        .env_remove("FINTOC_WEBHOOK_SECRET")
        .env_remove("GRPC_BEARER_TOKENS")
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .code()
        .expect("an exit code, not a signal")
}

/// Runs the binary, expects failure with exactly one stderr line containing `needle` and an
/// empty stdout; returns that line.
pub fn fails_with_one_line(args: &[&str], env: &[(&str, &str)], needle: &str) -> String {
    let out = binary::command()
        .args(args)
        .env_remove("FINTOC_SECRET_KEY")
        .env_remove("FINTOC_WEBHOOK_SECRET")
        .env_remove("GRPC_BEARER_TOKENS")
        .envs(env.iter().copied())
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?}");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "{args:?}: one line, got {stderr:?}"
    );
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
    stderr
}

/// The rounds of the two tests above; the WAL restarts the killed servers had made.
pub async fn kill_repeatedly(args: &[&str]) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("kill.db");
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let senders = 16;
    let rounds = 5;
    let mut restarts = 0;
    for round in 0..=rounds {
        // Short heartbeats: a replay is known to be complete when its first heartbeat comes.
        let mut args = args.to_vec();
        args.extend(["--heartbeat-interval", "50ms"]);
        let mut running = spawn(&db, &args, 0);
        if round > 0 {
            let so_far = acked.lock().unwrap().clone();
            verify_all_stored(&running, senders, &so_far).await;
        }
        if round == rounds {
            running.sigterm();
            assert_eq!(running.wait_exit(Duration::from_secs(10)).code(), Some(0));
            break;
        }
        let http = reqwest::Client::new();
        let mut tasks = Vec::new();
        for s in 0..senders {
            let (http, addr, acked) = (http.clone(), running.http.clone(), acked.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    let id = format!("evt_r{round}_s{s}_{i}");
                    let body = event(&id, &format!("acc_{s}"), "succeeded", system_now_ms());
                    match post(&http, &addr, &body).await {
                        Ok(200) => {
                            acked.lock().unwrap().insert(id);
                        }
                        _ => return,
                    }
                }
            }));
        }
        let wait = 100 + rand::random_range(0..300);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let metrics = metrics_text(&http, &running.http).await;
        restarts += sample(
            &metrics,
            "fintoc_refresh_wal_restarts_total{outcome=\"restarted\"}",
        );
        running.child.kill().unwrap(); // SIGKILL
        running.child.wait().unwrap();
        for t in tasks {
            t.await.unwrap();
        }
    }
    let total = acked.lock().unwrap().len();
    eprintln!(
        "{rounds} SIGKILLs under load from {senders} senders: {total} acknowledged events, all \
         stored once; {restarts} WAL restarts before the kills"
    );
    assert!(total > 100, "the load was real");
    restarts
}

async fn verify_all_stored(running: &Running, senders: usize, acked: &BTreeSet<String>) {
    let mut client = RefreshServiceClient::connect(format!("http://{}", running.grpc))
        .await
        .unwrap();
    let mut stored = BTreeSet::new();
    let mut sequences = Vec::new();
    for s in 0..senders {
        let target = account_target(&format!("acc_{s}"));
        let mut feed = client
            .watch_refresh(pb::WatchRefreshRequest {
                target: Some(target),
                after_sequence: Some(0),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        loop {
            let msg = tokio::time::timeout(PATIENCE, feed.next())
                .await
                .expect("the replay goes on or heartbeats")
                .expect("the feed stays open")
                .unwrap();
            // A heartbeat only comes once the stream has delivered everything committed.
            if let Some(pb::watch_refresh_response::Event::Heartbeat(_)) = msg.event {
                break;
            }
            if let Some(pb::watch_refresh_response::Event::AccountResult(r)) = msg.event {
                assert!(
                    stored.insert(r.event_id.clone()),
                    "stored twice: {}",
                    r.event_id
                );
                sequences.push(msg.sequence);
            }
        }
    }
    let missing: Vec<_> = acked.difference(&stored).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    sequences.sort();
    let expected: Vec<u64> = (1..=sequences.len() as u64).collect();
    assert_eq!(sequences, expected, "no gaps or duplicates in the log");
}
