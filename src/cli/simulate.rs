//! `fintoc-refresh simulate`: the Fintoc simulator on its own, for other teams' integration
//! tests. It serves the demo Links and delivers signed events to every `--webhook-url`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use tokio::net::TcpListener;

use super::{init_tracing, shutdown_on_signal};
use crate::config::parse_duration;
use crate::simulator::{SimConfig, Simulator};

#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Address of the simulated Fintoc API.
    #[arg(long, env = "SIM_ADDR", default_value = "127.0.0.1:8090")]
    pub addr: SocketAddr,
    /// The secret key clients must send in `Authorization`.
    #[arg(
        long,
        env = "FINTOC_SECRET_KEY",
        default_value = "sk_test_simulator",
        hide_env_values = true
    )]
    pub api_key: String,
    /// Where to deliver signed account events (repeatable).
    #[arg(long = "webhook-url", env = "SIM_WEBHOOK_URL", value_delimiter = ',')]
    pub webhook_urls: Vec<String>,
    /// The secret deliveries are signed with.
    #[arg(
        long,
        env = "FINTOC_WEBHOOK_SECRET",
        default_value = "whsec_simulator",
        hide_env_values = true
    )]
    pub webhook_secret: String,
    /// Time from creating a refresh intent to its account events (Fintoc: 1–3 minutes).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub delivery_delay: Duration,
    /// Time the simulated user takes to complete MFA.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub mfa_delay: Duration,
    /// First retry delay for a failed delivery, doubled each time (Fintoc: 3s).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub retry_base: Duration,
    /// Retries per delivery (Fintoc: 17).
    #[arg(long, default_value_t = 17)]
    pub max_retries: u32,
    /// Deliver every event twice (the copies after the first round).
    #[arg(long)]
    pub duplicate: bool,
    /// Deliver each refresh's events one at a time, in reverse order.
    #[arg(long)]
    pub reorder: bool,
    /// Log format on stderr: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

pub async fn run(args: SimulateArgs) -> ExitCode {
    init_tracing(&args.log_format);
    let listener = match TcpListener::bind(args.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on --addr {}: {e}", args.addr);
            return ExitCode::from(1);
        }
    };
    let mut config = SimConfig::new(args.api_key);
    config.webhooks = args
        .webhook_urls
        .into_iter()
        .map(|url| (url, args.webhook_secret.clone()))
        .collect();
    config.delivery_delay = args.delivery_delay;
    config.mfa_delay = args.mfa_delay;
    config.retry_base = args.retry_base;
    config.max_retries = args.max_retries;
    config.duplicate = args.duplicate;
    config.reorder = args.reorder;
    let shutdown = shutdown_on_signal();
    let sim = match Simulator::start(listener, config, shutdown.clone()) {
        Ok(sim) => sim,
        Err(e) => {
            eprintln!("error: cannot start the simulator: {e}");
            return ExitCode::from(1);
        }
    };
    println!("listening http={}", sim.addr());
    for (name, link) in sim.add_demo_links() {
        println!("demo {name} link_token={}", link.token);
    }
    shutdown.cancelled().await;
    ExitCode::SUCCESS
}
