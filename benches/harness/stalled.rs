//! Watchers that never read: does the intake slow down, and does memory stay bounded?
//! The intake's rate from 64 connections alone (A) and with 1,000 open WatchRefresh streams
//! that are never read, ten on each account the events go to (B), alternated A B A B; the
//! server's RSS before the stalled watchers, after opening them, and after the load.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use fintoc_refresh::pb::refresh_service_client::RefreshServiceClient;
use fintoc_refresh::pb::{self, watch_refresh_request::Target};

use crate::Mode;
use crate::load::{self, Phase, Prepared};
use crate::server::{SECRET, Server};
use crate::stats::median;

const STALLED: usize = 1000;
const ACCOUNTS: usize = 100;

pub async fn run(mode: &Mode) -> Value {
    let phase = Duration::from_secs(if mode.quick { 2 } else { 4 });
    let connections = mode.connections;
    println!(
        "\n## Watchers that never read ({STALLED} stalled streams on the {ACCOUNTS} accounts receiving events; A = none, B = with them)"
    );
    let server = Server::start(&[]);
    let addr = server.http.clone();
    let mut sent = 0usize;
    let mut batch = |round: &str| -> Arc<Vec<Prepared>> {
        let count = (60_000.0 * phase.as_secs_f64()) as usize;
        let events = (0..count)
            .map(|i| {
                load::prepare_event(
                    &format!("evt_s{round}_{}", sent + i),
                    &format!("acc_{}", i % ACCOUNTS),
                    SECRET,
                )
            })
            .collect();
        sent += count;
        Arc::new(events)
    };
    let intake = |events: Arc<Vec<Prepared>>| {
        let a = addr.clone();
        let pid = server.pid();
        let addr = addr.clone();
        async move {
            load::closed_loop(&addr, pid, connections, phase, move |i| {
                events.get(i).map(|e| load::webhook_request(&a, e))
            })
            .await
        }
    };
    // Warm up.
    intake(batch("warm")).await;
    let rss_start = server.rss_kb();
    let a0 = intake(batch("a0")).await;

    // Open the stalled watchers: each reads its opening heartbeat, then never again.
    let channels = load::grpc_channels(&server.grpc, 10).await;
    let mut stalled = Vec::with_capacity(STALLED);
    for i in 0..STALLED {
        let mut client = RefreshServiceClient::new(channels[i % channels.len()].clone());
        let mut stream = client
            .watch_refresh(pb::WatchRefreshRequest {
                target: Some(Target::AccountId(format!("acc_{}", i % ACCOUNTS))),
                after_sequence: None,
                ..Default::default()
            })
            .await
            .expect("open a watch stream")
            .into_inner();
        stream.message().await.expect("heartbeat");
        stalled.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_opened = server.rss_kb();
    let b0 = intake(batch("b0")).await;
    let rss_loaded_1 = server.rss_kb();
    let b1 = intake(batch("b1")).await;
    let rss_loaded_2 = server.rss_kb();
    drop(stalled);
    drop(channels);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a1 = intake(batch("a1")).await;
    let rss_released = server.rss_kb();
    server.stop();

    let rate = |p: &[&Phase]| median(&mut p.iter().map(|p| p.rate()).collect::<Vec<_>>());
    let (without, with) = (rate(&[&a0, &a1]), rate(&[&b0, &b1]));
    let per_stalled = (rss_loaded_2.saturating_sub(rss_start)) as f64 / STALLED as f64;
    println!(
        "  A0 {:.0}/s  B0 {:.0}/s  B1 {:.0}/s  A1 {:.0}/s",
        a0.rate(),
        b0.rate(),
        b1.rate(),
        a1.rate()
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!("| intake without stalled watchers (median) | {without:.0} events/s |");
    println!("| intake with {STALLED} stalled watchers (median) | {with:.0} events/s |");
    println!("| ratio with / without | {:.2} |", with / without);
    println!(
        "| server RSS: start / stalled opened / after load ×1 / ×2 / released | {rss_start} / {rss_opened} / {rss_loaded_1} / {rss_loaded_2} / {rss_released} kB |"
    );
    println!("| per stalled watcher after the load | {per_stalled:.1} kB |");
    json!({"stalled": STALLED, "intake_without_eps": without.round(), "intake_with_eps": with.round(),
        "ratio": ((with / without) * 100.0).round() / 100.0,
        "rss_kb": {"start": rss_start, "opened": rss_opened, "loaded_1": rss_loaded_1,
                   "loaded_2": rss_loaded_2, "released": rss_released},
        "kb_per_stalled": (per_stalled * 10.0).round() / 10.0})
}
