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
use runboat_k8s::{KubeCluster, LeaderElector, LeaseConfig};
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
    #[command(flatten)]
    pub leader: LeaderArgs,
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
    /// Deploys, undeploys and actions waiting in the controller at most
    /// (e.g. while the API server is unreachable); beyond, they are refused
    /// at once with 503 and `Retry-After`.
    #[arg(long, env = "RUNBOAT_SERVER_MAX_QUEUED_REQUESTS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_queued_requests: u64,
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
            max_queued_requests: usize::try_from(self.max_queued_requests).unwrap_or(usize::MAX),
        }
    }
}

/// Leader election among several replicas (see ARCHITECTURE.md).
#[derive(Debug, Clone, clap::Args)]
pub struct LeaderArgs {
    /// Elect one leader among the replicas on a Lease in the build
    /// namespace: only the leader makes scheduling decisions, every replica
    /// serves the API, the UI and webhooks. Off: this process always leads
    /// (run a single replica).
    #[arg(long, env = "RUNBOAT_SERVER_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, env = "RUNBOAT_SERVER_LEASE_NAME", default_value = "runboat-leader")]
    pub lease_name: String,
    /// This replica's identity in the Lease [default: the pod name from the
    /// downward API, else the hostname].
    #[arg(long, env = "POD_NAME")]
    pub lease_identity: Option<String>,
    /// Seconds a lease whose record does not change stays held (decimals
    /// allowed).
    #[arg(long, env = "RUNBOAT_SERVER_LEASE_DURATION", default_value = "15", value_parser = seconds)]
    pub lease_duration: Duration,
    /// Seconds a leader keeps leading without renewing (less than the lease
    /// duration: the gap is the fencing margin).
    #[arg(long, env = "RUNBOAT_SERVER_LEASE_RENEW_DEADLINE", default_value = "10", value_parser = seconds)]
    pub lease_renew_deadline: Duration,
    /// Seconds between attempts to acquire or renew the lease.
    #[arg(long, env = "RUNBOAT_SERVER_LEASE_RETRY_PERIOD", default_value = "2", value_parser = seconds)]
    pub lease_retry_period: Duration,
}

/// Parses a positive number of seconds, at most an hour.
fn seconds(value: &str) -> std::result::Result<Duration, String> {
    let s: f64 =
        value.trim().parse().map_err(|_| format!("{value:?} is not a number of seconds"))?;
    if !(s > 0.0 && s <= 3600.0) {
        return Err(format!("{value} is not within (0, 3600] seconds"));
    }
    Ok(Duration::from_secs_f64(s))
}

impl LeaderArgs {
    /// The election's settings, `None` when it is off. `hostname` gives
    /// the identity when none is set.
    pub fn lease_config(
        &self,
        hostname: impl FnOnce() -> Option<String>,
    ) -> Result<Option<LeaseConfig>> {
        if !self.leader_election {
            return Ok(None);
        }
        let invalid = |detail: String| Error::LeaderElection(detail);
        if !is_dns_subdomain(&self.lease_name) {
            return Err(invalid(format!(
                "--lease-name (RUNBOAT_SERVER_LEASE_NAME) {:?} is not a valid object name \
                 (lower case letters, digits, '-' and '.', at most 253)",
                self.lease_name
            )));
        }
        let identity = match self.lease_identity.as_deref().map(str::trim) {
            Some(id) if !id.is_empty() => id.to_owned(),
            _ => hostname().ok_or_else(|| {
                invalid(
                    "no identity: set --lease-identity or POD_NAME (the downward API's \
                     metadata.name); the hostname is unknown"
                        .to_owned(),
                )
            })?,
        };
        if identity.len() > 253 || identity.chars().any(char::is_control) {
            return Err(invalid(
                "the identity (--lease-identity, POD_NAME or the hostname) must be at most 253 \
                 characters without control characters"
                    .to_owned(),
            ));
        }
        let config = LeaseConfig {
            name: self.lease_name.clone(),
            identity,
            lease_duration: self.lease_duration,
            renew_deadline: self.lease_renew_deadline,
            retry_period: self.lease_retry_period,
        };
        config.validate().map_err(|e| {
            invalid(format!("{e} (--lease-retry-period, --lease-renew-deadline, --lease-duration)"))
        })?;
        Ok(Some(config))
    }
}

