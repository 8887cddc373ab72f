use std::io::IsTerminal;
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
        // Colour for people at a terminal; plain text for `docker logs` and log shippers.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_env("OBGATE_LOG")
                .or_else(|_| EnvFilter::try_from_default_env())
                .unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .init();
    match obgate::cli::run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("obgate: {}", obgate::cli::report(&e));
            ExitCode::FAILURE
        }
    }
}
