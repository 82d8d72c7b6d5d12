//! What the `runboat-server` binary does: parse options, set up logging,
//! load the settings, start the controller and serve until SIGTERM/SIGINT.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use clap::{Parser, ValueEnum};
use runboat_core::Settings;
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::{AppState, app};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// Command line and environment options of `runboat-server`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "runboat-server",
    version,
    about = "runboat: preview instances of GitHub branches and pull requests"
)]
pub struct Config {
    /// Settings file (TOML); `RUNBOAT_*` environment variables override it
    /// key by key.
    #[arg(long = "config", env = "RUNBOAT_SERVER_CONFIG", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "RUNBOAT_SERVER_LISTEN", default_value = "0.0.0.0:8000")]
    pub listen: SocketAddr,
    /// Log format.
    #[arg(long, env = "RUNBOAT_SERVER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Log level or filter directives (e.g. `info`, `runboat=debug,info`).
    #[arg(long, env = "RUNBOAT_SERVER_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Also require the admin credentials for start, stop and reset.
    #[arg(long, env = "RUNBOAT_SERVER_ADMIN_FOR_ACTIONS")]
    pub admin_for_actions: bool,
    /// Run a self-contained demo (simulated cluster, generated webhooks).
    #[arg(long)]
    pub demo: bool,
}

/// Installs the global tracing subscriber.
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // An error only means a subscriber is already installed (tests).
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Loads the settings from the optional file, then the environment.
pub fn load_settings(config_file: Option<&PathBuf>) -> Result<Settings> {
    let text =
        match config_file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|source| {
                Error::SettingsFile { path: path.display().to_string(), source }
            })?),
            None => None,
        };
    Settings::load(text.as_deref(), std::env::vars()).map_err(Error::Settings)
}

/// Serves `state` on `listener` until `shutdown` completes, then ends the
/// event streams and waits for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener.local_addr().map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let router: Router = app(state.clone());
    let streams = state.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: closing event streams");
            streams.shutdown();
        })
        .await
        .map_err(|source| Error::Serve { addr, source })
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

/// The binary's whole job.
pub async fn run(config: Config) -> Result<()> {
    init_logging(config.log_format, &config.log_level);
    if config.demo {
        return Err(Error::NotAvailable(
            "--demo is not available yet: it needs kubesim and the Kubernetes cluster \
             implementation (runboat-k8s), which are not part of this build"
                .to_owned(),
        ));
    }
    let settings = load_settings(config.config_file.as_ref())?;
    tracing::info!(namespace = %settings.build_namespace, "settings loaded");
    Err(Error::NotAvailable(
        "runboat-server cannot drive a Kubernetes cluster yet: the cluster implementation \
         (runboat-k8s KubeCluster) is not available in this build"
            .to_owned(),
    ))
}
