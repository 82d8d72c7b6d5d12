//! What the `runboat-server` binary does: parse options, set up logging,
//! load and check the settings, connect the controller to Kubernetes
//! (runboat-k8s's `KubeCluster`) and serve until SIGTERM/SIGINT.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use clap::{Parser, ValueEnum};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use runboat_core::forge::{Forge, NoForge};
use runboat_core::{Cluster, Controller, ControllerConfig, Secret, Settings};
use runboat_github::{ClientConfig, GitHubClient, GitHubForge, GitHubToken};
use runboat_k8s::KubeCluster;
use tokio::net::TcpListener;

use crate::error::{Error, Result};
use crate::limits::{Limits, PeerAddr, Refusal, Slots};
use crate::{AppState, GitHubLookup, ServerOptions, app};

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
    /// INSECURE: start without a webhook secret, accepting unsigned
    /// deliveries (anyone who reaches the server can deploy and undeploy).
    /// For local experiments only.
    #[arg(long, env = "RUNBOAT_SERVER_ALLOW_UNSIGNED_WEBHOOKS")]
    pub allow_unsigned_webhooks: bool,
    #[command(flatten)]
    pub limits: LimitArgs,
    /// Run a self-contained demo: an in-process simulated Kubernetes API
    /// server (kubesim) and a generator of signed webhooks (needs the
    /// `demo` feature). Ignores the settings.
    #[arg(long)]
    pub demo: bool,
}

/// Timeouts and caps of the public surface (see SECURITY.md).
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Seconds a client has to send a request head; also the idle
    /// keep-alive time of a connection.
    #[arg(long, env = "RUNBOAT_SERVER_HEADER_READ_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout: u64,
    /// Seconds a client has to send a request body.
    #[arg(long, env = "RUNBOAT_SERVER_BODY_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_timeout: u64,
    /// Seconds a handler has to start its answer (503 after).
    #[arg(long, env = "RUNBOAT_SERVER_REQUEST_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout: u64,
    /// Open connections at most (more are answered 503 and closed).
    #[arg(long, env = "RUNBOAT_SERVER_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Open connections at most from one client address (429 beyond).
    #[arg(long, env = "RUNBOAT_SERVER_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 128)]
    pub max_connections_per_client: usize,
    /// Open build event streams at most (503 beyond).
    #[arg(long, env = "RUNBOAT_SERVER_MAX_EVENT_STREAMS", default_value_t = 512)]
    pub max_event_streams: usize,
    /// Open build event streams at most per client (429 beyond).
    #[arg(long, env = "RUNBOAT_SERVER_MAX_EVENT_STREAMS_PER_CLIENT", default_value_t = 16)]
    pub max_event_streams_per_client: usize,
    /// A header set by a trusted reverse proxy whose last address is the
    /// client's (e.g. `X-Forwarded-For`), for the per-client event stream
    /// caps and rate limits. Off by default: only set it behind a proxy
    /// that overwrites or appends to it.
    #[arg(long, env = "RUNBOAT_SERVER_CLIENT_IP_HEADER")]
    pub client_ip_header: Option<axum::http::HeaderName>,
    /// Seconds within which a webhook is always answered (GitHub gives up
    /// after 10).
    #[arg(long, env = "RUNBOAT_SERVER_WEBHOOK_BUDGET", default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_budget: u64,
    /// Start, stop and reset requests per client per minute (0: no limit).
    #[arg(long, env = "RUNBOAT_SERVER_ACTIONS_PER_CLIENT_PER_MINUTE", default_value_t = 30)]
    pub actions_per_client_per_minute: u32,
    /// Start, stop and reset requests per build per minute (0: no limit).
    #[arg(long, env = "RUNBOAT_SERVER_ACTIONS_PER_BUILD_PER_MINUTE", default_value_t = 10)]
    pub actions_per_build_per_minute: u32,
    /// Webhook delivery IDs remembered, to answer a replay with a no-op.
    #[arg(long, env = "RUNBOAT_SERVER_REMEMBERED_DELIVERIES", default_value_t = 10_000)]
    pub remembered_deliveries: usize,
}

impl LimitArgs {
    /// The limits these options say.
    pub fn limits(&self) -> Limits {
        Limits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout),
            body_timeout: Duration::from_secs(self.body_timeout),
            request_timeout: Duration::from_secs(self.request_timeout),
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            max_event_streams: self.max_event_streams,
            max_event_streams_per_client: self.max_event_streams_per_client,
            client_ip_header: self.client_ip_header.clone(),
            webhook_budget: Duration::from_secs(self.webhook_budget),
            actions_per_client_per_minute: self.actions_per_client_per_minute,
            actions_per_build_per_minute: self.actions_per_build_per_minute,
            remembered_deliveries: self.remembered_deliveries,
        }
    }
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
    let unknown: Vec<String> = runboat_core::settings::unknown_env_keys(std::env::vars())
        .into_iter()
        .filter(|k| !k.to_ascii_uppercase().starts_with("RUNBOAT_SERVER_"))
        .collect();
    if !unknown.is_empty() {
        tracing::warn!(variables = ?unknown, "ignoring unknown RUNBOAT_* environment variables");
    }
    Settings::load(text.as_deref(), std::env::vars()).map_err(Error::Settings)
}

