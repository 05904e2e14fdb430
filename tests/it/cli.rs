//! The human client as a person runs it: the real `fintoc-refresh` binary (`watch`, `link`)
//! against a real server on port 0. `watch` feeds of several Links or of every Link, a start
//! by time (`--since`) that a reconnect replaces by its cursor, status filters, `link`'s
//! table and JSON, and the one-line refusals of flags that cannot go together.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::Duration;

use fintoc_refresh::cli::connect;
use fintoc_refresh::clock::format_rfc3339_ms;
use fintoc_refresh::pb::{self, RefreshType};
use fintoc_refresh::simulator::{LinkSpec, Outcome, SimConfig};
use serde_json::Value;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::common::*;
use crate::process::fails_with_one_line;

/// `fintoc-refresh watch <args> --json` against `server`, its stdout lines on a channel the
/// test awaits: the server runs on this test's runtime, so the test must never block it.
/// Killed when dropped, so a failing test leaves nothing running.
struct WatchCommand {
    child: Option<Child>,
    lines: UnboundedReceiver<String>,
}

impl WatchCommand {
    fn start(server: &TestServer, args: &[&str]) -> WatchCommand {
        let mut child = crate::binary::command()
            .arg("watch")
            .args(args)
            .args(["--json", "--server"])
            .arg(format!("http://{}", server.grpc))
            .env_remove(connect::TOKEN_ENV)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the watch command");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        WatchCommand {
            child: Some(child),
            lines,
        }
    }

    /// The next JSON line; panics if none comes within [`PATIENCE`] or the command ended.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(PATIENCE, self.lines.recv())
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("the watch command printed nothing more: {}", self.stop()));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    /// The event ids of the results printed until (and with) `event_id`.
    async fn results_until(&mut self, event_id: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            let line = self.next().await;
            if line["event"] == "account_result" {
                let id = line["event_id"].as_str().unwrap().to_owned();
                let done = id == event_id;
                seen.push(id);
                if done {
                    return seen;
                }
            }
        }
    }

    /// Kills the command and returns what it wrote on stderr.
    fn stop(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return String::new();
        };
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

