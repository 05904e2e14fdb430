//! `fintoc-refresh serve`: bind, open the store, announce, serve until SIGTERM/SIGINT. With
//! `--simulate` the embedded Fintoc simulator is started on its own port first, with fresh
//! secrets, and the service is pointed at it (its webhooks go to the intake over HTTPS when
//! that has TLS). The store is open (and so this process holds the database's lock) before
//! the listening line: a second process on the same SQLite file exits with one line instead.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{init_tracing_with, shutdown_on_signal};
use crate::app::App;
use crate::config::ServeArgs;
use crate::secret::Secret;
use crate::server::{self, Listeners};
use crate::simulator::{SimConfig, Simulator};
use crate::telemetry::Telemetry;

/// How long a graceful exit waits for the last spans to reach the collector.
const TRACE_FLUSH: Duration = Duration::from_secs(5);

pub async fn run(args: ServeArgs) -> ExitCode {
    // Inside the runtime: the trace exporter's batch task runs on it (see `telemetry`).
    let telemetry = match Telemetry::from_env() {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing_with(&args.log_format, telemetry.as_ref());
    let code = serve(args).await;
    if let Some(telemetry) = telemetry {
        telemetry.shutdown(TRACE_FLUSH).await;
    }
    code
}

async fn serve(args: ServeArgs) -> ExitCode {
    let (grpc_addr, http_addr, simulate) = (args.grpc_addr, args.http_addr, args.simulate);
    let mut config = match args.into_config(|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(why) = crate::store::check_url(&config.database_url) {
        eprintln!("error: --database-url (DATABASE_URL) is not a usable PostgreSQL URL: {why}");
        return ExitCode::from(2);
    }
    if let Some(direct) = &config.database_direct_url
        && let Err(why) = crate::store::check_url(direct)
    {
        eprintln!(
            "error: --database-direct-url (DATABASE_DIRECT_URL) is not a usable PostgreSQL URL: {why}"
        );
        return ExitCode::from(2);
    }
    let listeners = match bind(grpc_addr, http_addr).await {
        Ok(l) => l,
        Err(line) => {
            eprintln!("error: {line}");
            return ExitCode::from(1);
        }
    };
    let (grpc, http) = (local(&listeners.grpc), local(&listeners.http));
    let shutdown = shutdown_on_signal();
    let mut demo = Vec::new();
    if simulate {
        let https = config.http_tls.is_some();
        match start_simulator(http, https, shutdown.clone()).await {
            Ok((sim, key, secret)) => {
                config.fintoc_api_url = sim.url();
                config.fintoc_secret_key = key;
                config.webhook_secrets = vec![secret];
                demo = sim.add_demo_links();
                tracing::info!(url = %sim.url(), "Fintoc simulator running");
            }
            Err(e) => {
                eprintln!("error: cannot start the Fintoc simulator: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if config.link_token_keys_demo {
        tracing::warn!(
            "movements are on with a demo key generated for this run (LINK_TOKEN_KEYS is not \
             set): tokens it seals cannot be opened after a restart; set LINK_TOKEN_KEYS for \
             real use"
        );
    }
    let app = match App::start(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    // The contract's one line on stdout (then, with --simulate, the demo tokens).
    println!("listening grpc={grpc} http={http}");
    for (name, link) in &demo {
        println!("demo {name} link_token={}", link.token);
    }
    match server::run(app, listeners, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn bind(grpc: SocketAddr, http: SocketAddr) -> Result<Listeners, String> {
    let grpc = TcpListener::bind(grpc)
        .await
        .map_err(|e| format!("cannot listen on --grpc-addr {grpc}: {e}"))?;
    let http = TcpListener::bind(http)
        .await
        .map_err(|e| format!("cannot listen on --http-addr {http}: {e}"))?;
    Ok(Listeners { grpc, http })
}

fn local(listener: &TcpListener) -> SocketAddr {
    listener
        .local_addr()
        .expect("a bound listener has an address")
}

async fn start_simulator(
    http: SocketAddr,
    https: bool,
    shutdown: CancellationToken,
) -> std::io::Result<(Simulator, Secret, Secret)> {
    let key = format!("sk_test_{}", crate::simulator::random_suffix());
    let secret = format!("whsec_{}", crate::simulator::random_suffix());
    // Deliveries go to our own intake; a wildcard bind is reached through loopback.
    let host = if http.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        http.ip().to_string()
    };
    let scheme = if https { "https" } else { "http" };
    let target = format!("{scheme}://{host}:{}/webhooks/fintoc", http.port());
    let mut config = SimConfig::new(key.clone());
    config.webhooks = vec![(target, secret.clone())];
    config.insecure_webhook_tls = https;
    // Fintoc also refreshes Links on its own schedule: a minute here, so a registered demo
    // Link shows its movements arriving without anyone asking.
    config.scheduled_every = Some(std::time::Duration::from_secs(60));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let sim = Simulator::start(listener, config, shutdown)?;
    Ok((sim, Secret::new(key), Secret::new(secret)))
}
