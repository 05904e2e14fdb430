//! An axum [`Listener`] that hands out TLS streams, so the HTTPS intake is served by the same
//! `axum::serve(..).with_graceful_shutdown(..)` as plain HTTP and drains the same way.
//!
//! Handshakes run beside the accept loop, not in it: one slow or silent client must not hold
//! up every other connection, and each gets [`HANDSHAKE_TIMEOUT`]. A failed handshake
//! (plain HTTP sent to the HTTPS port, an untrusted client) closes that connection only.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;

use super::HANDSHAKE_TIMEOUT;

type Handshake = Option<(TlsStream<TcpStream>, SocketAddr)>;

pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    /// Handshakes in progress; dropped (and so aborted) with the listener at shutdown.
    handshakes: JoinSet<Handshake>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> TlsListener {
        TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }

    fn start_handshake(&mut self, tcp: TcpStream, peer: SocketAddr) {
        // No Nagle: an answer must not wait for the peer's delayed ACK.
        let _ = tcp.set_nodelay(true);
        let acceptor = self.acceptor.clone();
        self.handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Some((tls, peer)),
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "HTTPS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(%peer, "HTTPS handshake timed out");
                    None
                }
            }
        });
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    // Both branches are cancel-safe (axum drops this future when shutdown starts): a socket
    // accepted is already in `handshakes`, and a finished handshake stays there until taken.
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((tcp, peer)) => self.start_handshake(tcp, peer),
                    Err(e) => accept_failed(e).await,
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(connection)) = done {
                        return connection;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// As axum does for plain sockets: a connection that died before it was accepted is
/// nothing; anything else (out of file descriptors) gets a pause so the loop does not spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "HTTPS accept failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
