//! Movements pushed with the results (`--only movements`, CONTRACT.md §7, issue 19): the
//! simulator runs in this process as Fintoc, the server is the release binary with
//! `LINK_TOKEN_KEYS`, and every figure has a baseline measured in the same run:
//! - **a burst**: 1,000 accounts (250 Links of 4, registered with RegisterLink first) get
//!   Fintoc's scheduled refresh at once, 3 new movements each, every Link's refresh fired back
//!   to back; one `all` stream with `include_movements` is open. Measured from the first
//!   refresh fired to the last account's `complete` movements message: movements pushed and
//!   results delivered per second, against the same burst on a server without
//!   `LINK_TOKEN_KEYS` (results only, a stream without movements), the two alternated each
//!   round; and Fintoc calls per event (the simulator's count of movements listings ÷ results,
//!   goal 1.0);
//! - **added latency**: for each account, its `account_result` received → its `complete`
//!   `movements` received (same event id): in the burst (queued behind the fetcher's pace),
//!   and for refreshes one at a time, spaced so none waits for a listing slot (the fetcher's
//!   own cost: its wake, claim, listing and commit), against the
//!   simulator's own time to answer the same listing (a direct GET from here, same query,
//!   same size).
//!
//! The fetcher lists one Link at a time and at most `FETCH_RATE` (20) listings a second per
//! replica, by design (Fintoc allows 100 requests a second per organization): a burst of
//! 1,000 accounts takes at least 50 s on one replica, whatever the hardware. `--quick` uses
//! 100 accounts and one round.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use fintoc_refresh::fetch::FETCH_RATE;
use fintoc_refresh::pb::refresh_service_client::RefreshServiceClient;
use fintoc_refresh::pb::watch_refresh_request::Target;
use fintoc_refresh::pb::{self, watch_refresh_response::Event};
use fintoc_refresh::simulator::{LinkSpec, Outcome, SimConfig, SimLinkInfo, Simulator};
use fintoc_refresh::store::MOVEMENTS_WINDOW_DAYS;

use crate::Mode;
use crate::binary::{self, Running, Serve};
use crate::load;
use crate::server::{API_KEY, SECRET};
use crate::stats::{median, ms, percentile};

/// The sealing key the movements server runs with (a fixed test key, not a secret).
const KEYS: &str = "k1:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
/// New movements per account in each scheduled refresh.
const NEW_MOVEMENTS: u32 = 3;
const ACCOUNTS_PER_LINK: usize = 4;
/// RegisterLink calls in flight at once.
const REGISTERING: usize = 16;
/// How long a burst may take before the harness gives up on it (and says so).
const BURST_LIMIT: Duration = Duration::from_secs(240);

type Client = RefreshServiceClient<tonic::transport::Channel>;