/// Serves `state` on `listener` until `shutdown` completes, then ends the
/// event streams and waits for in-flight requests.
///
/// An own accept loop over hyper's HTTP/1 connection builder, for what
/// `axum::serve` does not bound: the time to send a request head (also the
/// idle keep-alive time), the time to send a body, and the number of open
/// connections, globally and per client address. A connection over a cap is
/// answered at once with a fixed 503 (global) or 429 (per client) and
/// closed, without reading it.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let limits = state.options().limits.clone();
    let router: Router = app(state.clone());
    let service = tower::ServiceBuilder::new()
        .layer(tower_http::timeout::RequestBodyDeadlineLayer::new(limits.body_timeout))
        .service(router);
    let connections = Slots::new(limits.max_connections, limits.max_connections_per_client);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors (or a connection reset before it was
                // accepted): wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let slot = match connections.acquire(Some(peer.ip())) {
            Ok(slot) => slot,
            Err(refusal) => {
                refuse(&stream, refusal);
                continue;
            }
        };
        let service = service.clone();
        let handler = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(PeerAddr(peer));
            tower::ServiceExt::oneshot(service.clone(), request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), handler));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!("shutting down: closing event streams");
    state.shutdown();
    graceful.shutdown().await;
    Ok(())
}

/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Answers a connection over a cap without reading it: one non-blocking
/// write of a fixed answer (a fresh socket's send buffer always has room),
/// then the socket is closed.
fn refuse(stream: &tokio::net::TcpStream, refusal: Refusal) {
    let answer: &[u8] = match refusal {
        Refusal::Full => {
            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Type: application/json\r\nContent-Length: 38\r\nConnection: close\r\n\r\n{\"detail\":\"too many open connections\"}"
        }
        Refusal::ClientFull => {
            b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 5\r\nContent-Type: application/json\r\nContent-Length: 47\r\nConnection: close\r\n\r\n{\"detail\":\"too many open connections from you\"}"
        }
    };
    let _ = stream.try_write(answer);
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

/// Builds the GitHub client from the settings' token. `None` (with a
/// warning) when it cannot be built: triggers then answer 503 and no commit
/// status is posted, but everything else works.
pub fn github_client(settings: &Settings) -> Option<GitHubClient> {
    let token = GitHubToken::from_config(settings.github_token.as_ref().map(Secret::expose));
    match GitHubClient::new(ClientConfig { token, ..ClientConfig::default() }) {
        Ok(client) => Some(client),
        Err(e) => {
            tracing::warn!(error = %crate::error::chain(&e), "no GitHub client: triggers and commit statuses disabled");
            None
        }
    }
}

/// Starts the controller on `cluster` and serves the HTTP interface on
/// `listener` until `shutdown` completes. Then: event streams end at once,
/// in-flight requests get [`SHUTDOWN_GRACE`] to finish (then are
/// abandoned), and the controller stops (running cluster calls are
/// abandoned; everything is idempotent and resumes from the cluster's state
/// on the next start).
pub async fn run_with_cluster(
    settings: Settings,
    cluster: Arc<dyn Cluster>,
    options: ServerOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let settings = Arc::new(settings);
    let github = github_client(&settings);
    // The controller posts commit statuses unless disabled and deployment
    // updates only when enabled; both need a token to reach GitHub.
    let wanted = !settings.disable_commit_statuses || settings.github_deployments;
    let forge: Arc<dyn Forge> = match &github {
        Some(client) if wanted && settings.github_token.is_some() => {
            if settings.disable_commit_statuses {
                tracing::info!("commit statuses are not posted (disabled)");
            }
            if settings.github_deployments {
                tracing::info!("GitHub deployments are on");
            }
            Arc::new(GitHubForge::new(client.clone()))
        }
        _ => {
            tracing::info!(
                "commit statuses and deployments are not posted (disabled, or no GitHub token)"
            );
            Arc::new(NoForge)
        }
    };
    // Unset and empty both mean "no secret".
    let secret = settings.github_webhook_secret.as_ref().map(Secret::expose);
    if runboat_github::WebhookSecret::from_config(secret).is_none() {
        if !options.allow_unsigned_webhooks {
            return Err(Error::NoWebhookSecret);
        }
        tracing::warn!(
            "INSECURE: no webhook secret configured and unsigned webhooks allowed: anyone who \
             reaches this server can deploy and undeploy builds"
        );
    }
    let handle = Controller::spawn(cluster, forge, settings.clone(), ControllerConfig::default());
    let lookup = github.map(|c| Arc::new(c) as Arc<dyn GitHubLookup>);
    let state = AppState::new(handle.clone(), lookup, options);
    // The process ends with an error if the controller loop ends by itself:
    // serving a board that no longer changes would hide it.
    let (dead_tx, dead_rx) = tokio::sync::oneshot::channel::<()>();
    let supervised = handle.clone();
    let supervisor = tokio::spawn(async move {
        controller_ended(&supervised).await;
        let _ = dead_tx.send(());
    });
    let result = serve_until(listener, state, async move {
        tokio::select! {
            () = shutdown => {}
            _ = dead_rx => {}
        }
    })
    .await;
    // The loop is only shut down below: not running now means it died.
    let died = !handle.is_running();
    supervisor.abort();
    if died {
        tracing::error!("the controller loop ended: exiting");
        return Err(Error::ControllerStopped);
    }
    tracing::info!("stopping the controller");
    if tokio::time::timeout(SHUTDOWN_GRACE, handle.shutdown()).await.is_err() {
        tracing::warn!("the controller did not stop in time; abandoning it");
    }
    result
}

/// Completes when the controller loop has ended (checked every
/// [`SUPERVISION_INTERVAL`]).
pub async fn controller_ended(handle: &runboat_core::ControllerHandle) {
    let mut tick = tokio::time::interval(SUPERVISION_INTERVAL);
    while handle.is_running() {
        tick.tick().await;
    }
}

/// How often the controller loop is checked.
pub const SUPERVISION_INTERVAL: Duration = Duration::from_millis(500);

/// Time given to in-flight requests after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// [`serve`], but once `shutdown` completes, waits at most
/// [`SHUTDOWN_GRACE`] for in-flight requests.
pub async fn serve_until(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async move {
        let _ = stop_rx.await;
    }));
    let mut server = std::pin::pin!(server);
    tokio::select! {
        // The server ended on its own (an error).
        r = &mut server => return joined(r),
        () = shutdown => {}
    }
    let _ = stop_tx.send(());
    match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
        Ok(r) => joined(r),
        Err(_) => {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}: abandoning them");
            server.abort();
            Ok(())
        }
    }
}

