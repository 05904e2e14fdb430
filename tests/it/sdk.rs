//! Cross-checks against Fintoc's official Python SDK (`tests/sdk/*.py`): it must accept the
//! signatures we produce, and work against our simulator (its movement pages included). They use FINTOC_SDK_PYTHON, else
//! `.venv/bin/python`, which they create and install the SDK into the first time (pinned in
//! `tests/sdk/requirements.txt`). Without the SDK (no Python, no package index) they fail,
//! saying how to install it: a cross-check that did not run must not look like one that
//! passed. SKIP_SDK=1 skips them on purpose (they then print SKIPPED); `.ci/run` never sets
//! it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use fintoc_refresh::clock::system_now_ms;
use fintoc_refresh::fintoc::signature;
use fintoc_refresh::simulator::{LinkSpec, Outcome, SimConfig, Simulator};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// How to get the SDK, in the words of the failure.
const INSTALL: &str =
    "python3 -m venv .venv && .venv/bin/pip install -r tests/sdk/requirements.txt";

/// The Python to run the cross-checks with; panics (the test fails) when it lacks the SDK,
/// unless SKIP_SDK=1.
fn sdk_python() -> Option<PathBuf> {
    let skip = std::env::var("SKIP_SDK").is_ok_and(|v| v == "1");
    let candidate = match std::env::var_os("FINTOC_SDK_PYTHON") {
        Some(python) => PathBuf::from(python),
        None if skip => PathBuf::new(),
        None => project_venv(),
    };
    match sdk_decision(&candidate, skip) {
        Ok(found) => found,
        Err(why) => panic!("{why}"),
    }
}

/// The project's `.venv` Python, created with the SDK on first use (once per test run: the
/// two cross-checks may start together).
fn project_venv() -> PathBuf {
    static PROVISIONED: Mutex<()> = Mutex::new(());
    let _once = PROVISIONED.lock().unwrap_or_else(|e| e.into_inner());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    let has_sdk = |python: &Path| {
        Command::new(python)
            .args(["-c", "import fintoc.webhook"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has_sdk(&python) {
        eprintln!("installing Fintoc's Python SDK into .venv for the cross-checks (once)");
        let _ = Command::new("python3")
            .args(["-m", "venv", ".venv"])
            .current_dir(&root)
            .status();
        let _ = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(root.join("tests/sdk/requirements.txt"))
            .status();
    }
    python
}

/// Whether to run with `python` (Some), skip (None), or fail (Err: what to do about it).
fn sdk_decision(python: &Path, skip: bool) -> Result<Option<PathBuf>, String> {
    if skip {
        eprintln!("SKIPPED: SKIP_SDK=1, the cross-check with Fintoc's official SDK did not run");
        return Ok(None);
    }
    let works = Command::new(python)
        .args(["-c", "import fintoc.webhook"])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Ok(Some(python.to_owned()));
    }
    Err(format!(
        "the cross-check with Fintoc's official Python SDK cannot run: {} cannot import fintoc. \
         Install it with `{INSTALL}` (or point FINTOC_SDK_PYTHON at a Python that has it), \
         or set SKIP_SDK=1 to skip these checks on purpose",
        python.display()
    ))
}

/// Proves a missing SDK is a failure that says what to do, and only SKIP_SDK skips.
#[test]
fn a_missing_sdk_fails_with_instructions_unless_skipped_on_purpose() {
    let nowhere = Path::new("/nonexistent/python-without-fintoc");
    let why = sdk_decision(nowhere, false).unwrap_err();
    assert!(why.contains(INSTALL) && why.contains("SKIP_SDK=1"), "{why}");
    assert_eq!(sdk_decision(nowhere, true), Ok(None));
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sdk")
        .join(name)
}

#[test]
fn the_official_sdk_accepts_our_signatures_and_refuses_forgeries() {
    let Some(python) = sdk_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let body_file = dir.path().join("body.json");
    let body = event("evt_sdk", "acc_1", "succeeded", system_now_ms());
    std::fs::write(&body_file, &body).unwrap();
    let now = system_now_ms() / 1000;
    let verify = |header: &str| {
        Command::new(&python)
            .arg(script("verify_signature.py"))
            .args([SECRET, header])
            .arg(&body_file)
            .output()
            .unwrap()
    };
    let ours = verify(&signature::header(SECRET, now, body.as_bytes()));
    assert!(
        ours.status.success(),
        "SDK refused our header: {}",
        String::from_utf8_lossy(&ours.stderr)
    );
    let forged = verify(&signature::header("whsec_wrong", now, body.as_bytes()));
    assert!(
        !forged.status.success(),
        "the cross-check must be able to fail"
    );
    assert!(String::from_utf8_lossy(&forged.stderr).contains("Signature mismatch"));
}

/// Records every webhook delivered to it.
async fn capture_server() -> (String, Arc<Mutex<Vec<(String, String)>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let store = store.clone();
            async move {
                let header = headers
                    .get("fintoc-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                store.lock().unwrap().push((header, body));
                "ok"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn the_official_sdk_works_against_the_simulator() {
    let Some(python) = sdk_python() else { return };
    let (hook, seen) = capture_server().await;
    let mut config = SimConfig::new(API_KEY);
    config.delivery_delay = Duration::ZERO;
    config.webhooks = vec![(hook, SECRET.into())];
    let shutdown = CancellationToken::new();
    let sim = Simulator::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        config,
        shutdown.clone(),
    )
    .unwrap();
    let link = sim.add_link(LinkSpec::new(vec![
        Outcome::Succeed { new_movements: 4 },
        Outcome::Fail {
            public_error: "x".into(),
        },
    ]));

    let sim_url = sim.url();
    let token = link.token.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&python)
            .arg(script("against_simulator.py"))
            .args(["api", &sim_url, API_KEY, &token])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "SDK failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen_by_sdk: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        seen_by_sdk["intent_id"]
            .as_str()
            .unwrap()
            .starts_with("ri_")
    );
    assert_eq!(seen_by_sdk["intent_status"], "created");
    assert_eq!(seen_by_sdk["link_id"], link.link_id.as_str());
    assert_eq!(seen_by_sdk["accounts"].as_array().unwrap().len(), 2);
    // 45 seeded + 4 new movements, read 20 per page: the SDK followed the Link header.
    assert_eq!(seen_by_sdk["movements"], 49, "{seen_by_sdk}");
    assert_eq!(seen_by_sdk["movement_ids_unique"], true);
    assert_eq!(seen_by_sdk["listed_intents"][0], seen_by_sdk["intent_id"]);
    assert!(
        sim.requests(
            "GET",
            &format!("/v1/accounts/{}/movements", link.account_ids[0])
        ) >= 3
    );

    eventually("both webhooks delivered", || {
        let seen = seen.clone();
        async move { seen.lock().unwrap().len() >= 2 }
    })
    .await;
    let deliveries: Vec<serde_json::Value> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(header, body)| serde_json::json!({ "header": header, "body": body }))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deliveries.json");
    std::fs::write(&file, serde_json::to_vec(&deliveries).unwrap()).unwrap();
    let python = sdk_python().unwrap();
    let out = Command::new(&python)
        .arg(script("against_simulator.py"))
        .args(["verify", SECRET])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "SDK refused a simulator signature: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"verified\": 2"));
    shutdown.cancel();
}

