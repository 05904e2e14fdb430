//! The alert rules (`deploy/prometheus/alerts.yml`) and the Grafana dashboard
//! (`deploy/grafana/fintoc-refresh.json`), checked by the tools that will run them: promtool
//! checks the rules and runs their unit tests, and a real Prometheus scrapes a real server,
//! evaluates the rules against its real metrics, and answers every panel's query.
//!
//! Prometheus and promtool come from Debian's `prometheus` package. These tests fail when
//! they are missing instead of skipping: a skipped test would let a broken rule ship.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fintoc_refresh::fintoc::signature;
use serde_json::Value;

use crate::binary::{Running, Serve};
use crate::common::*;

const PROMETHEUS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus");
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/deploy/grafana/fintoc-refresh.json"
);
/// The scrape job the rules expect (FintocRefreshDown matches on it).
const JOB: &str = "fintoc-refresh";
/// Prometheus starts, scrapes and evaluates every second here; this bounds each wait.
const PROMETHEUS_PATIENCE: Duration = Duration::from_secs(60);

/// `name` on the PATH; panics saying how to install it.
fn tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on the PATH: these tests need Prometheus' own tools \
                 (`apt-get install prometheus` on Debian provides prometheus and promtool)"
            )
        })
}

fn promtool(args: &[&str]) {
    let output = Command::new(tool("promtool"))
        .args(args)
        .current_dir(PROMETHEUS_DIR)
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The rules are valid, and each alert fires when it should (at the right time after its
/// `for:`) and not when it should not: the unit tests in `alerts.test.yml`.
#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts.test.yml"]);
}

/// The rules with every `for:` set to 0s, so the test sees an expression's result at once
/// instead of waiting minutes; everything else is the file as shipped.
fn rules_without_hold(rules: &str) -> String {
    let mut held = 0;
    let out: Vec<String> = rules
        .lines()
        .map(|line| match line.trim_start().strip_prefix("for: ") {
            Some(_) => {
                held += 1;
                let indent = &line[..line.len() - line.trim_start().len()];
                format!("{indent}for: 0s")
            }
            None => line.to_owned(),
        })
        .collect();
    assert_eq!(
        held,
        rules.matches("- alert: ").count(),
        "every alert has a `for:`"
    );
    out.join("\n") + "\n"
}

/// Every `fintoc_refresh_…` metric name in `text` (a series name, `_total`, `_bucket`,
/// `_sum` or `_count` included).
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("fintoc_refresh_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The exposition of a server on which every labelled family has a child: a family shows
/// nothing, not even its `# TYPE` line, until it has one, so an idle server's `/metrics`
/// does not list them all.
fn every_family() -> String {
    use fintoc_refresh::metrics::{Metrics, UpstreamLabels};
    let metrics = Metrics::new();
    metrics.event("other", "stored");
    metrics.rpc("GetRefresh", tonic::Code::Ok);
    metrics.unauthenticated("missing");
    metrics
        .upstream
        .get_or_create(&UpstreamLabels {
            endpoint: "list_events",
            outcome: "ok",
        })
        .inc();
    metrics.wal_restart("restarted");
    metrics.commit_retry("conflict");
    metrics.movement_fetch("listed", "written");
    metrics.render(0)
}

/// Whether the exposition `metrics` declares the family a series name belongs to.
fn declared(metrics: &str, series: &str) -> bool {
    let family = ["_total", "_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| series.strip_suffix(suffix))
        .unwrap_or(series);
    metrics.contains(&format!("# TYPE {family} "))
}

/// Prometheus as a child process on a free port; killed when dropped.
struct Prometheus {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path) -> Prometheus {
        // A port the OS just handed out and released; taken again by Prometheus at once.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join("prometheus.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("prometheus starts");
        Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log(&self) -> String {
        let mut out = String::new();
        let _ = std::fs::File::open(&self.log).and_then(|mut f| f.read_to_string(&mut out));
        out
    }

    /// Polls `check` (given Prometheus' base URL) until it returns something; fails with
    /// Prometheus' log when Prometheus exits or time runs out.
    async fn until<T, F, Fut>(&mut self, what: &str, mut check: F) -> T
    where
        F: FnMut(String) -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + PROMETHEUS_PATIENCE;
        loop {
            if let Some(found) = check(self.base.clone()).await {
                return found;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "prometheus exited ({status}) before {what}:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; prometheus log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `path` of Prometheus' API as JSON (None when it does not answer yet).
async fn api(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    query: &[(&str, &str)],
) -> Option<Value> {
    let response = http
        .get(format!("{base}{path}"))
        .query(query)
        .send()
        .await
        .ok()?;
    response.json().await.ok()
}

/// An instant query's result vector; panics unless Prometheus says `success`.
async fn query(http: &reqwest::Client, base: &str, expr: &str) -> Vec<Value> {
    let answer = api(http, base, "/api/v1/query", &[("query", expr)])
        .await
        .unwrap_or_else(|| panic!("no answer to {expr}"));
    assert_eq!(answer["status"], "success", "{expr}: {answer}");
    answer["data"]["result"].as_array().unwrap().clone()
}

/// The alerts Prometheus holds now, pending or firing: (name, state, labels).
async fn alerts(http: &reqwest::Client, base: &str) -> Vec<(String, String, Value)> {
    let answer = api(http, base, "/api/v1/alerts", &[]).await.unwrap();
    assert_eq!(answer["status"], "success", "{answer}");
    answer["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|alert| {
            let labels = alert["labels"].clone();
            let name = labels["alertname"].as_str().unwrap().to_owned();
            (name, alert["state"].as_str().unwrap().to_owned(), labels)
        })
        .collect()
}

/// Every panel query of the dashboard, with the dashboard's variables filled in as Grafana
/// would for this job: (panel title, expression).
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let Some(targets) = panel["targets"].as_array() else {
            continue;
        };
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}: queries the dashboard's data source variable",
            panel["title"]
        );
        for target in targets {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$job", JOB)
                .replace("$instance", ".*");
            assert!(!expr.contains('$'), "a variable left in {expr}");
            out.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    out
}

/// A real Prometheus scrapes a real server (the binary, on SQLite) every second and
/// evaluates the shipped rules (with `for: 0s`): the target is up, every rule evaluates
/// without error, no alert is even pending on the healthy idle server, every metric the
/// rules and the dashboard name is one the server exports, and every dashboard query
/// succeeds. Then webhooks signed with a secret that is no longer configured (a rotation
/// done on one side only) make FintocRefreshWebhooksRejected fire from the real metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_evaluates_the_rules_against_the_real_server() {
    let prometheus_bin = tool("prometheus");
    let dir = tempfile::tempdir().unwrap();
    let server: Running = Serve::new()
        .database(dir.path().join("alerting.db"))
        // Never called: nothing here asks Fintoc for anything.
        .args(["--fintoc-api-url", "http://127.0.0.1:9"])
        .args(["--sqlite-wal-limit-bytes", "2097152"])
        .env("FINTOC_SECRET_KEY", API_KEY)
        .env("FINTOC_WEBHOOK_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .stderr_log()
        .start();
    let http = reqwest::Client::new();

    // Every metric named by the rules (expressions and runbooks) and by the dashboard is
    // exported: a misspelt name would make an alert silently never fire.
    let rules = std::fs::read_to_string(Path::new(PROMETHEUS_DIR).join("alerts.yml")).unwrap();
    let dashboard_text = std::fs::read_to_string(DASHBOARD).unwrap();
    let dashboard: Value = serde_json::from_str(&dashboard_text).expect("the dashboard is JSON");
    assert_eq!(dashboard["templating"]["list"][0]["type"], "datasource");
    assert_eq!(dashboard["templating"]["list"][0]["query"], "prometheus");
    let every = every_family();
    let served = metrics_text(&http, &server.http).await;
    for family in served.lines().filter(|l| l.starts_with("# TYPE ")) {
        assert!(every.contains(family), "{family} is served but not listed");
    }
    for name in metric_names(&rules).union(&metric_names(&dashboard_text)) {
        assert!(declared(&every, name), "{name} is not exported:\n{every}");
    }
    // FintocRefreshWalNearLimit compares the WAL with the limit the server was given.
    assert_eq!(
        sample(&served, "fintoc_refresh_wal_limit_bytes"),
        2_097_152,
        "{served}"
    );

    std::fs::write(dir.path().join("alerts.yml"), rules_without_hold(&rules)).unwrap();
    // Scraped and evaluated every second: the test waits seconds, not minutes.
    let config = [
        "global:",
        "  scrape_interval: 1s",
        "  evaluation_interval: 1s",
        "rule_files:",
        "  - alerts.yml",
        "scrape_configs:",
        &format!("  - job_name: {JOB}"),
        "    static_configs:",
        &format!("      - targets: ['{}']", server.http),
    ];
    std::fs::write(dir.path().join("prometheus.yml"), config.join("\n") + "\n").unwrap();
    let mut prometheus = Prometheus::start(dir.path());
    eprintln!("{} at {}", prometheus_bin.display(), prometheus.base);

    // The target is scraped.
    let web = http.clone();
    prometheus
        .until("the server's target to be up", |base| {
            let http = web.clone();
            async move {
                let targets = api(&http, &base, "/api/v1/targets", &[]).await?;
                let active = targets["data"]["activeTargets"].as_array()?.clone();
                active
                    .iter()
                    .any(|t| t["labels"]["job"] == JOB && t["health"] == "up")
                    .then_some(())
            }
        })
        .await;
    let up = query(&http, &prometheus.base, &format!("up{{job=\"{JOB}\"}}")).await;
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["value"][1], "1");

    // Every rule has been evaluated, after the first scrape, without an error.
    let since = time::OffsetDateTime::now_utc();
    let web = http.clone();
    let rules_seen = prometheus
        .until("every rule evaluated after the first scrape", |base| {
            let http = web.clone();
            async move {
                let answer = api(&http, &base, "/api/v1/rules", &[]).await?;
                let groups = answer["data"]["groups"].as_array()?.clone();
                let rules: Vec<Value> = groups
                    .iter()
                    .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                    .collect();
                for rule in &rules {
                    assert_ne!(rule["health"], "err", "{rule}");
                }
                let evaluated = |rule: &Value| {
                    rule["health"] == "ok"
                        && rule["lastEvaluation"].as_str().is_some_and(|at| {
                            time::OffsetDateTime::parse(
                                at,
                                &time::format_description::well_known::Rfc3339,
                            )
                            .is_ok_and(|at| at > since)
                        })
                };
                (!rules.is_empty() && rules.iter().all(evaluated)).then_some(rules)
            }
        })
        .await;
    let expected = rules.matches("- alert: ").count();
    assert_eq!(
        rules_seen.len(),
        expected,
        "every rule of alerts.yml loaded"
    );
    assert!(
        rules_seen
            .iter()
            .all(|r| r["type"] == "alerting" && r["lastError"].as_str().unwrap_or("").is_empty())
    );

    // The healthy idle server: no alert, not even pending (every `for:` is 0s here).
    let quiet = alerts(&http, &prometheus.base).await;
    assert!(quiet.is_empty(), "alerts on a healthy server: {quiet:?}");

    // Every dashboard query is valid PromQL over the real series.
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 20, "{} queries", queries.len());
    for (title, expr) in &queries {
        let answer = api(&http, &prometheus.base, "/api/v1/query", &[("query", expr)]).await;
        let status = answer.as_ref().map(|a| a["status"].clone());
        assert_eq!(
            status,
            Some(Value::from("success")),
            "panel {title:?}: {expr}: {answer:?}"
        );
    }
    let leading = query(
        &http,
        &prometheus.base,
        &format!("fintoc_refresh_leader{{job=\"{JOB}\"}} == 1"),
    )
    .await;
    assert_eq!(leading.len(), 1, "a SQLite server leads: {leading:?}");

    // Webhooks signed with a rotated-out secret, a few a second, until the alert fires: the
    // counter must rise between scrapes for its rate to show.
    let intake = format!("http://{}/webhooks/fintoc", server.http);
    let web = http.clone();
    let fired = prometheus
        .until("FintocRefreshWebhooksRejected to fire", |base| {
            let (http, intake) = (web.clone(), intake.clone());
            async move {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                let body = event("evt_alerting", "acc_alerting", "succeeded", now * 1000);
                let status = http
                    .post(&intake)
                    .header("content-type", "application/json")
                    .header(
                        "Fintoc-Signature",
                        signature::header("whsec_rotated_out", now, body.as_bytes()),
                    )
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status();
                assert_eq!(status, 401);
                let alerts = alerts(&http, &base).await;
                alerts
                    .iter()
                    .any(|(name, _, _)| name == "FintocRefreshWebhooksRejected")
                    .then_some(alerts)
            }
        })
        .await;
    let (_, state, labels) = fired
        .iter()
        .find(|(name, _, _)| name == "FintocRefreshWebhooksRejected")
        .unwrap();
    assert!(state == "firing" || state == "pending", "{state}");
    assert_eq!(labels["severity"], "ticket");
    assert_eq!(labels["job"], JOB);
    // Refused deliveries are not storage failures: that alert stays quiet.
    assert!(
        fired
            .iter()
            .all(|(name, _, _)| name == "FintocRefreshWebhooksRejected"),
        "{fired:?}"
    );
    let series = query(
        &http,
        &prometheus.base,
        "ALERTS{alertname=\"FintocRefreshWebhooksRejected\"}",
    )
    .await;
    assert_eq!(series.len(), 1, "{series:?}");
    let exported = metrics_text(&http, &server.http).await;
    assert!(
        sample(
            &exported,
            "fintoc_refresh_webhook_events_total{event_type=\"unverified\",outcome=\"rejected_signature\"}"
        ) >= 2,
        "{exported}"
    );
}
