//! `runboat-server` binary: parses the options and runs the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = runboat_server::Config::parse();
    match runboat_server::run(config).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "runboat-server failed");
            eprintln!("runboat-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
