//! Secrets stay secret: the real binary runs a full flow (refreshes that succeed, are
//! rejected and held, cool down, fail upstream; link tokens kept, sealed, and used to fetch
//! movements; webhooks signed right and wrong) with distinctive secret values (the sealing
//! key of LINK_TOKEN_KEYS among them) and logging at `trace`, and none of those values appears in a
//! log line, an error message, the metrics, `--help`, a bad-config message, or the database:
//! on each backend, the SQLite files byte for byte, or every value of every PostgreSQL table.
//! Positive controls make sure each place was really looked at.

use std::io::Read;
use std::time::Duration;

use crate::binary::{self, Serve};
use crate::common::*;
use fintoc_refresh::clock::system_now_ms;
use fintoc_refresh::fintoc::signature;
use fintoc_refresh::pb::{self, refresh_service_client::RefreshServiceClient};
use fintoc_refresh::simulator::{LinkSpec, Outcome, SimConfig, Simulator};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

const KEY: &str = "sk_test_KEYSECRETq3Vx91Lm";
const HOOK: &str = "whsec_HOOKSECRETb7Zp20Tn";
const OTHER_HOOK: &str = "whsec_ROTATEDOUTk4Wd55Qa";
const TOKEN_SECRET: &str = "TOKENSECRETzq81Xv";
const REJECTED_SECRET: &str = "TOKENSECRETrj06Hy";
/// A LINK_TOKEN_KEYS key (32 bytes, base64): it seals the kept token.
const SEALING_KEY: &str = "TElOS0tFWVNFQ1JFVHNlYWxzVE9LRU5TeHgxMjM0NTY=";

fn secrets() -> [&'static str; 6] {
    [
        KEY,
        HOOK,
        OTHER_HOOK,
        TOKEN_SECRET,
        REJECTED_SECRET,
        SEALING_KEY,
    ]
}

