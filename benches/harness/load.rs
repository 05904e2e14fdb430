//! The load generator: raw HTTP/1.1 keep-alive connections (hyper's client connection, no
//! pool), requests built in advance so the generator spends its time sending, not hashing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use fintoc_refresh::fintoc::signature;

pub struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Conn {
    pub async fn open(addr: &str) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Conn { sender }
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Option<StatusCode> {
        self.sender.ready().await.ok()?;
        let response = self.sender.send_request(request).await.ok()?;
        let status = response.status();
        response.into_body().collect().await.ok()?;
        Some(status)
    }
}

/// `n` gRPC connections to the server at `addr` (watchers are spread over them, as many
/// client processes would open them).
pub async fn grpc_channels(addr: &str, n: usize) -> Vec<tonic::transport::Channel> {
    let mut channels = Vec::with_capacity(n);
    for _ in 0..n {
        channels.push(
            tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap(),
        );
    }
    channels
}

/// A prepared webhook delivery.
#[derive(Clone)]
pub struct Prepared {
    pub body: Bytes,
    pub signature: String,
}

/// An account result event with a unique id, signed now.
pub fn prepare_event(id: &str, account: &str, secret: &str) -> Prepared {
    let now_ms = fintoc_refresh::clock::system_now_ms();
    let at = fintoc_refresh::clock::format_rfc3339_ms(now_ms);
    let body = format!(
        r#"{{"id":"{id}","type":"account.refresh_intent.succeeded","mode":"live","created_at":"{at}","data":{{"object":"refresh_intent","refreshed_object":"account","refreshed_object_id":"{account}","status":"succeeded","public_error":null,"created_at":"{at}","type":"only_last","new_movements":3}},"object":"event"}}"#
    );
    let signature = signature::header(secret, now_ms / 1000, body.as_bytes());
    Prepared {
        body: Bytes::from(body),
        signature,
    }
}

pub fn webhook_request(addr: &str, event: &Prepared) -> Request<Full<Bytes>> {
    Request::post("/webhooks/fintoc")
        .header("host", addr)
        .header("content-type", "application/json")
        .header("fintoc-signature", &event.signature)
        .body(Full::new(event.body.clone()))
        .unwrap()
}

pub fn healthz_request(addr: &str) -> Request<Full<Bytes>> {
    Request::get("/healthz")
        .header("host", addr)
        .body(Full::default())
        .unwrap()
}

/// `GET /metrics` on the server, as text.
pub async fn scrape(addr: &str) -> String {
    let mut conn = Conn::open(addr).await;
    conn.sender.ready().await.expect("metrics connection");
    let request = Request::get("/metrics")
        .header("host", addr)
        .body(Full::default())
        .unwrap();
    let response = conn.sender.send_request(request).await.expect("metrics");
    let body = response.into_body().collect().await.expect("metrics body");
    String::from_utf8_lossy(&body.to_bytes()).into_owned()
}

/// The value of one unlabelled sample (`name value`) in a Prometheus text exposition.
pub fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// What a closed-loop phase achieved.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub ok: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// CPU seconds the harness process (the load generator) used during the phase.
    pub client_cpu: f64,
    /// CPU seconds the server used during the phase.
    pub server_cpu: f64,
}

impl Phase {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// `conns` connections send back to back for `duration` (or until `make` runs out);
/// request `i` comes from `make(i)`.
pub async fn closed_loop<F>(
    addr: &str,
    server_pid: u32,
    conns: usize,
    duration: Duration,
    make: F,
) -> Phase
where
    F: Fn(usize) -> Option<Request<Full<Bytes>>> + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(AtomicUsize::new(0));
    let mut connections = Vec::with_capacity(conns);
    for _ in 0..conns {
        connections.push(Conn::open(addr).await);
    }
    let (cpu0, server0) = (
        super::server::own_cpu_secs(),
        super::server::cpu_secs(server_pid),
    );
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut conn| {
            let (make, next) = (make.clone(), next.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let Some(request) = make(next.fetch_add(1, Ordering::Relaxed)) else {
                        break;
                    };
                    match conn.send(request).await {
                        Some(s) if s.is_success() => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        let (o, f) = t.await.unwrap();
        ok += o;
        failed += f;
    }
    Phase {
        ok,
        failed,
        elapsed: started.elapsed(),
        client_cpu: super::server::own_cpu_secs() - cpu0,
        server_cpu: super::server::cpu_secs(server_pid) - server0,
    }
}