/// What the SDK yielded listing one account's movements: ids and statuses, in order.
fn sdk_movements(
    python: &Path,
    sim: &Simulator,
    token: &str,
    account: &str,
    since: &str,
    per_page: usize,
    confirmed_only: &str,
) -> (Vec<String>, Vec<String>) {
    let out = Command::new(python)
        .arg(script("against_simulator.py"))
        .args(["movements", &sim.url(), API_KEY, token, account, since])
        .args([&per_page.to_string(), confirmed_only])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "SDK failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let strings = |key: &str| -> Vec<String> {
        seen[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    (strings("ids"), strings("statuses"))
}

/// The SDK follows our `Link` headers to the same listing the simulator's model holds: same
/// ids in the same order, none missed or repeated, across several pages (more than the
/// largest page of 300, and small pages), pending movements only with confirmed_only=False.
#[tokio::test]
async fn sdk_pages_movements_like_a_direct_listing() {
    let Some(python) = sdk_python() else { return };
    let mut config = SimConfig::new(API_KEY);
    config.delivery_delay = Duration::ZERO;
    config.deliver_before_response = true;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let sim = Simulator::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        config,
        shutdown,
    )
    .unwrap();
    let link = sim.add_link(LinkSpec::new(vec![Outcome::SucceedWithPending {
        new_movements: 320,
        pending: 5,
    }]));
    let created = reqwest::Client::new()
        .post(format!(
            "{}/v1/refresh_intents?link_token={}",
            sim.url(),
            link.token
        ))
        .header("Authorization", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status().as_u16(), 201);
    let account = link.account_ids[0].clone();

    // Everything the model holds, newest first; `since` cuts into the seeded movements.
    let all = sim.movements(&account);
    let day = |m: &serde_json::Value| m["post_date"].as_str().unwrap()[..10].to_owned();
    let since = day(&all[340]);
    let expected = |confirmed_only: bool| -> Vec<String> {
        all.iter()
            .filter(|m| day(m) >= since && (!confirmed_only || m["status"] == "confirmed"))
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };

    let sdk = |per_page: usize, confirmed_only: &'static str| {
        let (python, sim, token, account, since) = (
            python.clone(),
            sim.clone(),
            link.token.clone(),
            account.clone(),
            since.clone(),
        );
        tokio::task::spawn_blocking(move || {
            sdk_movements(
                &python,
                &sim,
                &token,
                &account,
                &since,
                per_page,
                confirmed_only,
            )
        })
    };

    let with_pending = expected(false);
    assert!(with_pending.len() > 300, "{}", with_pending.len());
    let before = sim.movements_requests(&account);
    let (ids, statuses) = sdk(300, "false").await.unwrap();
    assert_eq!(ids, with_pending);
    assert_eq!(statuses.iter().filter(|s| *s == "pending").count(), 5);
    assert_eq!(
        sim.movements_requests(&account) - before,
        2,
        "two pages of 300"
    );

    let confirmed = expected(true);
    assert_eq!(confirmed.len(), with_pending.len() - 5);
    let before = sim.movements_requests(&account);
    let (ids, statuses) = sdk(25, "default").await.unwrap();
    assert_eq!(ids, confirmed, "confirmed_only defaults to true");
    assert!(statuses.iter().all(|s| s == "confirmed"));
    assert_eq!(
        sim.movements_requests(&account) - before,
        confirmed.len().div_ceil(25)
    );

    let (ids, _) = sdk(25, "true").await.unwrap();
    assert_eq!(ids, confirmed);
}