fn assert_clean(place: &str, text: &str) {
    for secret in secrets() {
        assert!(
            !text.contains(secret),
            "{secret} leaked into {place}:\n{}",
            text.lines()
                .filter(|l| l.contains(secret))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// RequestRefresh, keeping the token (sealed): its movements are fetched with it, and the
/// database holds it, sealed.
async fn refresh(
    client: &mut RefreshServiceClient<tonic::transport::Channel>,
    token: &str,
) -> Result<pb::RefreshIntent, tonic::Status> {
    client
        .request_refresh(pb::RequestRefreshRequest {
            link_token: token.into(),
            refresh_type: 0,
            idempotency_key: String::new(),
            keep_link_token: true,
        })
        .await
        .map(|r| r.into_inner().refresh_intent.unwrap())
}

async fn until_completed(
    client: &mut RefreshServiceClient<tonic::transport::Channel>,
    intent: &str,
) -> pb::RefreshIntent {
    let mut stream = client
        .watch_refresh(pb::WatchRefreshRequest {
            target: Some(intent_target(intent)),
            after_sequence: None,
            // Completed only once its movements were fetched (with the kept token).
            include_movements: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    loop {
        let msg = tokio::time::timeout(PATIENCE, stream.next())
            .await
            .expect("the intent completes")
            .expect("a message")
            .unwrap();
        if let Some(pb::watch_refresh_response::Event::RefreshCompleted(done)) = msg.event {
            return done;
        }
    }
}

/// Every value of every table of the PostgreSQL database at `url`, as text, one row a line:
/// raw bytes (the webhook bodies) as they are where printable, so a secret inside them shows.
async fn postgres_contents(url: &str) -> String {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let columns = client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text \
             FROM information_schema.columns WHERE table_schema = 'public' \
             ORDER BY table_name, ordinal_position",
            &[],
        )
        .await
        .unwrap();
    let mut tables: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for column in columns {
        let (table, name, kind): (String, String, String) =
            (column.get(0), column.get(1), column.get(2));
        let value = if kind == "bytea" {
            format!("encode(\"{name}\", 'escape')")
        } else {
            format!("\"{name}\"::text")
        };
        tables.entry(table).or_default().push(value);
    }
    assert!(tables.contains_key("webhook_events"), "{tables:?}");
    let mut text = String::new();
    for (table, values) in tables {
        let query = format!(
            "SELECT concat_ws(' ', {}) FROM \"{table}\"",
            values.join(", ")
        );
        for row in client.query(&query, &[]).await.unwrap() {
            text.push_str(row.get::<_, &str>(0));
            text.push('\n');
        }
    }
    text
}

/// The SQLite files (the database, its WAL and shared memory) in `dir`, as text.
fn sqlite_contents(dir: &std::path::Path) -> String {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("secrets.db") {
            files.push(std::fs::read(&path).unwrap());
        }
    }
    String::from_utf8_lossy(&files.concat()).into_owned()
}

on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    secrets_appear_in_no_log_error_metric_or_database
);
async fn secrets_appear_in_no_log_error_metric_or_database(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let pg = match backend {
        Backend::Postgres => Some(PgDb::create().await),
        Backend::Sqlite => None,
    };
    let db: std::ffi::OsString = match &pg {
        Some(pg) => pg.url.clone().into(),
        None => dir.path().join("secrets.db").into(),
    };
    let log_path = dir.path().join("stderr.log");

    // The simulator's address first: the service needs it, and the simulator needs the
    // service's intake address.
    let sim_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_url = format!("http://{}", sim_listener.local_addr().unwrap());
    let mut running = Serve::new()
        .database(&db)
        .args(["--fintoc-api-url", &sim_url, "--log-format", "json"])
        .env("FINTOC_SECRET_KEY", KEY)
        .env("FINTOC_WEBHOOK_SECRET", format!("{OTHER_HOOK},{HOOK}"))
        .env("LINK_TOKEN_KEYS", format!("sealkey:{SEALING_KEY}"))
        .env("RUST_LOG", "trace")
        .stderr_file(std::fs::File::create(&log_path).unwrap())
        .start();
    let (grpc, http) = (running.grpc.clone(), running.http.clone());

    let mut config = SimConfig::new(KEY);
    config.delivery_delay = Duration::ZERO;
    config.retry_base = Duration::from_millis(20);
    config.webhooks = vec![(format!("http://{http}/webhooks/fintoc"), HOOK.into())];
    let stop_sim = CancellationToken::new();
    let sim = Simulator::start(sim_listener, config, stop_sim.clone()).unwrap();
    let ok = Outcome::Succeed { new_movements: 1 };
    let good = sim.add_link(LinkSpec {
        accounts: vec![ok.clone(), ok],
        mfa: false,
        token: Some(format!("link_secretsGood_token_{TOKEN_SECRET}")),
    });
    let rejected = sim.add_link(LinkSpec {
        accounts: vec![Outcome::Reject],
        mfa: false,
        token: Some(format!("link_secretsRejected_token_{REJECTED_SECRET}")),
    });

    let mut client = RefreshServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let mut errors = String::new();
    let intent = refresh(&mut client, &good.token).await.unwrap();
    let done = until_completed(&mut client, &intent.id).await;
    assert_eq!(done.status(), pb::RefreshStatus::Succeeded);
    let cooldown = refresh(&mut client, &good.token).await.unwrap_err();
    assert_eq!(cooldown.code(), tonic::Code::ResourceExhausted);
    errors.push_str(&format!("{cooldown:?}\n"));
    let intent = refresh(&mut client, &rejected.token).await.unwrap();
    assert_eq!(
        until_completed(&mut client, &intent.id).await.status(),
        pb::RefreshStatus::Rejected
    );
    let held = refresh(&mut client, &rejected.token).await.unwrap_err();
    assert_eq!(held.code(), tonic::Code::FailedPrecondition);
    errors.push_str(&format!("{held:?}\n"));
    let unknown = refresh(&mut client, &format!("link_nope_token_{TOKEN_SECRET}x"))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    errors.push_str(&format!("{unknown:?}\n"));
    let unknown = client
        .register_link(pb::RegisterLinkRequest {
            link_token: format!("link_nope_token_{TOKEN_SECRET}y"),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    errors.push_str(&format!("{unknown:?}\n"));

    // Webhooks: one signed with a secret we do not have, one with the rotated-out one.
    let http_client = reqwest::Client::new();
    let body = event("evt_secret_1", "acc_x", "succeeded", system_now_ms());
    for (secret, expected) in [("whsec_notours", 401), (OTHER_HOOK, 200)] {
        let header = signature::header(secret, system_now_ms() / 1000, body.as_bytes());
        let answer = http_client
            .post(format!("http://{http}/webhooks/fintoc"))
            .header("Fintoc-Signature", header)
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), expected);
        errors.push_str(&answer.text().await.unwrap());
    }
    let metrics = metrics_text(&http_client, &http).await;
    assert!(
        metrics.contains("fintoc_refresh_webhook_events_total")
            && metrics.contains("fintoc_refresh_movement_fetches_total{outcome=\"listed\""),
        "{metrics}"
    );
    assert_clean("the metrics", &metrics);
    assert_clean("error messages", &errors);

    running.sigterm();
    let status = tokio::task::spawn_blocking(move || running.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    stop_sim.cancel();

    let mut logs = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut logs)
        .unwrap();
    assert!(
        logs.lines().count() > 50 && logs.contains(&intent.id),
        "the log was really written at trace level"
    );
    assert_clean("the log", &logs);

    let (place, stored) = match &pg {
        Some(pg) => ("the PostgreSQL tables", postgres_contents(&pg.url).await),
        None => ("the SQLite files", sqlite_contents(dir.path())),
    };
    let token_hash = fintoc_refresh::secret::sha256_hex(&good.token);
    assert!(
        stored.contains(&token_hash) && stored.contains(&intent.id),
        "{place} were really read"
    );
    // The kept token is there, sealed (its key's id beside it), and its movements too.
    assert!(
        stored.contains("sealkey") && stored.contains("mov_"),
        "{place}: the sealed token and the movements"
    );
    // A webhook body is kept as it came, as bytes: the search must see inside them.
    assert!(stored.contains("evt_secret_1"), "{place}: the raw bodies");
    assert_clean(place, &stored);

    // Neither --help (with the secrets in the environment) nor a bad setting prints them.
    for args in [
        &["serve", "--help"][..],
        &["serve", "--heartbeat-interval", "x"][..],
    ] {
        let out = binary::command()
            .args(args)
            .env("FINTOC_SECRET_KEY", KEY)
            .env("FINTOC_WEBHOOK_SECRET", HOOK)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.is_empty());
        assert_clean(&format!("`{}`", args.join(" ")), &text);
    }
    // A malformed LINK_TOKEN_KEYS is refused in one line that names it, never quoting it.
    for keys in [
        format!("sealkey:{SEALING_KEY}x"),
        SEALING_KEY.to_owned(),
        format!("sealkey:{SEALING_KEY},sealkey:{SEALING_KEY}"),
    ] {
        let out = binary::command()
            .args(["serve", "--database-url", ":memory:"])
            .env("FINTOC_SECRET_KEY", KEY)
            .env("FINTOC_WEBHOOK_SECRET", HOOK)
            .env("LINK_TOKEN_KEYS", keys)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success());
        assert!(
            text.contains("LINK_TOKEN_KEYS") && text.lines().count() == 1,
            "{text}"
        );
        assert_clean("a LINK_TOKEN_KEYS error", &text);
    }
}
