use std::process::ExitCode;

use clap::Parser;
use obgate::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.command {
        Command::Serve => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .init();
    match obgate::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("obgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
