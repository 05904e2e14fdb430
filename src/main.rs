//! The `fintoc-refresh` binary: parse the command line and hand over to the subcommand.

use std::process::ExitCode;

use clap::Parser;
use fintoc_refresh::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            eprintln!("{}", one_line(&e.render().to_string()));
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => cli::serve::run(*args).await,
            Command::Simulate(args) => cli::simulate::run(args).await,
            Command::Refresh(args) => cli::client::refresh(args).await,
            Command::Watch(args) => cli::client::watch(args).await,
            Command::Link(args) => cli::client::link(args).await,
            Command::CopyStore(args) => cli::copy_store::run(args).await,
        }
    })
}

/// clap's message as one line: the problem (and, for missing arguments, which ones), without
/// the usage block and the "--help" hint that follow it.
fn one_line(rendered: &str) -> String {
    let text: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .collect();
    if text.is_empty() {
        "error: invalid command line".into()
    } else {
        text.join(" ")
    }
}
