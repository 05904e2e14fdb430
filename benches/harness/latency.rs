//! Push latency: from the moment a webhook POST is sent to the moment a watcher receives the
//! `account_result`, at a steady 1,000 events/s. "spread": each watcher follows its own
//! account and events go round-robin (each event reaches one watcher, the product's usual
//! shape); "shared": every watcher follows the same account (each event reaches all of them);
//! "selection": as spread, but each watcher's target is a selection of 1,000 accounts (its own
//! and 999 no event names), so the hub's index holds 1,000 keys per watcher; "all": every
//! watcher follows every result (each event reaches all of them, as shared).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use fintoc_refresh::pb::refresh_service_client::RefreshServiceClient;
use fintoc_refresh::pb::watch_refresh_request::Target;
use fintoc_refresh::pb::{self, watch_refresh_response::Event};

use crate::Mode;
use crate::load::{self, Conn, Prepared};
use crate::server::{SECRET, Server};
use crate::stats::{ms, percentile};

const RATE: u64 = 1000;
/// Ids in each watcher's selection ("selection" shape).
const SELECTION_IDS: usize = 1_000;

/// Who follows what (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Spread,
    Shared,
    Selection,
    All,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Spread => "spread",
            Shape::Shared => "shared",
            Shape::Selection => "selection",
            Shape::All => "all",
        }
    }

    /// Whether every event reaches every watcher.
    fn reaches_all(self) -> bool {
        matches!(self, Shape::Shared | Shape::All)
    }
}
const SENDERS: usize = 16;
const CHANNELS: usize = 20;

pub async fn run(mode: &Mode) -> Value {
    let seconds = if mode.quick { 2 } else { 5 };
    println!(
        "\n## Push latency (webhook sent → account_result received, {RATE} events/s for {seconds} s)"
    );
    println!("| watchers | shape | delivered | p50 ms | p99 ms | max ms |");
    println!("|---|---|---|---|---|---|");
    let server = Server::start(&[]);
    let mut rows = Vec::new();
    let cases: &[(usize, Shape)] = &[
        (1, Shape::Spread),
        (100, Shape::Spread),
        (1000, Shape::Spread),
        (100, Shape::Shared),
        (1000, Shape::Shared),
    ];
    for (run, &(watchers, shape)) in cases.iter().enumerate() {
        rows.push(measure(&server, &server, run, watchers, shape, seconds).await);
    }
    server.stop();
    Value::Array(rows)
}

/// One row: events posted to `into`'s intake, watched on `on` (another replica, or the same
/// server).
pub async fn measure(
    into: &Server,
    on: &Server,
    run: usize,
    watchers: usize,
    shape: Shape,
    seconds: u64,
) -> Value {
    let total = (RATE * seconds) as usize;
    let shared = shape.reaches_all();
    let account = |n: usize| {
        if shared {
            format!("acc_l{run}_0")
        } else {
            format!("acc_l{run}_{}", n % watchers)
        }
    };
    let events: Arc<Vec<Prepared>> = Arc::new(
        (0..total)
            .map(|n| load::prepare_event(&format!("evt_l{run}_{n}"), &account(n), SECRET))
            .collect(),
    );
    let base = Instant::now();
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());

    // Watchers first; each has seen its opening heartbeat before anything is sent.
    let channels = load::grpc_channels(&on.grpc, CHANNELS.min(watchers)).await;
    let mut readers = Vec::with_capacity(watchers);
    for w in 0..watchers {
        let mut client = RefreshServiceClient::new(channels[w % channels.len()].clone());
        let target = match shape {
            Shape::Spread => Target::AccountId(account(w)),
            Shape::Shared => Target::AccountId(account(0)),
            Shape::Selection => Target::Selection(pb::Selection {
                account_ids: std::iter::once(account(w))
                    .chain((1..SELECTION_IDS).map(|k| format!("acc_pad{run}_{w}_{k}")))
                    .collect(),
                ..Default::default()
            }),
            Shape::All => Target::Selection(pb::Selection {
                all: true,
                ..Default::default()
            }),
        };
        let mut stream = client
            .watch_refresh(pb::WatchRefreshRequest {
                target: Some(target),
                after_sequence: None,
                ..Default::default()
            })
            .await
            .expect("watch")
            .into_inner();
        stream.next().await.expect("opening heartbeat").expect("ok");
        let expected = if shared {
            total
        } else {
            (0..total).filter(|n| n % watchers == w).count()
        };
        let sent = sent.clone();
        readers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(expected);
            while latencies.len() < expected {
                let next = tokio::time::timeout(Duration::from_secs(15), stream.next()).await;
                let Ok(Some(Ok(msg))) = next else { break };
                if let Some(Event::AccountResult(r)) = msg.event {
                    let now = base.elapsed().as_nanos() as u64;
                    let n: usize = r.event_id.rsplit('_').next().unwrap().parse().unwrap();
                    latencies.push(Duration::from_nanos(
                        now.saturating_sub(sent[n].load(Ordering::Acquire)),
                    ));
                }
            }
            latencies
        }));
    }

    // Steady sender: one event per millisecond, over a few keep-alive connections.
    let mut lanes = Vec::new();
    for _ in 0..SENDERS {
        let (tx, mut rx) = mpsc::unbounded_channel::<usize>();
        let mut conn = Conn::open(&into.http).await;
        let (events, sent, addr) = (events.clone(), sent.clone(), into.http.clone());
        let task = tokio::spawn(async move {
            while let Some(n) = rx.recv().await {
                sent[n].store(base.elapsed().as_nanos() as u64, Ordering::Release);
                let status = conn.send(load::webhook_request(&addr, &events[n])).await;
                assert_eq!(
                    status.map(|s| s.as_u16()),
                    Some(200),
                    "intake refused an event"
                );
            }
        });
        lanes.push((tx, task));
    }
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for n in 0..total {
        tick.tick().await;
        lanes[n % SENDERS].0.send(n).unwrap();
    }
    for (tx, task) in lanes {
        drop(tx);
        task.await.unwrap();
    }
    let mut all = Vec::new();
    for r in readers {
        all.extend(r.await.unwrap());
    }
    let expected = if shared { total * watchers } else { total };
    let delivered = all.len();
    let (p50, p99) = (percentile(&mut all, 50.0), percentile(&mut all, 99.0));
    let max = all.iter().max().copied().unwrap_or_default();
    let shape = shape.name();
    println!(
        "| {watchers} | {shape} | {delivered}/{expected} | {:.2} | {:.2} | {:.2} |",
        ms(p50),
        ms(p99),
        ms(max)
    );
    json!({"watchers": watchers, "shape": shape, "delivered": delivered, "expected": expected,
        "p50_ms": ms(p50), "p99_ms": ms(p99), "max_ms": ms(max)})
}