pub async fn run(mode: &Mode) -> Value {
    let (links, rounds, one_at_a_time) = if mode.quick {
        (25, 1, 20)
    } else {
        (250, 3, 50)
    };
    let accounts = links * ACCOUNTS_PER_LINK;
    println!(
        "\n## Movements (issue 19): a burst of {accounts} accounts ({links} Links × \
         {ACCOUNTS_PER_LINK}, {NEW_MOVEMENTS} new movements each), {rounds} round(s), \
         alternated with the same burst on a server without movements{}",
        if mode.quick {
            " — quick: 100 accounts, not 1,000"
        } else {
            ""
        }
    );
    println!(
        "(the fetcher lists at most {FETCH_RATE} accounts a second per replica, by design: \
         {accounts} listings take at least {:.0} s)",
        accounts as f64 / f64::from(FETCH_RATE)
    );
    let with = Setup::start(true).await;
    let without = Setup::start(false).await;

    println!(
        "| round | server | results | movements added | results delivered s | last complete s | \
         results/s | movements/s | unavailable |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut base_rates = Vec::new();
    let mut result_rates = Vec::new();
    let mut end_rates = Vec::new();
    let mut movement_rates = Vec::new();
    let mut burst_p50 = Vec::new();
    let mut burst_p99 = Vec::new();
    let mut burst_accounts: Vec<SimLinkInfo> = Vec::new();
    let mut bursts = Vec::new();
    let mut incomplete = false;
    for round in 1..=rounds {
        let base_links = without.add_links(links, ACCOUNTS_PER_LINK);
        let base = burst(&without, &base_links).await;
        base.print(round, "without movements (baseline)");
        base_rates.push(base.results_rate());

        let kept = with.add_links(links, ACCOUNTS_PER_LINK);
        with.register(&kept).await;
        let got = burst(&with, &kept).await;
        got.print(round, "with movements");
        incomplete |= got.completes.len() < got.expected;
        result_rates.push(got.results_rate());
        end_rates.push(got.complete_rate());
        movement_rates.push(got.movements_rate());
        let mut lat = got.latencies();
        burst_p50.push(ms(percentile(&mut lat, 50.0)));
        burst_p99.push(ms(percentile(&mut lat, 99.0)));
        bursts
            .push(json!({"round": round, "baseline": base.to_json(), "movements": got.to_json()}));
        burst_accounts.extend(kept);
    }
    // Fintoc calls per event, before the direct listings below add their own.
    let listed: usize = burst_accounts
        .iter()
        .flat_map(|l| &l.account_ids)
        .map(|a| with.sim.movements_requests(a))
        .sum();
    let results = burst_accounts.len() * ACCOUNTS_PER_LINK;
    let calls_per_event = listed as f64 / results as f64;

    // Added latency with the fetcher idle: one 1-account Link's refresh at a time.
    println!(
        "\n### Added latency, one refresh at a time ({one_at_a_time} accounts per repetition, \
         {} ms apart, the fetcher otherwise idle)",
        2000 / FETCH_RATE
    );
    println!("| repetition | result → complete p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|");
    let reps = if mode.quick { 1 } else { 3 };
    let (mut idle_p50, mut idle_p99) = (Vec::new(), Vec::new());
    for rep in 1..=reps {
        let links = with.add_links(one_at_a_time, 1);
        with.register(&links).await;
        let mut lat = one_at_a_time_latencies(&with, &links).await;
        let (p50, p99) = (percentile(&mut lat, 50.0), percentile(&mut lat, 99.0));
        let max = lat.iter().max().copied().unwrap_or_default();
        println!(
            "| {rep} | {:.2} | {:.2} | {:.2} |",
            ms(p50),
            ms(p99),
            ms(max)
        );
        idle_p50.push(ms(p50));
        idle_p99.push(ms(p99));
    }

    // The simulator's own answer for the same listing: same accounts, same query, same size.
    let direct = direct_listings(&with, &burst_accounts, if mode.quick { 100 } else { 200 }).await;
    let server_listing = with.mean_listing_ms().await;
    with.stop();
    without.stop();

    let (base, res, end, mv) = (
        median(&mut base_rates),
        median(&mut result_rates),
        median(&mut end_rates),
        median(&mut movement_rates),
    );
    let (b50, b99) = (median(&mut burst_p50), median(&mut burst_p99));
    let (i50, i99) = (median(&mut idle_p50), median(&mut idle_p99));
    let (d50, d99) = direct;
    println!("\n### Movements: summary (medians of {rounds} round(s))");
    println!("| figure | value | baseline in the same run | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| results delivered/s, burst of {accounts} | {res:.0} with movements on | {base:.0} \
         without | {:.2}× |",
        res / base
    );
    println!(
        "| end to end: results/s until the last complete movements | {end:.1} | {base:.0} \
         results/s without movements | {:.3}× |",
        end / base
    );
    println!(
        "| movements pushed/s | {mv:.1} ({:.1} listings/s; pace {FETCH_RATE}/s) | | |",
        mv / f64::from(NEW_MOVEMENTS)
    );
    println!(
        "| Fintoc calls per event | {calls_per_event:.3} ({listed} listings for {results} \
         results) | goal 1.0 | |"
    );
    println!(
        "| added latency, one at a time: p50 / p99 | {i50:.2} / {i99:.2} ms | simulator \
         listing alone p50 / p99: {d50:.2} / {d99:.2} ms | {:.1}× (p50) |",
        i50 / d50
    );
    println!(
        "| added latency in the burst: p50 / p99 | {:.1} / {:.1} s (queued behind the pace: \
         the n-th listing waits n / {FETCH_RATE} s) | | |",
        b50 / 1000.0,
        b99 / 1000.0,
    );
    println!("| server's mean listing time (its /metrics) | {server_listing:.2} ms | | |");
    if incomplete {
        println!(
            "**incomplete**: a burst did not see every complete movements message within {} s",
            BURST_LIMIT.as_secs()
        );
    }
    json!({
        "accounts_per_burst": accounts,
        "links_per_burst": links,
        "new_movements_per_account": NEW_MOVEMENTS,
        "rounds": rounds,
        "fetch_rate_per_s": FETCH_RATE,
        "bursts": bursts,
        "results_per_s": {"with_movements": res, "without": base, "ratio": res / base},
        "end_to_end_results_per_s": end,
        "end_to_end_ratio": end / base,
        "movements_per_s": mv,
        "fintoc_calls_per_event": calls_per_event,
        "added_latency_one_at_a_time_ms": {"p50": i50, "p99": i99, "repetitions": reps,
            "accounts_each": one_at_a_time},
        "added_latency_in_burst_ms": {"p50": b50, "p99": b99},
        "simulator_listing_ms": {"p50": d50, "p99": d99},
        "added_latency_ratio_p50": i50 / d50,
        "server_mean_listing_ms": server_listing,
        "complete": !incomplete,
    })
}

/// A server (with or without `LINK_TOKEN_KEYS`) and a simulator of its own delivering to it.
struct Setup {
    server: Served,
    sim: Simulator,
    sim_url: String,
    shutdown: CancellationToken,
    client: Client,
    movements: bool,
}

impl Setup {
    async fn start(movements: bool) -> Setup {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim_url = format!("http://{}", listener.local_addr().unwrap());
        let server = Served::start(&sim_url, movements);
        let mut config = SimConfig::new(API_KEY);
        config.delivery_delay = Duration::ZERO;
        config.webhooks = vec![(
            format!("http://{}/webhooks/fintoc", server.http),
            SECRET.into(),
        )];
        let shutdown = CancellationToken::new();
        let sim = Simulator::start(listener, config, shutdown.clone()).unwrap();
        let client =
            RefreshServiceClient::new(load::grpc_channels(&server.grpc, 1).await.remove(0));
        Setup {
            server,
            sim,
            sim_url,
            shutdown,
            client,
            movements,
        }
    }

    fn add_links(&self, links: usize, accounts: usize) -> Vec<SimLinkInfo> {
        (0..links)
            .map(|_| {
                self.sim.add_link(LinkSpec::new(vec![
                    Outcome::Succeed { new_movements: 0 };
                    accounts
                ]))
            })
            .collect()
    }

    /// RegisterLink for every Link, `REGISTERING` at a time.
    async fn register(&self, links: &[SimLinkInfo]) {
        let started = Instant::now();
        let calls = futures_util::stream::iter(links.iter().map(|link| {
            let mut client = self.client.clone();
            let token = link.token.clone();
            async move {
                let state = client
                    .register_link(pb::RegisterLinkRequest { link_token: token })
                    .await
                    .expect("RegisterLink")
                    .into_inner()
                    .link
                    .expect("the Link");
                assert!(state.link_token_kept);
            }
        }))
        .buffer_unordered(REGISTERING)
        .collect::<Vec<()>>();
        calls.await;
        eprintln!(
            "registered {} Links in {:.1} s",
            links.len(),
            started.elapsed().as_secs_f64()
        );
    }

    /// An open `all` stream (with movements on the movements server), past its heartbeat.
    async fn watch(&self, target: Target) -> tonic::Streaming<pb::WatchRefreshResponse> {
        let mut stream = self
            .client
            .clone()
            .watch_refresh(pb::WatchRefreshRequest {
                target: Some(target),
                include_movements: self.movements,
                ..Default::default()
            })
            .await
            .expect("WatchRefresh")
            .into_inner();
        stream
            .next()
            .await
            .expect("opening heartbeat")
            .expect("a heartbeat");
        stream
    }

    /// The server's mean time to list one account (`movement_listing_seconds`, /metrics).
    async fn mean_listing_ms(&self) -> f64 {
        let metrics = load::scrape(&self.server.http).await;
        let find = |suffix: &str| {
            metrics
                .lines()
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| {
                    let (name, value) = l.split_once(' ')?;
                    (name.contains("movement_listing_seconds") && name.ends_with(suffix))
                        .then(|| value.trim().parse::<f64>().ok())?
                })
                .unwrap_or(0.0)
        };
        let (sum, count) = (find("_sum"), find("_count"));
        if count > 0.0 {
            sum / count * 1000.0
        } else {
            f64::NAN
        }
    }

    fn stop(self) {
        self.shutdown.cancel();
        self.server.stop();
    }
}

