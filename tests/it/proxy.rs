//! A TCP proxy the tests put between replicas and PostgreSQL, to take the database away the
//! way a network does and touch nothing else: [`Proxy::freeze`] stops forwarding in both
//! directions and closes nothing (a partition, a black-holed route: packets vanish, no RST,
//! no FIN; connections still open, new ones accepted and then left unanswered);
//! [`Proxy::thaw`] resumes. [`Proxy::delay_new_connections`] makes a slow network of it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub addr: SocketAddr,
    frozen: watch::Sender<bool>,
    /// How long a new connection waits before anything is forwarded (a slow network).
    delay: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Proxy {
    /// Forwards to `upstream` until dropped.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, _) = watch::channel(false);
        let stop = CancellationToken::new();
        let delay = Arc::new(AtomicU64::new(0));
        let (gate, until, slow) = (frozen.clone(), stop.clone(), delay.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = until.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                let (gate, until) = (gate.subscribe(), until.clone());
                let wait = Duration::from_millis(slow.load(Ordering::Relaxed));
                tokio::spawn(async move {
                    tokio::select! {
                        _ = until.cancelled() => {}
                        _ = async {
                            tokio::time::sleep(wait).await;
                            relay(client, upstream, gate).await
                        } => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            frozen,
            delay,
            stop,
        }
    }

    /// The PostgreSQL URL `url` with its host and port replaced by this proxy's.
    pub fn url(&self, url: &str) -> String {
        let mut parsed = reqwest::Url::parse(url).unwrap();
        parsed.set_host(Some("127.0.0.1")).unwrap();
        parsed.set_port(Some(self.addr.port())).unwrap();
        parsed.to_string()
    }

    /// Stops forwarding, both ways, on every connection; closes nothing.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// Every connection made from now on waits `delay` before anything goes through.
    pub fn delay_new_connections(&self, delay: Duration) {
        self.delay
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }
}

/// The upstream address of a PostgreSQL URL.
pub fn upstream_of(url: &str) -> SocketAddr {
    let parsed = reqwest::Url::parse(url).unwrap();
    let host = parsed.host_str().unwrap();
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{}", parsed.port().unwrap_or(5432))
        .parse()
        .unwrap()
}

async fn relay(client: TcpStream, upstream: SocketAddr, gate: watch::Receiver<bool>) {
    // A connection that arrives while frozen is left unanswered until the thaw.
    open(gate.clone()).await;
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        _ = pump(client_read, server_write, gate.clone()) => {}
        _ = pump(server_read, client_write, gate) => {}
    }
}

/// Copies `from` to `to`, reading and writing only while the gate is open.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    gate: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        open(gate.clone()).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Read before the freeze, held back until the thaw: nothing gets through meanwhile.
        open(gate.clone()).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Resolves once the gate is open (not frozen).
async fn open(mut gate: watch::Receiver<bool>) {
    let _ = gate.wait_for(|frozen| !frozen).await;
}
