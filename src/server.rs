//! `serve`: puts the shared state ([`App`]) behind the gRPC and HTTP servers, starts the
//! background tasks, runs until `shutdown` is cancelled (or storage fails for good: then it
//! stops with an error), then drains within the grace period.
//! `main` and every test call this same function with their own listeners (port 0 in tests),
//! config and cancellation token; nothing is global.

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::app::App;
use crate::config::Config;
use crate::grpc::Service;
use crate::grpc::auth::BearerAuth;
use crate::pb;
use crate::pb::refresh_service_server::RefreshServiceServer;
use crate::tls::{self, listener::TlsListener};

/// The two bound sockets the server answers on.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: TcpListener,
}

/// HTTP/2 pings keep idle watch streams honest: a client that vanished without closing
/// (crash, NAT timeout) is noticed within interval + timeout instead of hours.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the service until `shutdown` is cancelled.
pub async fn serve(
    listeners: Listeners,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = App::start(config).await?;
    run(app, listeners, shutdown).await
}

/// The HTTP side, plain or HTTPS: the same router and the same graceful shutdown on `stop`
/// either way, only the listener differs.
fn serve_http(
    app: &Arc<App>,
    listener: TcpListener,
    stop: CancellationToken,
) -> BoxFuture<'static, std::io::Result<()>> {
    let router = crate::http::router(app.clone());
    match &app.config.http_tls {
        Some(identity) => {
            let listener = TlsListener::new(listener, tls::http_server_config(identity));
            let server =
                axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
            Box::pin(server.into_future())
        }
        None => {
            // No Nagle: an answer must not wait for the peer's delayed ACK.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            let server =
                axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
            Box::pin(server.into_future())
        }
    }
}

