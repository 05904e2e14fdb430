//! RequestRefresh: its overhead over the simulator's own latency for the same Fintoc calls
//! (GET the Link, POST the intent), and the latency of answers given locally (joined,
//! cooldown). The simulator runs in this process; the server is the release binary.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use fintoc_refresh::pb::refresh_service_client::RefreshServiceClient;
use fintoc_refresh::pb::{self, RefreshType};
use fintoc_refresh::simulator::{LinkSpec, Outcome, SimConfig, SimLinkInfo, Simulator};

use crate::Mode;
use crate::server::{API_KEY, SECRET, Server};
use crate::stats::{ms, percentile};

pub async fn run(mode: &Mode) -> Value {
    let n = if mode.quick { 100 } else { 300 };
    println!("\n## RequestRefresh ({n} calls per row, sequential, one gRPC connection)");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_url = format!("http://{}", listener.local_addr().unwrap());
    let server = Server::start(&["--fintoc-api-url", &sim_url]);
    let mut config = SimConfig::new(API_KEY);
    config.delivery_delay = Duration::ZERO;
    config.webhooks = vec![(
        format!("http://{}/webhooks/fintoc", server.http),
        SECRET.into(),
    )];
    let shutdown = CancellationToken::new();
    let sim = Simulator::start(listener, config, shutdown.clone()).unwrap();
    let ok = || {
        LinkSpec::new(vec![
            Outcome::Succeed { new_movements: 1 },
            Outcome::Succeed { new_movements: 0 },
        ])
    };
    let direct_links: Vec<SimLinkInfo> = (0..n).map(|_| sim.add_link(ok())).collect();
    let served_links: Vec<SimLinkInfo> = (0..n).map(|_| sim.add_link(ok())).collect();
    let pending_links: Vec<SimLinkInfo> = (0..n)
        .map(|_| sim.add_link(LinkSpec::new(vec![Outcome::Silent])))
        .collect();

    // The simulator's own latency for the two calls the service makes per new intent.
    let http = reqwest::Client::new();
    let mut direct = Vec::with_capacity(n);
    for link in &direct_links {
        let started = Instant::now();
        let got = http
            .get(format!("{sim_url}/v1/links/{}", link.token))
            .header("Authorization", API_KEY)
            .send()
            .await
            .unwrap();
        assert!(got.status().is_success());
        got.bytes().await.unwrap();
        // As the service sends it: the documented query parameters, an empty body.
        let created = http
            .post(format!("{sim_url}/v1/refresh_intents"))
            .query(&[
                ("link_token", link.token.as_str()),
                ("refresh_type", "only_last"),
            ])
            .header("Authorization", API_KEY)
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success());
        created.bytes().await.unwrap();
        direct.push(started.elapsed());
    }

    let client = RefreshServiceClient::connect(format!("http://{}", server.grpc))
        .await
        .unwrap();
    let call = |token: String| {
        let mut client = client.clone();
        async move {
            let started = Instant::now();
            let result = client
                .request_refresh(pb::RequestRefreshRequest {
                    link_token: token,
                    refresh_type: RefreshType::OnlyLast.into(),
                    idempotency_key: String::new(),
                    keep_link_token: false,
                })
                .await;
            (started.elapsed(), result)
        }
    };
    let mut created = Vec::with_capacity(n);
    for link in &served_links {
        let (took, result) = call(link.token.clone()).await;
        let answer = result.expect("RequestRefresh");
        assert!(!answer.into_inner().joined_existing);
        created.push(took);
    }
    let mut joined = Vec::with_capacity(n);
    for link in &pending_links {
        call(link.token.clone()).await.1.expect("create");
        let (took, result) = call(link.token.clone()).await;
        assert!(result.expect("join").into_inner().joined_existing);
        joined.push(took);
    }
    // The served links' results have arrived by now: each is in its 5-minute cooldown.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut cooldown = Vec::with_capacity(n);
    for link in &served_links {
        let (took, result) = call(link.token.clone()).await;
        assert_eq!(
            result.expect_err("cooldown").code(),
            tonic::Code::ResourceExhausted
        );
        cooldown.push(took);
    }
    shutdown.cancel();
    server.stop();

    let p50 = |v: &mut Vec<Duration>| ms(percentile(v, 50.0));
    let p99 = |v: &mut Vec<Duration>| ms(percentile(v, 99.0));
    let (d50, c50) = (p50(&mut direct), p50(&mut created));
    println!("| row | p50 ms | p99 ms |");
    println!("|---|---|---|");
    println!(
        "| simulator alone: GET link + POST intent | {d50:.2} | {:.2} |",
        p99(&mut direct)
    );
    println!(
        "| RequestRefresh creating an intent | {c50:.2} | {:.2} |",
        p99(&mut created)
    );
    println!(
        "| overhead of the service (p50 difference) | {:.2} | |",
        c50 - d50
    );
    let (j50, k50) = (p50(&mut joined), p50(&mut cooldown));
    println!(
        "| local answer: joined | {j50:.3} | {:.3} | (target p50 ≤ 1 ms)",
        p99(&mut joined)
    );
    println!(
        "| local answer: cooldown | {k50:.3} | {:.3} | (target p50 ≤ 1 ms)",
        p99(&mut cooldown)
    );
    json!({"calls": n, "simulator_p50_ms": d50, "create_p50_ms": c50, "overhead_p50_ms": c50 - d50,
        "create_p99_ms": p99(&mut created), "joined_p50_ms": j50, "joined_p99_ms": p99(&mut joined),
        "cooldown_p50_ms": k50, "cooldown_p99_ms": p99(&mut cooldown)})
}