/// What one burst's stream saw.
struct Burst {
    expected: usize,
    /// event id → when its `account_result` arrived.
    results: HashMap<String, Instant>,
    /// event id → when its `complete` movements message arrived.
    completes: HashMap<String, Instant>,
    added: usize,
    unavailable: usize,
    started: Instant,
}

impl Burst {
    fn last(map: &HashMap<String, Instant>, started: Instant) -> Duration {
        map.values()
            .max()
            .map_or(Duration::ZERO, |t| t.duration_since(started))
    }

    fn results_elapsed(&self) -> Duration {
        Self::last(&self.results, self.started)
    }

    fn complete_elapsed(&self) -> Duration {
        Self::last(&self.completes, self.started)
    }

    fn results_rate(&self) -> f64 {
        self.results.len() as f64 / self.results_elapsed().as_secs_f64()
    }

    /// Results per second counted until the last complete movements message.
    fn complete_rate(&self) -> f64 {
        self.completes.len() as f64 / self.complete_elapsed().as_secs_f64()
    }

    fn movements_rate(&self) -> f64 {
        self.added as f64 / self.complete_elapsed().as_secs_f64()
    }

    /// Each account's result → its complete movements.
    fn latencies(&self) -> Vec<Duration> {
        self.completes
            .iter()
            .filter_map(|(event, done)| Some(done.duration_since(*self.results.get(event)?)))
            .collect()
    }