/// A Kubernetes object name (RFC 1123 subdomain).
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// The hostname: `HOSTNAME`, else the kernel's.
pub fn hostname() -> Option<String> {
    let from_env = std::env::var("HOSTNAME").ok();
    let from_kernel = || std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
    let from_etc = || std::fs::read_to_string("/etc/hostname").ok();
    [from_env, from_kernel(), from_etc()]
        .into_iter()
        .flatten()
        .map(|h| h.trim().to_owned())
        .find(|h| !h.is_empty())
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
/// on the next start). Always the leader: see
/// [`run_with_cluster_elected`].
pub async fn run_with_cluster(
    settings: Settings,
    cluster: Arc<dyn Cluster>,
    options: ServerOptions,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    run_with_cluster_elected(settings, cluster, None, options, listener, shutdown).await
}

/// [`run_with_cluster`], the controller following `elector` (when given):
/// it makes scheduling decisions only while this replica leads. On
/// `shutdown` the lease is released at once, while requests drain, so
/// another replica takes over within its retry period. The process ends
/// with an error if the election loop ends by itself.
pub async fn run_with_cluster_elected(
    settings: Settings,
    cluster: Arc<dyn Cluster>,
    elector: Option<LeaderElector>,
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
    let config = ControllerConfig {
        max_queued_requests: options.limits.max_queued_requests,
        ..ControllerConfig::default()
    };
    let leadership = elector.as_ref().map(LeaderElector::leadership);
    let handle = match &elector {
        Some(e) => Controller::spawn_with_leadership(
            cluster,
            forge,
            settings.clone(),
            config,
            e.subscribe(),
        ),
        None => Controller::spawn(cluster, forge, settings.clone(), config),
    };
    let lookup = github.map(|c| Arc::new(c) as Arc<dyn GitHubLookup>);
    let state = AppState::with_leadership(handle.clone(), lookup, options, leadership.clone());
    // Released on shutdown (or when this function ends early): the lease
    // is handed over while requests drain.
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let releaser = elector.map(|e| {
        tokio::spawn(async move {
            let _ = release_rx.await;
            e.release().await;
        })
    });
    // The process ends with an error if the controller loop or the
    // election ends by itself: serving a board that no longer changes (or
    // a replica that can never lead) would hide it.
    let (dead_tx, dead_rx) = tokio::sync::oneshot::channel::<()>();
    let supervised = handle.clone();
    let supervised_election = leadership.clone();
    let supervisor = tokio::spawn(async move {
        tokio::select! {
            () = controller_ended(&supervised) => {}
            () = election_ended(supervised_election.as_ref()) => {}
        }
        let _ = dead_tx.send(());
    });
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped_by_us = stopping.clone();
    let result = serve_until(listener, state, async move {
        tokio::select! {
            () = shutdown => {
                stopping.store(true, std::sync::atomic::Ordering::SeqCst);
                if release_tx.send(()).is_ok() {
                    tracing::info!("shutting down: releasing the leadership");
                }
            }
            _ = dead_rx => {}
        }
    })
    .await;
    supervisor.abort();
    // The loops are only shut down below (the election on a shutdown
    // signal): not running now means they died.
    let died = !handle.is_running();
    let election_died = !stopped_by_us.load(std::sync::atomic::Ordering::SeqCst)
        && leadership.as_ref().is_some_and(|l| !l.is_running());
    if let Some(releaser) = releaser
        && tokio::time::timeout(SHUTDOWN_GRACE, releaser).await.is_err()
    {
        tracing::warn!("the lease was not released in time");
    }
    if died {
        tracing::error!("the controller loop ended: exiting");
        return Err(Error::ControllerStopped);
    }
    if election_died {
        tracing::error!("the leader election ended: exiting");
        return Err(Error::ElectionStopped);
    }
    tracing::info!("stopping the controller");
    if tokio::time::timeout(SHUTDOWN_GRACE, handle.shutdown()).await.is_err() {
        tracing::warn!("the controller did not stop in time; abandoning it");
    }
    result
}

/// Completes when the election loop has ended (checked every
/// [`SUPERVISION_INTERVAL`]); never without an election.
async fn election_ended(leadership: Option<&runboat_k8s::Leadership>) {
    let Some(leadership) = leadership else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(SUPERVISION_INTERVAL);
    while leadership.is_running() {
        tick.tick().await;
    }
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
    let lease = config.leader.lease_config(hostname)?;
    let settings = load_settings(config.config_file.as_ref())?;
    tracing::info!(namespace = %settings.build_namespace, "settings loaded");
    let cluster = KubeCluster::from_settings(Arc::new(settings.clone()))
        .await
        .context("cannot set up the KubeCluster")?;
    let listener = bind(config.listen).await?;
    let elector = lease.map(|lease| {
        tracing::info!(
            lease = lease.name,
            identity = lease.identity,
            "leader election on: scheduling only while leading"
        );
        cluster.elect(lease)
    });
    log_listening(&listener);
    let cluster = Arc::new(cluster);
    run_with_cluster_elected(settings, cluster, elector, options, listener, shutdown_signal())
        .await?;
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

    fn leader(args: &[&str]) -> LeaderArgs {
        let mut all = vec!["runboat-server"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).expect("valid flags").leader
    }

    fn error(r: Result<Option<LeaseConfig>>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(c) => panic!("accepted: {c:?}"),
        }
    }

    #[test]
    fn leader_election_is_off_unless_asked_and_its_settings_are_checked() {
        let host = || Some("host-1".to_owned());
        assert_eq!(leader(&[]).lease_config(host).expect("valid"), None);

        let on = leader(&["--leader-election", "--lease-identity", "pod-a"]);
        let config = on.lease_config(|| None).expect("valid").expect("on");
        assert_eq!(config, LeaseConfig::new("pod-a"));

        // Decimal seconds, for tests; the hostname when no identity is set.
        let short = leader(&[
            "--leader-election",
            "--lease-name",
            "rb.leader",
            "--lease-duration",
            "1.5",
            "--lease-renew-deadline",
            "1",
            "--lease-retry-period",
            "0.25",
        ]);
        let config = short.lease_config(host).expect("valid").expect("on");
        assert_eq!(config.identity, "host-1");
        assert_eq!(config.name, "rb.leader");
        assert_eq!(config.lease_duration, Duration::from_millis(1500));
        assert_eq!(config.retry_period, Duration::from_millis(250));

        // Every invalid setting is named.
        let e = error(leader(&["--leader-election"]).lease_config(|| None));
        assert!(e.contains("POD_NAME") && e.contains("--lease-identity"), "{e}");
        let e =
            error(leader(&["--leader-election", "--lease-name", "Bad_Name"]).lease_config(host));
        assert!(e.contains("--lease-name") && e.contains("Bad_Name"), "{e}");
        let order = leader(&["--leader-election", "--lease-renew-deadline", "20"]);
        let e = error(order.lease_config(host));
        assert!(e.contains("renew deadline") && e.contains("--lease-duration"), "{e}");
        let e =
            error(leader(&["--leader-election", "--lease-identity", "a\nb"]).lease_config(host));
        assert!(e.contains("control characters"), "{e}");
        for bad in ["0", "-1", "nan", "x", "3601"] {
            let parsed = Config::try_parse_from(["runboat-server", "--lease-duration", bad]);
            assert!(parsed.is_err(), "{bad} accepted");
        }
    }
}
