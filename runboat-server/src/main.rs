//! `runboat-server` binary: parses the options and runs the library. Every
//! failure ends with a one-line message (the whole cause chain) and exit
//! status 1, never a panic.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = runboat_server::Config::parse();
    match runboat_server::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "runboat-server failed");
            eprintln!("runboat-server: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
