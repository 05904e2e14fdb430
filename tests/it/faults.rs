//! A flaky Fintoc: slow beyond the deadline, 5xx, 429, malformed JSON, refused connections
//! and TLS failures. Each is retried a bounded number of times, then answered with the
//! right gRPC code and a message a person understands — and all the while the intake and
//! the watchers keep working. A slow Fintoc and a shutdown during a reconciliation run on
//! both backends (a RequestRefresh holds its Link's turn in the store while it waits on
//! Fintoc; the reconciliation is background work, which PostgreSQL gives to its leader);
//! the others are about the Fintoc client alone and run on SQLite.

use std::time::{Duration, Instant};

use crate::common::*;
use fintoc_refresh::pb;
use fintoc_refresh::simulator::{Fault, LinkSpec, Outcome, SimConfig};
use tonic::Code;

const GET_LINK: &str = "/v1/links/";

fn sim_config() -> SimConfig {
    let mut c = SimConfig::new(API_KEY);
    c.delivery_delay = Duration::ZERO;
    c
}

async fn server_with(backend: Backend, fintoc_url: Option<String>) -> TestServer {
    TestServer::with(Options {
        backend,
        simulator: fintoc_url.is_none().then(sim_config),
        fintoc_url,
        tune: Some(Box::new(|c| c.fintoc_backoff = Duration::from_millis(5))),
        ..Options::default()
    })
    .await
}

async fn refresh(
    server: &TestServer,
    token: &str,
    timeout: Option<Duration>,
) -> Result<pb::RequestRefreshResponse, tonic::Status> {
    let mut request = tonic::Request::new(pb::RequestRefreshRequest {
        link_token: token.into(),
        refresh_type: 0,
        idempotency_key: String::new(),
        keep_link_token: false,
    });
    if let Some(t) = timeout {
        request.set_timeout(t);
    }
    server
        .client()
        .await
        .request_refresh(request)
        .await
        .map(|r| r.into_inner())
}

/// The intake takes a webhook and a watcher gets it, while Fintoc misbehaves.
async fn still_serving(server: &TestServer, id: &str) {
    let mut feed = server.watch(account_target("acc_bystander"), None).await;
    feed.next().await;
    let (status, _) = server
        .post_event(&event(
            id,
            "acc_bystander",
            "succeeded",
            server.clock.now_ms(),
        ))
        .await;
    assert_eq!(status, 200, "the intake keeps answering");
    assert!(
        matches!(feed.next_event().await, Seen::Result { event, .. } if event == id),
        "watchers keep getting results"
    );
}

on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    fintoc_slower_than_the_deadline_is_unavailable_in_time_and_serving_goes_on
);
async fn fintoc_slower_than_the_deadline_is_unavailable_in_time_and_serving_goes_on(
    backend: Backend,
) {
    let server = server_with(backend, None).await;
    let sim = server.sim.as_ref().unwrap();
    let link = sim.add_link(LinkSpec::new(vec![Outcome::Silent]));
    sim.inject(Fault::Slow(Duration::from_secs(30)), 100);
    let started = Instant::now();
    let pending = refresh(&server, &link.token, Some(Duration::from_millis(800)));
    let (answer, ()) = tokio::join!(pending, still_serving(&server, "evt_during_slow"));
    let err = answer.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().contains("did not answer in time"),
        "{}",
        err.message()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the caller's deadline, took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn persistent_429_and_5xx_are_retried_a_bounded_number_of_times() {
    for (fault, words) in [
        (Fault::Status(429), "HTTP 429"),
        (Fault::Status(502), "HTTP 502"),
        (Fault::Malformed, "could not be read"),
    ] {
        let server = server_with(Backend::Sqlite, None).await;
        let sim = server.sim.as_ref().unwrap();
        let link = sim.add_link(LinkSpec::new(vec![Outcome::Silent]));
        sim.inject(fault.clone(), 1000);
        let err = refresh(&server, &link.token, None).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::Unavailable,
            "{fault:?}: {}",
            err.message()
        );
        assert!(
            err.message().contains(words),
            "{fault:?}: {}",
            err.message()
        );
        assert!(!err.message().contains(&link.token), "never the token");
        let path = format!("{GET_LINK}{}", link.token);
        let attempts = sim.requests("GET", &path);
        assert!(
            (2..=6).contains(&attempts),
            "{fault:?}: retried, but boundedly: {attempts} attempts"
        );
        still_serving(&server, &format!("evt_after_{attempts}")).await;
    }
}

#[tokio::test]
async fn a_refused_connection_and_a_failed_tls_handshake_are_unavailable_with_the_reason() {
    // Nobody listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let refused_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let server = server_with(Backend::Sqlite, Some(refused_url)).await;
    let err = refresh(&server, "link_a_token_b", None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("cannot connect to Fintoc"),
        "{}",
        err.message()
    );
    still_serving(&server, "evt_refused").await;

    // Something listens, but speaks plain HTTP where TLS is expected.
    let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_url = format!("https://{}", plain.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = plain.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = socket
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let server = server_with(Backend::Sqlite, Some(tls_url)).await;
    let err = refresh(&server, "link_a_token_b", None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(err.message().contains("TLS"), "{}", err.message());
    assert!(!err.message().contains("link_a_token_b"));
    still_serving(&server, "evt_tls").await;
}

on_both_backends!(shutdown_keeps_its_grace_while_a_reconciliation_waits_on_a_silent_fintoc);
/// Proves shutdown keeps to `--shutdown-grace` while background work waits on Fintoc: a
/// reconciliation stuck on a Fintoc that takes the connection and never answers (it would
/// wait up to a minute) does not hold the server past its grace.
async fn shutdown_keeps_its_grace_while_a_reconciliation_waits_on_a_silent_fintoc(
    backend: Backend,
) {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let (accepted, mut called) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept().await {
            held.push(conn);
            let _ = accepted.send(());
        }
    });
    let grace = Duration::from_secs(1);
    let server = TestServer::with(Options {
        backend,
        fintoc_url: Some(url),
        tune: Some(Box::new(move |c| c.shutdown_grace = grace)),
        ..Options::default()
    })
    .await;
    server.create_intent("ri_1", "link_1", &["acc_1"]).await;
    // Reconciliation is due --reconcile-after (5 minutes) after creation.
    server.clock.advance(Duration::from_secs(5 * 60));
    tokio::time::timeout(PATIENCE, called.recv())
        .await
        .expect("reconciliation called Fintoc");
    let started = Instant::now();
    server.stop().await.unwrap();
    assert!(
        started.elapsed() < grace + Duration::from_secs(2),
        "stopped {:?} after the signal, grace {grace:?}",
        started.elapsed()
    );
}
