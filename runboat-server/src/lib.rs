//! The runboat HTTP server: REST API (`/api/v1`, SPEC's contract), GitHub
//! webhook endpoint, server-sent build events, the web UI, health and
//! metrics endpoints, wired to the controller.
//!
//! Entry points: [`app`] builds the axum [`Router`] from an [`AppState`]
//! (what tests drive with `tower::ServiceExt::oneshot`), [`run`] is what the
//! `runboat-server` binary calls.
//!
//! What it must not do: decide anything about builds (every change goes
//! through the commands of the [`ControllerHandle`]), hold the index
//! lock across an `.await`, let a secret reach a log or an answer, or panic
//! on any request.

pub mod api;
pub mod auth;
pub mod demo;
pub mod error;
pub mod events;
pub mod github;
pub mod limits;
pub mod logs;
pub mod metrics;
pub mod openapi;
pub mod ops;
pub mod run;
pub mod summary;
pub mod ui;
pub mod views;
pub mod wake;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{MethodRouter, delete, get, post};
use runboat_core::{Build, BuildIndex, ControllerHandle, Settings};
use runboat_github::WebhookSecret;
use tokio::sync::watch;
use tower_http::timeout::TimeoutLayer;

pub use auth::AdminCredentials;
pub use error::{ApiError, Error, Result};
pub use github::GitHubLookup;
pub use run::{Config, LogFormat, run};

/// Seconds an ETA is cached for.
const ETA_BUCKET_SECONDS: i64 = 1;

/// The view revision of `build`: its index revision, changed every time
/// bucket for a build that may show an ETA (initializing or starting), so
/// that cached views of those builds age out. Index revisions are counters
/// far below 2^32; the bucket goes above, with the top bit set.
fn timed_revision(build: &Build, rev: u64, bucket: i64) -> u64 {
    use runboat_core::BuildStatus;
    match build.status {
        BuildStatus::Initializing | BuildStatus::Starting => {
            let bucket = u64::try_from(bucket).unwrap_or(0) & 0x7fff_ffff;
            (1 << 63) | (bucket << 32) | (rev & 0xffff_ffff)
        }
        _ => rev,
    }
}

/// Server options that are not runboat settings (command line flags).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Also require admin credentials for start, stop and reset (the
    /// original leaves them open to anyone who can reach the API).
    pub admin_for_actions: bool,
    /// Interval of the keep-alive comments of event streams.
    pub keep_alive: Duration,
    /// Start even without a webhook secret, accepting unsigned deliveries
    /// (never in production: anyone could deploy or undeploy builds).
    pub allow_unsigned_webhooks: bool,
    /// Timeouts and caps of the public surface.
    pub limits: limits::Limits,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            admin_for_actions: false,
            keep_alive: Duration::from_secs(15),
            allow_unsigned_webhooks: false,
            limits: limits::Limits::default(),
        }
    }
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    controller: ControllerHandle,
    github: Option<Arc<dyn GitHubLookup>>,
    webhook_secret: Option<WebhookSecret>,
    admin: AdminCredentials,
    options: ServerOptions,
    metrics: metrics::HttpMetrics,
    shutdown: watch::Sender<bool>,
    /// Open event streams, globally and per client.
    event_streams: Arc<limits::Slots>,
    /// Build actions per client and per build.
    actions_by_client: limits::RateLimiter,
    actions_by_build: limits::RateLimiter,
    /// Webhook delivery IDs seen.
    deliveries: limits::Deliveries,
    /// The poll loops of followed logs.
    log_feeds: logs::LogFeeds,
    event_cache: events::EventCache,
    /// Each build's JSON as `GET /builds/{name}` and the events show it.
    views: views::ViewCache,
    /// Each build's JSON as `GET /builds` shows it (no `null` fields), and
    /// the whole list answers.
    list_views: views::ViewCache,
    /// The leader election, when it is on.
    leadership: Option<runboat_k8s::Leadership>,
    /// Wake-on-request counters and history.
    wake: wake::WakeState,
}