/// The gRPC port's connections, with Nagle's algorithm off: a watch stream writes one small
/// message per result, and with Nagle each waited for the watcher's delayed ACK of the one
/// before (10–40 ms). The builder's `tcp_nodelay` does not apply to connections handed in.
fn grpc_incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Serves `app` on `listeners` until `shutdown` is cancelled, then drains.
pub async fn run(
    app: Arc<App>,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let (mut health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RefreshServiceServer<Service>>().await;
    let reflection = |b: tonic_reflection::server::Builder<'static>| {
        b.register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(pb::ERROR_DETAILS_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection(tonic_reflection::server::Builder::configure()).build_v1()?;
    let reflection_v1alpha =
        reflection(tonic_reflection::server::Builder::configure()).build_v1alpha()?;

    if let Ok(addr) = listeners.grpc.local_addr()
        && let Some(warning) = crate::config::exposure_warning(addr, &app.config)
    {
        tracing::warn!("{warning}");
    }

    // Cancelled after the drain has started, so the servers stop last.
    let stop = CancellationToken::new();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &app.config.grpc_tls {
        builder = builder
            .tls_config(tls.server_config())
            .context("cannot use the gRPC TLS certificate")?;
    }
    // Only RefreshService sits behind the token check: health stays open for load balancers,
    // reflection for grpcurl (it describes the API, which is no secret).
    let auth = BearerAuth::new(&app.config.grpc_bearer_tokens, app.metrics.clone());
    let grpc = builder
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(app.config.max_concurrent_streams)
        // Connections age like streams, so new calls too land on new replicas after a deploy.
        // The grace outlasts a whole stream life (+10 %): a stream opened just before the
        // connection stops taking new ones still ends on its own terms, with its heartbeat.
        .max_connection_age(app.config.max_stream_age)
        .max_connection_age_grace(app.config.max_stream_age * 11 / 10 + KEEPALIVE_TIMEOUT)
        // Unary calls; a watch stream's handler returns at once and is not cut by this.
        .timeout(app.config.request_timeout)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            RefreshServiceServer::new(Service::new(app.clone()))
                .max_decoding_message_size(crate::grpc::MAX_REQUEST_BYTES),
            auth,
        ))
        .serve_with_incoming_shutdown(
            grpc_incoming(listeners.grpc),
            stop.clone().cancelled_owned(),
        );
    let http = serve_http(&app, listeners.http, stop.clone());
    let mut servers = tokio::spawn(async move {
        tokio::try_join!(async { grpc.await.context("gRPC server failed") }, async {
            http.await.context("HTTP server failed")
        },)
    });
    let background = crate::tasks::spawn(app.clone(), stop.clone());
    let storage_health = tokio::spawn(report_storage_health(
        app.clone(),
        health.clone(),
        stop.clone(),
    ));

    // Storage that can no longer commit makes every webhook a 500 and every refresh an
    // INTERNAL: rather than sit half-dead behind probes that say it is fine, the server
    // stops (serve then exits non-zero, as it does after a failed fsync) so its supervisor
    // restarts it on what the disk holds. Nothing acknowledged is lost: an answer waits for
    // its commit to be durable.
    let storage_failed = tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = app.store.failed() => true,
        result = &mut servers => {
            stop.cancel();
            result??;
            anyhow::bail!("the servers stopped on their own");
        }
    };

    storage_health.abort();
    let grace_ends = tokio::time::Instant::now() + app.config.shutdown_grace;
    if storage_failed {
        tracing::error!(
            "storage has stopped and can no longer commit; the server stops so a restart \
             recovers from what the disk holds"
        );
    } else {
        tracing::info!(grace = ?app.config.shutdown_grace, "shutting down");
    }
    // Draining: readiness fails and health says NOT_SERVING (Check and Watch), while both
    // ports keep answering for --drain-delay so load balancers see it and move traffic away.
    app.draining.store(true, Ordering::Release);
    health
        .set_not_serving::<RefreshServiceServer<Service>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    if !storage_failed {
        // Dead storage serves nobody: no point holding traffic for the drain.
        tokio::time::sleep(app.config.drain_delay).await;
    }
    // Open watch streams end with UNAVAILABLE and their cursor, so clients resume elsewhere;
    // health Watch streams end too, or they would hold the server open until the grace ends.
    app.hub.close();
    health
        .clear_service_status(<RefreshServiceServer<Service> as tonic::server::NamedService>::NAME)
        .await;
    health.clear_service_status("").await;
    stop.cancel();
    match tokio::time::timeout_at(grace_ends, &mut servers).await {
        Ok(result) => {
            result??;
        }
        Err(_) => {
            tracing::warn!("shutdown grace expired; closing the remaining connections");
            servers.abort();
        }
    }
    // The background work was told to stop with the servers; it gets what is left of the
    // grace, not a moment more.
    background.stop_by(grace_ends).await;
    // Everything acknowledged is already committed; this only flushes queued work.
    app.store.close().await;
    if storage_failed {
        anyhow::bail!("storage stopped and can no longer commit (the log above says why)");
    }
    tracing::info!("stopped");
    Ok(())
}

/// How often gRPC health re-checks that the database answers.
const STORAGE_CHECK: Duration = Duration::from_secs(1);

/// Keeps gRPC health (Check and Watch, the service's and the server's) in step with the
/// database: NOT_SERVING while it does not answer (PostgreSQL down or cut off), SERVING again
/// when it does, so load balancers route around a replica that cannot store anything.
/// `/readyz` asks the database itself on each probe.
async fn report_storage_health(
    app: Arc<App>,
    health: tonic_health::server::HealthReporter,
    stop: CancellationToken,
) {
    let mut serving = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(STORAGE_CHECK) => {}
        }
        let up = app.store.ping().await;
        if up == serving || app.draining.load(Ordering::Acquire) {
            continue;
        }
        serving = up;
        let status = if up {
            tracing::info!("the database answers again: serving");
            tonic_health::ServingStatus::Serving
        } else {
            tracing::warn!("the database does not answer: not serving until it does");
            tonic_health::ServingStatus::NotServing
        };
        health
            .set_service_status(
                <RefreshServiceServer<Service> as tonic::server::NamedService>::NAME,
                status,
            )
            .await;
        health.set_service_status("", status).await;
    }
}

#[cfg(test)]
mod tests {
    use tokio_stream::StreamExt;

    use super::*;

    /// Without it every watch stream's results wait on the watcher's delayed ACKs.
    #[tokio::test]
    async fn grpc_connections_are_accepted_with_nagle_off() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = grpc_incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap());
    }
}