impl Drop for WatchCommand {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn post(server: &TestServer, id: &str, account: &str, status: &str) {
    let now = server.clock.now_ms();
    let (code, body) = server.post_event(&event(id, account, status, now)).await;
    assert_eq!(code, 200, "{body}");
}

/// Link `link_<x>` with its one account `acc_<x>`, known through an intent `ri_<x>` (which
/// that account's first result completes, so no intent is left to time out).
async fn known_link(server: &TestServer, x: &str) {
    let (intent, link, account) = (format!("ri_{x}"), format!("link_{x}"), format!("acc_{x}"));
    server.create_intent(&intent, &link, &[&account]).await;
}

/// Needs the server side of `Selection` (contract §6).
#[tokio::test]
async fn watch_all_and_repeated_ids_follow_one_feed_of_everything_asked_for() {
    let server = TestServer::start().await;
    for x in ["a", "b", "c"] {
        known_link(&server, x).await;
    }
    let mut all = WatchCommand::start(&server, &["--all"]);
    let mut links = WatchCommand::start(&server, &["--link-id", "link_a", "--link-id", "link_b"]);
    let mut mixed = WatchCommand::start(&server, &["--link-id", "link_a", "--account-id", "acc_c"]);
    for watch in [&mut all, &mut links, &mut mixed] {
        // A feed from now opens with the heartbeat it starts after: nothing posted later is
        // missed.
        assert_eq!(watch.next().await["event"], "heartbeat");
    }
    post(&server, "evt_a", "acc_a", "succeeded").await;
    post(&server, "evt_c", "acc_c", "failed").await;
    post(&server, "evt_b", "acc_b", "succeeded").await;
    assert_eq!(
        all.results_until("evt_b").await,
        ["evt_a", "evt_c", "evt_b"]
    );
    assert_eq!(links.results_until("evt_b").await, ["evt_a", "evt_b"]);
    assert_eq!(mixed.results_until("evt_c").await, ["evt_a", "evt_c"]);
    post(&server, "evt_a2", "acc_a", "succeeded").await;
    assert_eq!(
        mixed.results_until("evt_a2").await,
        ["evt_a2"],
        "nothing of link_b in between"
    );
    for mut watch in [all, links, mixed] {
        let stderr = watch.stop();
        assert!(stderr.is_empty(), "{stderr}");
    }
}

/// Needs the server side of `start_time` (contract §6). The stream then ends on purpose
/// (`--max-stream-age`): the reconnect must resume by its cursor alone, since the server
/// refuses `start_time` with `after_sequence`.
#[tokio::test]
async fn watch_since_starts_at_a_time_and_a_reconnect_resumes_by_cursor_alone() {
    let server = TestServer::with(Options {
        tune: Some(Box::new(|c| {
            c.max_stream_age = Duration::from_secs(60);
            c.heartbeat_interval = Duration::from_secs(5);
        })),
        ..Options::default()
    })
    .await;
    let start = server.clock.now_ms();
    known_link(&server, "a").await;
    post(&server, "evt_old", "acc_a", "succeeded").await;
    server.clock.advance(Duration::from_secs(2 * 3600));
    known_link(&server, "b").await;
    post(&server, "evt_new", "acc_b", "failed").await;
    server.until_published().await;

    let since = format_rfc3339_ms(start + 3600 * 1000);
    let mut watch = WatchCommand::start(&server, &["--all", "--since", &since]);
    assert_eq!(
        watch.results_until("evt_new").await,
        ["evt_new"],
        "from {since}: not the result stored an hour before it"
    );

    // Past the stream's oldest possible end (1.1 × 60 s): a heartbeat, UNAVAILABLE, and a
    // quiet reconnect after that heartbeat.
    server.clock.advance(Duration::from_secs(67));
    known_link(&server, "c").await;
    post(&server, "evt_later", "acc_c", "succeeded").await;
    assert_eq!(
        watch.results_until("evt_later").await,
        ["evt_later"],
        "nothing repeated, nothing missed"
    );
    let stderr = watch.stop();
    assert!(stderr.is_empty(), "the reconnect was refused? {stderr}");
}

/// Statuses are served already: this passes on any server of contract §6.
#[tokio::test]
async fn watch_status_shows_only_the_statuses_asked_for() {
    let server = TestServer::start().await;
    let mut watch = WatchCommand::start(
        &server,
        &[
            "--account-id",
            "acc_1",
            "--status",
            "FAILED",
            "--status",
            "timed_out",
        ],
    );
    assert_eq!(watch.next().await["event"], "heartbeat");
    post(&server, "evt_ok", "acc_1", "succeeded").await;
    post(&server, "evt_bad", "acc_1", "failed").await;
    assert_eq!(watch.results_until("evt_bad").await, ["evt_bad"]);
}

#[test]
fn watch_refuses_flags_that_cannot_go_together_in_one_line() {
    for (args, needle) in [
        (&["watch", "--all", "--link-id", "l"][..], "--all"),
        (
            &["watch", "--refresh-intent-id", "ri", "--account-id", "a"],
            "--refresh-intent-id",
        ),
        (
            &["watch", "--all", "--since", "1h", "--after", "3"],
            "--since",
        ),
        (
            &["watch", "--refresh-intent-id", "ri", "--since", "1h"],
            "--since",
        ),
        (&["watch", "--all", "--since", "yesterday"], "RFC 3339"),
        (&["watch", "--all", "--status", "pending"], "--status"),
    ] {
        fails_with_one_line(args, &[], needle);
    }
}

/// Runs `fintoc-refresh link <args>` against `server`, off the runtime's thread (the server
/// under test runs on it).
async fn link_command(server: &TestServer, args: &[&str]) -> std::process::Output {
    let mut command = crate::binary::command();
    command
        .arg("link")
        .args(args)
        .arg("--server")
        .arg(format!("http://{}", server.grpc))
        .env_remove(connect::TOKEN_ENV);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// A Link with a pending refresh: one account answered, one not yet. `link` shows what
/// GetLink answers, as a table and as JSON; an unknown Link is one line and exit 2.
#[tokio::test]
async fn link_shows_a_links_state_as_a_table_and_as_json() {
    let mut sim = SimConfig::new(API_KEY);
    sim.delivery_delay = Duration::ZERO;
    sim.mfa_delay = Duration::ZERO;
    let server = TestServer::with(Options {
        simulator: Some(sim),
        ..Options::default()
    })
    .await;
    let link = server.sim.as_ref().unwrap().add_link(LinkSpec::new(vec![
        Outcome::Succeed { new_movements: 3 },
        Outcome::Silent,
    ]));
    let intent = server
        .client()
        .await
        .request_refresh(pb::RequestRefreshRequest {
            link_token: link.token.clone(),
            refresh_type: RefreshType::OnlyLast.into(),
            idempotency_key: String::new(),
            keep_link_token: false,
        })
        .await
        .unwrap()
        .into_inner()
        .refresh_intent
        .unwrap();
    let mut results = server.watch(intent_target(&intent.id), None).await;
    results.next_event().await;
    let expected = server
        .client()
        .await
        .get_link(pb::GetLinkRequest {
            link_id: link.link_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let state = expected.link.clone().unwrap();
    let (answered, silent) = match &state.accounts[..] {
        [a, b] if a.last_result.is_some() => (a, b),
        [a, b] => (b, a),
        other => panic!("two accounts expected: {other:?}"),
    };

    let out = link_command(&server, &[&link.link_id]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout} {:?}", out.stderr);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("link        {}", link.link_id));
    assert!(
        lines[1].starts_with(&format!("as of       #{} ", expected.as_of_sequence)),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with(&format!(
            "pending     refresh {} (ONLY_LAST), created ",
            intent.id
        )),
        "{stdout}"
    );
    assert_eq!(lines[3], "only_last   not allowed (IN_PROGRESS)");
    let row = |id: &str| lines.iter().find(|l| l.starts_with(id)).copied();
    let answered_row = row(&answered.account_id).expect("a row for the answered account");
    let cells: Vec<&str> = answered_row.split_whitespace().collect();
    assert_eq!(
        (cells[1], cells[2], cells[4]),
        ("SUCCEEDED", "3", &*format!("#{}", answered.last_sequence)),
        "{answered_row}"
    );
    assert!(
        row(&silent.account_id).is_some_and(|l| l.ends_with("no retained result")),
        "{stdout}"
    );

    let out = link_command(&server, &[&link.link_id, "--json"]).await;
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "one JSON object: {stdout}");
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["as_of_sequence"], expected.as_of_sequence);
    assert_eq!(json["link"]["link_id"], link.link_id.as_str());
    assert_eq!(
        json["link"]["pending_intent"]["refresh_intent_id"],
        intent.id.as_str()
    );
    assert_eq!(json["link"]["only_last"]["reason"], "IN_PROGRESS");
    for (shown, known) in json["link"]["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&state.accounts)
    {
        assert_eq!(shown["account_id"], known.account_id.as_str());
        assert_eq!(shown["last_sequence"], known.last_sequence);
        let status = known.last_result.as_ref().map(|_| "SUCCEEDED");
        assert_eq!(shown["last_result"]["status"].as_str(), status);
    }

    let out = link_command(&server, &["link_nope"]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("NOT_FOUND") && stderr.contains("link_nope"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// `refresh --movements` keeps the token and prints each new movement (date, amount,
/// currency, description) before the outcome; `--json` prints the full objects.
#[tokio::test]
async fn refresh_with_movements_prints_them_before_the_outcome() {
    let mut sim = SimConfig::new(API_KEY);
    sim.delivery_delay = Duration::ZERO;
    let keys = std::sync::Arc::new(
        fintoc_refresh::custody::LinkTokenKeys::parse(
            "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        )
        .unwrap(),
    );
    let server = TestServer::with(Options {
        simulator: Some(sim),
        tune: Some(Box::new(move |c| c.link_token_keys = Some(keys))),
        ..Options::default()
    })
    .await;
    let fintoc = server.sim.as_ref().unwrap();
    let link = fintoc.add_link(LinkSpec::new(vec![Outcome::Succeed { new_movements: 2 }]));
    let run = |json: bool| {
        let mut command = crate::binary::command();
        command
            .args(["refresh", "--movements", "--server"])
            .arg(format!("http://{}", server.grpc))
            .env("LINK_TOKEN", &link.token)
            .env_remove(connect::TOKEN_ENV);
        if json {
            command.arg("--json");
        }
        tokio::task::spawn_blocking(move || command.output().unwrap())
    };
    let out = run(false).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout} {:?}", out.stderr);
    let listed = fintoc.movements(&link.account_ids[0]);
    for movement in &listed[..2] {
        let date = &movement["post_date"].as_str().unwrap()[..10];
        let description = movement["description"].as_str().unwrap();
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(date) && l.contains("CLP") && l.contains(description)),
            "{movement} in:\n{stdout}"
        );
    }
    let summary = stdout.find("2 added, complete").expect(&stdout);
    let outcome = stdout.find("SUCCEEDED: ").expect(&stdout);
    assert!(
        summary < outcome,
        "the movements come before the outcome:\n{stdout}"
    );

    // Again, as JSON (5 minutes on: Fintoc's spacing between successful refreshes).
    server.clock.advance(Duration::from_secs(6 * 60));
    let out = run(true).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout} {:?}", out.stderr);
    let movements: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == "movements")
        .collect();
    let added: Vec<&Value> = movements
        .iter()
        .flat_map(|m| m["added"].as_array().unwrap())
        .collect();
    assert_eq!(added.len(), 2, "only the new ones: {stdout}");
    assert!(
        added
            .iter()
            .all(|m| m["id"].as_str().unwrap().starts_with("mov_")
                && m["amount"].is_i64()
                && m.get("type").is_some()
                && m.get("recipient_account").is_some())
    );
}