impl AppState {
    /// State over `controller`, with the admin credentials and webhook
    /// secret of its settings. `github` is used by the trigger endpoints
    /// (without it they answer 503).
    pub fn new(
        controller: ControllerHandle,
        github: Option<Arc<dyn GitHubLookup>>,
        options: ServerOptions,
    ) -> Self {
        AppState::with_leadership(controller, github, options, None)
    }

    /// [`AppState::new`], with the view of a running leader election (for
    /// `/metrics` and `GET /status`; `None`: election off).
    pub fn with_leadership(
        controller: ControllerHandle,
        github: Option<Arc<dyn GitHubLookup>>,
        options: ServerOptions,
        leadership: Option<runboat_k8s::Leadership>,
    ) -> Self {
        let settings = controller.settings().clone();
        let webhook_secret = WebhookSecret::from_config(
            settings.github_webhook_secret.as_ref().map(runboat_core::Secret::expose),
        );
        let admin =
            AdminCredentials::new(&settings.api_admin_user, settings.api_admin_passwd.clone());
        let (shutdown, _) = watch::channel(false);
        let l = &options.limits;
        let event_streams = limits::Slots::new(l.max_event_streams, l.max_event_streams_per_client);
        let actions_by_client = limits::RateLimiter::new(l.actions_per_client_per_minute);
        let actions_by_build = limits::RateLimiter::new(l.actions_per_build_per_minute);
        let deliveries = limits::Deliveries::new(l.remembered_deliveries);
        AppState {
            inner: Arc::new(Inner {
                controller,
                github,
                webhook_secret,
                admin,
                options,
                metrics: metrics::HttpMetrics::default(),
                shutdown,
                event_streams,
                actions_by_client,
                actions_by_build,
                deliveries,
                log_feeds: logs::LogFeeds::default(),
                event_cache: events::EventCache::default(),
                views: views::ViewCache::default(),
                list_views: views::ViewCache::default(),
                leadership,
                wake: wake::WakeState::default(),
            }),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &Arc<Settings> {
        self.inner.controller.settings()
    }

    /// The controller.
    pub fn controller(&self) -> &ControllerHandle {
        &self.inner.controller
    }

    /// The leader election, when it is on.
    pub fn leadership(&self) -> Option<&runboat_k8s::Leadership> {
        self.inner.leadership.as_ref()
    }

    /// Ends every open event stream, for a graceful shutdown (the server
    /// waits for open connections to finish).
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Number of open event streams.
    pub fn open_event_streams(&self) -> usize {
        self.inner.event_streams.open()
    }

    pub(crate) fn event_streams(&self) -> &Arc<limits::Slots> {
        &self.inner.event_streams
    }

    /// Wake-on-request counters and history.
    pub fn wake(&self) -> &wake::WakeState {
        &self.inner.wake
    }

    pub(crate) fn actions_by_client(&self) -> &limits::RateLimiter {
        &self.inner.actions_by_client
    }

    pub(crate) fn actions_by_build(&self) -> &limits::RateLimiter {
        &self.inner.actions_by_build
    }

    /// The poll loops of followed logs.
    pub fn log_feeds(&self) -> &logs::LogFeeds {
        &self.inner.log_feeds
    }

    pub(crate) fn deliveries(&self) -> &limits::Deliveries {
        &self.inner.deliveries
    }

    pub(crate) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }

    pub(crate) fn options(&self) -> &ServerOptions {
        &self.inner.options
    }

    pub(crate) fn admin(&self) -> &AdminCredentials {
        &self.inner.admin
    }

    pub(crate) fn github(&self) -> Option<&dyn GitHubLookup> {
        self.inner.github.as_deref()
    }

    pub(crate) fn webhook_secret(&self) -> Option<&WebhookSecret> {
        self.inner.webhook_secret.as_ref()
    }

    pub(crate) fn http_metrics(&self) -> &metrics::HttpMetrics {
        &self.inner.metrics
    }

    /// Runs `f` on the index, under the controller's read lock (keep `f`
    /// short, never across an `.await`).
    pub(crate) fn read<R>(&self, f: impl FnOnce(&BuildIndex) -> R) -> R {
        self.inner.controller.with_index(f)
    }

    /// A build as the event stream shows it (SPEC's JSON fields and the
    /// estimate; no timeline), ready to serialise (takes the index's read
    /// lock: not for use under [`AppState::read`]).
    pub(crate) fn build_view(&self, build: &Build) -> runboat_api::Build {
        self.read(|index| self.build_view_in(index, build, false))
    }

    /// [`AppState::build_view`] under a read lock already held, with the
    /// `timeline` when `timeline` is true (only the single-build answer
    /// carries it: lists and events stay as small as they were). The fields
    /// that depend on other builds (`superseded_by`) change only with the
    /// build itself in practice (a superseded build is undeployed at once),
    /// so the per-build caches stay right.
    pub(crate) fn build_view_in(
        &self,
        index: &BuildIndex,
        build: &Build,
        timeline: bool,
    ) -> runboat_api::Build {
        let s = self.settings();
        let mut view = build.view(&s.build_domain, &s.base_url);
        let now = jiff::Timestamp::now();
        let rounds = || runboat_core::progress::queue_rounds(index, build, s.max_initializing);
        let (eta, init) = self.controller().with_progress(|p| {
            (p.eta(build, now, rounds), timeline.then(|| p.init_times(&build.name)))
        });
        view.eta_seconds = eta;
        if let Some(init) = init {
            view.timeline = Some(runboat_core::progress::timeline(build, init));
        }
        let rule = runboat_core::policy::supersede::Rule::of(s);
        view.superseded_by = runboat_core::policy::supersede::superseded_by(index, build, rule);
        view
    }

    /// `GET /builds`'s answer for `filters` (newest first), from the
    /// answer cache while the index is unchanged, else from the view cache.
    pub(crate) fn builds_answer(
        &self,
        index: &runboat_core::BuildIndex,
        filters: &runboat_core::SearchFilters,
    ) -> bytes::Bytes {
        let views = &self.inner.list_views;
        // Debug prints every field, strings escaped: a complete key.
        // An ETA changes with time, not with the index: while builds that
        // may have one are there, answers and views of those builds are
        // cached for a few seconds at most (the time bucket is part of the
        // answer's key and of those builds' view revision).
        let bucket = jiff::Timestamp::now().as_second() / ETA_BUCKET_SECONDS;
        let timed = index.count_by_status(runboat_core::BuildStatus::Initializing) > 0
            || index.count_by_status(runboat_core::BuildStatus::Starting) > 0;
        let key = if timed { format!("{filters:?}@{bucket}") } else { format!("{filters:?}") };
        views.answer(index, &key, || {
            let mut found = index.search_with_revisions(filters, runboat_core::SortOrder::Desc);
            if timed {
                for (b, rev) in &mut found {
                    *rev = timed_revision(b, *rev, bucket);
                }
            }
            views.json_array(index, &found, |b| self.build_list_json(index, b)).into()
        })
    }

    /// The JSON of one build, from the view cache.
    pub(crate) fn build_json_cached(
        &self,
        index: &runboat_core::BuildIndex,
        build: &Build,
        rev: u64,
    ) -> bytes::Bytes {
        let bucket = jiff::Timestamp::now().as_second() / ETA_BUCKET_SECONDS;
        let rev = timed_revision(build, rev, bucket);
        self.inner.views.json_one(index, build, rev, |b| self.build_json(index, b))
    }

    fn build_json(&self, index: &BuildIndex, build: &Build) -> bytes::Bytes {
        // A view is plain strings and numbers: serialising cannot fail.
        serde_json::to_vec(&self.build_view_in(index, build, true)).unwrap_or_default().into()
    }

    /// A build as `GET /builds` shows it: the fields that are `null`
    /// (`commit_info.pr`, `repo_pr_link` of a branch build) are left out,
    /// as the original's list answer (FastAPI's `response_model_exclude_none`)
    /// does. `GET /builds/{name}` and the events keep them as `null`.
    fn build_list_json(&self, index: &BuildIndex, build: &Build) -> bytes::Bytes {
        let view = self.build_view_in(index, build, false);
        serde_json::to_vec(&runboat_api::ListedBuild::from(&view)).unwrap_or_default().into()
    }

    pub(crate) fn event_cache(&self) -> &events::EventCache {
        &self.inner.event_cache
    }
}

/// The handlers of an `/api/v1` path of [`openapi::API_PATHS`]. Those
/// that wait on the controller, the cluster or GitHub are cut after the
/// request timeout (503); the reads of the index never wait, and get no
/// per-request timer.
fn api_route(path: &str, t: TimeoutLayer) -> MethodRouter<AppState> {
    match path {
        "/status" => get(api::status),
        "/repos" => get(api::repos),
        "/repos/summary" => get(summary::repos_summary),
        "/builds" => get(api::list_builds).merge(delete(api::undeploy_builds).layer(t)),
        "/builds/trigger/branch" => post(api::trigger_branch).layer(t),
        "/builds/trigger/pr" => post(api::trigger_pr).layer(t),
        "/builds/{name}" => get(api::get_build).merge(delete(api::undeploy_build).layer(t)),
        "/builds/{name}/init-log" => get(logs::init_log).layer(t),
        "/builds/{name}/log" => get(logs::log).layer(t),
        "/builds/{name}/start" => post(api::start).layer(t),
        "/builds/{name}/stop" => post(api::stop).layer(t),
        "/builds/{name}/reset" => post(api::reset).layer(t),
        "/builds/{name}/pin" => post(api::pin).layer(t),
        "/builds/{name}/unpin" => post(api::unpin).layer(t),
        "/build-events" => get(events::build_events),
        "/openapi.json" => get(ops::openapi),
        // A listed path without handlers answers 405 (and fails the
        // OpenAPI tests).
        _ => MethodRouter::new(),
    }
}

/// The whole HTTP interface over `state`.
pub fn app(state: AppState) -> Router {
    // Until the response head only: a followed log is not cut.
    let timeout = TimeoutLayer::with_status_code(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        state.options().limits.request_timeout,
    );
    let api = openapi::API_PATHS
        .iter()
        .fold(Router::new(), |router, path| router.route(path, api_route(path, timeout)))
        .fallback(api::not_found);
    Router::new()
        .nest("/api/v1", api)
        .route(
            "/webhooks/github",
            post(webhook::github)
                .layer::<_, std::convert::Infallible>(DefaultBodyLimit::max(
                    runboat_github::webhook::MAX_BODY_BYTES,
                ))
                .layer(timeout)
                .layer(axum::middleware::from_fn_with_state(state.clone(), webhook::budget)),
        )
        .route("/", get(ui::index))
        .route("/builds", get(ui::builds_page))
        .route("/builds/{name}", get(ui::build_page))
        .route("/webui/builds.html", get(ui::legacy_builds))
        .route("/webui/build.html", get(ui::legacy_build))
        .route("/webui/", get(ui::legacy_index))
        .route("/webui/index.html", get(ui::legacy_index))
        .route("/static/{file}", get(ui::asset))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(api::not_found)
        // Build hosts (wake on request) before any route.
        .layer(axum::middleware::from_fn_with_state(state.clone(), wake::by_host))
        .layer(axum::middleware::from_fn_with_state(state.clone(), metrics::track))
        .with_state(state)
}