    fn print(&self, round: usize, what: &str) {
        let movements = !self.completes.is_empty();
        let dash = || "—".to_owned();
        println!(
            "| {round} | {what} | {} | {} | {:.2} | {} | {:.0} | {} | {} |",
            self.results.len(),
            if movements {
                self.added.to_string()
            } else {
                dash()
            },
            self.results_elapsed().as_secs_f64(),
            if movements {
                format!("{:.2}", self.complete_elapsed().as_secs_f64())
            } else {
                dash()
            },
            self.results_rate(),
            if movements {
                format!("{:.1}", self.movements_rate())
            } else {
                dash()
            },
            self.unavailable,
        );
    }

    fn to_json(&self) -> Value {
        json!({
            "results": self.results.len(),
            "completes": self.completes.len(),
            "added": self.added,
            "unavailable": self.unavailable,
            "results_elapsed_s": self.results_elapsed().as_secs_f64(),
            "complete_elapsed_s": self.complete_elapsed().as_secs_f64(),
        })
    }
}

/// Fires one scheduled refresh per Link, back to back, and reads the `all` stream until every
/// account's result (and, with movements, its complete movements) arrived.
async fn burst(setup: &Setup, links: &[SimLinkInfo]) -> Burst {
    let expected = links.iter().map(|l| l.account_ids.len()).sum();
    let stream = setup
        .watch(Target::Selection(pb::Selection {
            all: true,
            ..Default::default()
        }))
        .await;
    let reader = tokio::spawn(read(stream, expected, setup.movements));
    // Let the reader reach its first poll before the clock starts.
    tokio::task::yield_now().await;
    let started = Instant::now();
    for link in links {
        let events = setup.sim.scheduled_refresh(&link.link_id, NEW_MOVEMENTS);
        assert_eq!(events.len(), link.account_ids.len());
    }
    let (results, completes, added, unavailable) = reader.await.expect("the stream reader");
    Burst {
        expected,
        results,
        completes,
        added,
        unavailable,
        started,
    }
}

type Seen = (
    HashMap<String, Instant>,
    HashMap<String, Instant>,
    usize,
    usize,
);

/// Reads until `expected` results (and as many complete movements, or unavailable ones, when
/// `movements`) arrived, or `BURST_LIMIT`.
async fn read(
    mut stream: tonic::Streaming<pb::WatchRefreshResponse>,
    expected: usize,
    movements: bool,
) -> Seen {
    let (mut results, mut completes) = (HashMap::new(), HashMap::new());
    let (mut added, mut unavailable) = (0, 0);
    let deadline = tokio::time::Instant::now() + BURST_LIMIT;
    loop {
        let done =
            results.len() >= expected && (!movements || completes.len() + unavailable >= expected);
        if done {
            break;
        }
        let message = match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(status))) => panic!("the stream failed: {status}"),
            Ok(None) => panic!("the stream ended"),
            Err(_) => {
                eprintln!(
                    "burst: gave up after {} s with {} results, {} complete",
                    BURST_LIMIT.as_secs(),
                    results.len(),
                    completes.len()
                );
                break;
            }
        };
        let at = Instant::now();
        match message.event {
            Some(Event::AccountResult(r)) => {
                results.insert(r.event_id, at);
            }
            Some(Event::Movements(m)) => {
                added += m.added.len();
                if m.complete {
                    completes.insert(m.event_id, at);
                }
            }
            Some(Event::MovementsUnavailable(u)) => {
                eprintln!("movements unavailable: {} {}", u.reason, u.message);
                unavailable += 1;
            }
            _ => {}
        }
    }
    (results, completes, added, unavailable)
}