fn joined(r: std::result::Result<Result<()>, tokio::task::JoinError>) -> Result<()> {
    r.unwrap_or_else(|e| Err(Error::ServerTask(format!("the server task failed: {e}"))))
}

/// The binary's whole job: the demo, or production on the Kubernetes
/// cluster of kube's standard configuration (`KUBECONFIG`, else
/// `~/.kube/config`, else the in-cluster service account).
///
/// Every startup failure is an error naming what to fix (the setting, the
/// file, the missing program), never a panic.
pub async fn run(config: Config) -> anyhow::Result<()> {
    init_logging(config.log_format, &config.log_level);
    let options = ServerOptions {
        admin_for_actions: config.admin_for_actions,
        allow_unsigned_webhooks: config.allow_unsigned_webhooks,
        limits: config.limits.limits(),
        ..Default::default()
    };
    if config.demo {
        return crate::demo::run(config.listen, options).await;
    }
    let settings = load_settings(config.config_file.as_ref())?;
    tracing::info!(namespace = %settings.build_namespace, "settings loaded");
    let cluster = KubeCluster::from_settings(Arc::new(settings.clone()))
        .await
        .context("cannot set up the KubeCluster")?;
    let listener = bind(config.listen).await?;
    log_listening(&listener);
    run_with_cluster(settings, Arc::new(cluster), options, listener, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Logs the bound address (`message: "listening"`, field `addr`): with
/// `--listen …:0` it is how a caller learns the port.
pub fn log_listening(listener: &TcpListener) {
    match listener.local_addr() {
        Ok(addr) => tracing::info!(%addr, "listening"),
        Err(e) => tracing::warn!(error = %e, "listening on an unknown address"),
    }
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|source| Error::Serve { addr: addr.to_string(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_flags_set_the_limits() {
        use clap::CommandFactory;
        Config::command().debug_assert();
        let config = Config::try_parse_from([
            "runboat-server",
            "--header-read-timeout",
            "3",
            "--max-connections-per-client",
            "7",
            "--client-ip-header",
            "X-Forwarded-For",
            "--actions-per-build-per-minute",
            "0",
        ])
        .expect("valid flags");
        let limits = config.limits.limits();
        assert_eq!(limits.header_read_timeout, Duration::from_secs(3));
        assert_eq!(limits.max_connections_per_client, 7);
        assert_eq!(limits.client_ip_header.as_ref().map(|h| h.as_str()), Some("x-forwarded-for"));
        assert_eq!(limits.actions_per_build_per_minute, 0);
        assert_eq!(limits.webhook_budget, Duration::from_secs(8));
        assert!(!config.allow_unsigned_webhooks);
        let zero = Config::try_parse_from(["runboat-server", "--header-read-timeout", "0"]);
        assert!(zero.is_err());
    }
}
