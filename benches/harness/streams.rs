//! Idle watch streams: the server's RSS with 0 and with 10,000 open idle WatchRefresh streams
//! (kB per stream), and the time to fan one event out to all of them.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use fintoc_refresh::pb::refresh_service_client::RefreshServiceClient;
use fintoc_refresh::pb::watch_refresh_request::Target;
use fintoc_refresh::pb::{self, watch_refresh_response::Event};

use crate::Mode;
use crate::load::{self, Conn};
use crate::server::{SECRET, Server};
use crate::stats::{median, ms};

const STREAMS: usize = 10_000;
/// Streams per HTTP/2 connection, as a few hundred client processes would open them.
const PER_CONNECTION: usize = 500;
const ROUNDS: usize = 3;

pub async fn run(_mode: &Mode) -> Value {
    println!(
        "\n## Watch streams ({STREAMS} idle streams over {} connections)",
        STREAMS / PER_CONNECTION
    );
    let server = Server::start(&[]);
    let figures = measure(&server).await;
    server.stop();
    figures
}

/// Idle streams' memory and one event's fan-out on `server` (SQLite or a PostgreSQL replica).
pub async fn measure(server: &Server) -> Value {
    // Warm up: one connection and one stream opened and closed, so lazily built state is in
    // the baseline.
    {
        let mut client = RefreshServiceClient::connect(format!("http://{}", server.grpc))
            .await
            .unwrap();
        let mut s = client
            .watch_refresh(pb::WatchRefreshRequest {
                target: Some(Target::AccountId("acc_warm".into())),
                after_sequence: None,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        s.next().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = server.rss_kb();

    let (tx, mut arrivals) = mpsc::unbounded_channel::<Instant>();
    let opened_at = Instant::now();
    let channels = load::grpc_channels(&server.grpc, STREAMS / PER_CONNECTION).await;
    let mut readers = Vec::with_capacity(STREAMS);
    for i in 0..STREAMS {
        let mut client = RefreshServiceClient::new(channels[i / PER_CONNECTION].clone());
        let mut stream = client
            .watch_refresh(pb::WatchRefreshRequest {
                target: Some(Target::AccountId("acc_fan".into())),
                after_sequence: None,
                ..Default::default()
            })
            .await
            .expect("open a watch stream")
            .into_inner();
        stream.next().await.expect("opening heartbeat").expect("ok");
        let tx = tx.clone();
        readers.push(tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                if let Some(Event::AccountResult(_)) = msg.event {
                    let _ = tx.send(Instant::now());
                }
            }
        }));
    }
    let open_secs = opened_at.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = server.rss_kb();
    let per_stream_kb = (rss_after.saturating_sub(rss_before)) as f64 / STREAMS as f64;

    let mut conn = Conn::open(&server.http).await;
    let mut fanouts = Vec::new();
    for round in 0..ROUNDS {
        let event = load::prepare_event(&format!("evt_fan_{round}"), "acc_fan", SECRET);
        let sent = Instant::now();
        let status = conn.send(load::webhook_request(&server.http, &event)).await;
        assert_eq!(status.map(|s| s.as_u16()), Some(200));
        let mut last = sent;
        for _ in 0..STREAMS {
            match tokio::time::timeout(Duration::from_secs(30), arrivals.recv()).await {
                Ok(Some(at)) => last = last.max(at),
                _ => panic!("fan-out round {round} did not reach every stream"),
            }
        }
        fanouts.push(ms(last - sent));
    }
    let fanout = median(&mut fanouts.clone());
    println!("| measure | value |");
    println!("|---|---|");
    println!("| server RSS, 0 streams | {rss_before} kB |");
    println!("| server RSS, {STREAMS} idle streams | {rss_after} kB |");
    println!("| per idle stream | {per_stream_kb:.2} kB (target ≤ 8) |");
    println!("| one event to all {STREAMS} (median of {ROUNDS}) | {fanout:.1} ms |");
    println!("| time to open {STREAMS} streams | {open_secs:.1} s |");
    drop(readers);
    json!({"streams": STREAMS, "rss_before_kb": rss_before, "rss_after_kb": rss_after,
        "kb_per_stream": (per_stream_kb * 100.0).round() / 100.0, "fanout_ms": fanout, "fanout_rounds_ms": fanouts})
}