/// One Link's scheduled refresh at a time, each waited for and spaced twice the pace's gap
/// apart (so none waits for a listing slot): result → complete movements.
async fn one_at_a_time_latencies(setup: &Setup, links: &[SimLinkInfo]) -> Vec<Duration> {
    let mut stream = setup
        .watch(Target::Selection(pb::Selection {
            all: true,
            ..Default::default()
        }))
        .await;
    let mut took = Vec::with_capacity(links.len());
    // More than the pace's gap between listings, so no listing waits for its slot.
    let gap = Duration::from_secs(2) / FETCH_RATE;
    for link in links {
        tokio::time::sleep(gap).await;
        let event = setup
            .sim
            .scheduled_refresh(&link.link_id, NEW_MOVEMENTS)
            .remove(0);
        let mut result_at = None;
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), stream.next())
                .await
                .expect("the movements within 30 s")
                .expect("the stream goes on")
                .expect("a message");
            let at = Instant::now();
            match message.event {
                Some(Event::AccountResult(r)) if r.event_id == event => result_at = Some(at),
                Some(Event::Movements(m)) if m.event_id == event && m.complete => {
                    assert_eq!(m.added.len(), NEW_MOVEMENTS as usize);
                    took.push(at - result_at.expect("the result before its movements"));
                    break;
                }
                Some(Event::MovementsUnavailable(u)) => {
                    panic!("movements unavailable: {} {}", u.reason, u.message)
                }
                _ => {}
            }
        }
    }
    took
}

/// The simulator's own time to answer the listing the fetcher makes (same query, one page):
/// `n` accounts of `links`, one GET at a time; p50 and p99 in ms.
async fn direct_listings(setup: &Setup, links: &[SimLinkInfo], n: usize) -> (f64, f64) {
    let http = reqwest::Client::new();
    let since = (time::OffsetDateTime::now_utc() - time::Duration::days(MOVEMENTS_WINDOW_DAYS))
        .date()
        .to_string();
    let tokens: Vec<(&str, &str)> = links
        .iter()
        .flat_map(|l| l.account_ids.iter().map(|a| (a.as_str(), l.token.as_str())))
        .take(n)
        .collect();
    let mut took = Vec::with_capacity(tokens.len());
    for (account, token) in tokens {
        let started = Instant::now();
        let answer = http
            .get(format!("{}/v1/accounts/{account}/movements", setup.sim_url))
            .query(&[
                ("link_token", token),
                ("since", &since),
                ("per_page", "300"),
                ("confirmed_only", "false"),
            ])
            .header("Authorization", API_KEY)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success());
        let body: Value = answer.json().await.unwrap();
        took.push(started.elapsed());
        assert_eq!(
            body.as_array().map(Vec::len),
            Some(NEW_MOVEMENTS as usize),
            "the same size as the fetcher's listing"
        );
    }
    (
        ms(percentile(&mut took, 50.0)),
        ms(percentile(&mut took, 99.0)),
    )
}

/// `serve` as [`crate::server::Server`] starts it, with `LINK_TOKEN_KEYS` set (movements on)
/// or removed (off), and `--fintoc-api-url` at the simulator.
struct Served {
    process: Running,
    grpc: String,
    http: String,
    _dir: tempfile::TempDir,
}

impl Served {
    fn start(sim_url: &str, movements: bool) -> Served {
        let extra = std::env::var("BENCH_SERVER_ARGS").unwrap_or_default();
        let dir = tempfile::Builder::new()
            .prefix("bench-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir");
        let db: PathBuf = dir.path().join("bench.db");
        let serve = Serve::with_binary(binary::THIS_BUILD)
            .database(&db)
            .args(["--fintoc-api-url", sim_url])
            .args(extra.split_whitespace())
            .env("FINTOC_SECRET_KEY", API_KEY)
            .env("FINTOC_WEBHOOK_SECRET", SECRET)
            .env("RUST_LOG", "error")
            .stderr_inherit();
        let serve = if movements {
            serve.env("LINK_TOKEN_KEYS", KEYS)
        } else {
            serve.env_remove("LINK_TOKEN_KEYS")
        };
        let process = serve.start();
        Served {
            grpc: process.grpc.clone(),
            http: process.http.clone(),
            process,
            _dir: dir,
        }
    }

    /// SIGTERM, then wait for a clean exit (a SIGKILL after 20 s).
    fn stop(mut self) {
        binary::try_signal(&self.process.child, "TERM");
        if self
            .process
            .exited_within(Duration::from_secs(20))
            .is_none()
        {
            let _ = self.process.child.kill();
        }
    }
}
