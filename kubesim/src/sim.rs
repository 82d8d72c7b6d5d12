//! Starting a simulated API server, and the handle tests drive it with.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::task::JoinHandle;

use crate::api::{ListQuery, WriteOpts};
use crate::config::{Config, ControlAction, ControllerConfig, FailRule, JobHook, JobRule};
use crate::error::{Error, Result};
use crate::resources;
use crate::status::ApiError;
use crate::store::Store;

/// State shared by the HTTP server, the controllers and the handle.
pub(crate) struct Inner {
    pub(crate) store: Store,
    pub(crate) seed: u64,
    ids: AtomicU64,
    /// Pod logs by (namespace, pod, container).
    pub(crate) logs: Mutex<HashMap<(String, String, String), String>>,
    /// Bumped whenever a log changes, to wake its followers.
    pub(crate) logs_changed: tokio::sync::watch::Sender<u64>,
    /// Log requests served: reads, and follows (`follow=true`).
    pub(crate) log_reads: AtomicU64,
    pub(crate) log_follows: AtomicU64,
    pub(crate) controllers: Mutex<ControllerConfig>,
    pub(crate) paused: tokio::sync::watch::Sender<bool>,
    pub(crate) fail_rules: Mutex<Vec<FailRule>>,
    pub(crate) latency: Mutex<Duration>,
    pub(crate) close_watches: tokio::sync::watch::Sender<u64>,
    pub(crate) bookmark_interval: Duration,
    pub(crate) requests: AtomicU64,
    /// Deployment reconciles run by the simulated controller.
    pub(crate) deployment_reconciles: AtomicU64,
    pub(crate) shutting_down: AtomicBool,
    /// Tokens and RBAC decisions (`Config::rbac`).
    pub(crate) auth: crate::auth::Auth,
}

impl Inner {
    pub(crate) fn new(config: &Config) -> Self {
        let seed = u64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(7);
        Inner {
            store: Store::new(config.history_window),
            seed,
            ids: AtomicU64::new(1),
            logs: Mutex::new(HashMap::new()),
            logs_changed: tokio::sync::watch::channel(0).0,
            log_reads: AtomicU64::new(0),
            log_follows: AtomicU64::new(0),
            controllers: Mutex::new(config.controllers.clone()),
            paused: tokio::sync::watch::channel(false).0,
            fail_rules: Mutex::new(Vec::new()),
            latency: Mutex::new(Duration::ZERO),
            close_watches: tokio::sync::watch::channel(0).0,
            bookmark_interval: config.bookmark_interval,
            requests: AtomicU64::new(0),
            deployment_reconciles: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
            auth: crate::auth::Auth::new(config.rbac, config.unauthenticated_as_admin, seed),
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn controller_config(&self) -> ControllerConfig {
        self.controllers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The injected failure for a request, consuming one count of the rule.
    pub(crate) fn take_fault(&self, verb: &str, resource: &str) -> Option<ApiError> {
        let mut rules = self.fail_rules.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let pos = rules.iter().position(|r| {
            r.count > 0
                && r.verb.as_deref().is_none_or(|v| v == verb)
                && r.resource.as_deref().is_none_or(|res| res == resource)
        })?;
        let rule = &mut rules[pos];
        rule.count -= 1;
        let (status, reason, message) = match rule.status {
            429 => (429, "TooManyRequests", "Too many requests, please try again later."),
            503 => (
                503,
                "ServiceUnavailable",
                "The server is currently unable to handle the request (injected fault)",
            ),
            504 => (
                504,
                "Timeout",
                "The server was unable to return a response in the time allotted (injected fault)",
            ),
            s if s >= 500 => (s, "InternalError", "Internal error occurred: injected fault"),
            s => (s, "BadRequest", "injected fault"),
        };
        let mut err = ApiError::new(status, reason, message);
        err.retry_after = rule.retry_after_seconds;
        if rule.count == 0 {
            rules.remove(pos);
        }
        Some(err)
    }

    pub(crate) fn latency(&self) -> Duration {
        *self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn control(&self, action: ControlAction) {
        match action {
            ControlAction::CloseWatches => {
                self.close_watches.send_modify(|g| *g += 1);
            }
            ControlAction::FailNext(rule) => {
                self.fail_rules
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .push(rule);
            }
            ControlAction::Latency { millis } => {
                *self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Duration::from_millis(millis);
            }
            ControlAction::CompactHistory => self.store.write(crate::store::State::compact),
            ControlAction::PauseControllers => {
                self.paused.send_replace(true);
            }
            ControlAction::ResumeControllers => {
                self.paused.send_replace(false);
            }
            ControlAction::AddJobRule(rule) => {
                self.controllers
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .job_rules
                    .insert(0, rule);
            }
            ControlAction::ClearFaults => {
                self.fail_rules.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
                *self.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Duration::ZERO;
            }
        }
    }

    fn ensure_namespace(&self, name: &str) -> Result<()> {
        let res = resources::NAMESPACES;
        if self.store.read().get(res, "", name).is_some() {
            return Ok(());
        }
        let body = serde_json::json!({"metadata": {"name": name}});
        self.create(res, "", body, &WriteOpts::default())
            .map(|_| ())
            .map_err(|e| Error::Api { source: e })
    }
}

/// A cloneable handle on a running simulated server: fault injection,
/// job scripting, direct store access and waiting.
#[derive(Clone)]
pub struct Handle {
    pub(crate) inner: Arc<Inner>,
    url: String,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").field("url", &self.url).finish_non_exhaustive()
    }
}

impl Handle {
    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kube client for this server, with `default` as its namespace
    /// (with RBAC on, as the admin).
    pub fn client(&self) -> Result<kube::Client> {
        client_for(&self.url, self.admin_token())
    }

    /// The admin's bearer token (group `system:masters`) when RBAC is on.
    fn admin_token(&self) -> Option<&str> {
        self.inner.auth.enabled.then_some(self.inner.auth.admin_token.as_str())
    }

    /// Whether requests are authenticated and authorized (`Config::rbac`).
    pub fn rbac_enabled(&self) -> bool {
        self.inner.auth.enabled
    }

    /// A kubeconfig for kubectl and kube's config inference: with RBAC
    /// on, the admin's (every right).
    pub fn kubeconfig(&self, namespace: &str) -> String {
        match self.admin_token() {
            Some(token) => kubeconfig_yaml_with_token(&self.url, namespace, token),
            None => kubeconfig_yaml(&self.url, namespace),
        }
    }

    /// Mints a bearer token for the service account `namespace/name`
    /// (user `system:serviceaccount:<namespace>:<name>`, groups
    /// `system:serviceaccounts`, `system:serviceaccounts:<namespace>`,
    /// `system:authenticated`), as a projected service-account token would
    /// authenticate. The account need not exist yet.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let identity = crate::auth::Identity {
            user: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        };
        self.inner.auth.mint(identity, self.inner.seed, self.inner.next_id())
    }

    /// A kubeconfig authenticating with the service account's token.
    pub fn service_account_kubeconfig(
        &self,
        sa_namespace: &str,
        name: &str,
        namespace: &str,
    ) -> String {
        kubeconfig_yaml_with_token(
            &self.url,
            namespace,
            &self.service_account_token(sa_namespace, name),
        )
    }

    /// Number of requests answered 403 Forbidden by RBAC.
    pub fn forbidden_count(&self) -> u64 {
        self.inner.auth.forbidden.load(Ordering::Relaxed)
    }

    /// Every distinct authorization decision so far (who, verb, resource,
    /// subresource, namespace, allowed), sorted. Empty with RBAC off.
    pub fn access_log(&self) -> Vec<crate::auth::Access> {
        self.inner.auth.decisions()
    }

    /// Forgets the recorded decisions (not the forbidden count).
    pub fn clear_access_log(&self) {
        self.inner.auth.clear_decisions();
    }

    /// Runs a control action (the same as `POST /kubesim/faults`).
    pub fn control(&self, action: ControlAction) {
        self.inner.control(action);
    }

    /// Ends every open watch now (clients see the stream end).
    pub fn close_watches(&self) {
        self.control(ControlAction::CloseWatches);
    }

    /// Answers the next matching requests with an error status.
    pub fn fail_next(&self, rule: FailRule) {
        self.control(ControlAction::FailNext(rule));
    }

    /// Delays every API request.
    pub fn set_latency(&self, latency: Duration) {
        *self.inner.latency.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = latency;
    }

    /// Forgets the event history: watches resuming from an earlier
    /// resourceVersion get 410 Gone.
    pub fn compact_history(&self) {
        self.control(ControlAction::CompactHistory);
    }

    pub fn pause_controllers(&self) {
        self.control(ControlAction::PauseControllers);
    }

    pub fn resume_controllers(&self) {
        self.control(ControlAction::ResumeControllers);
    }

    /// Removes pending injected failures and latency.
    pub fn clear_faults(&self) {
        self.control(ControlAction::ClearFaults);
    }

    /// Scripts the jobs a rule matches (checked before earlier rules).
    pub fn add_job_rule(&self, rule: JobRule) {
        self.control(ControlAction::AddJobRule(rule));
    }

    /// Changes the controllers' configuration at run time (timings, switches, rules).
    pub fn update_controllers(&self, f: impl FnOnce(&mut ControllerConfig)) {
        f(&mut self.inner.controllers.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        // Wake the controllers (they wait on store changes and this channel)
        // so a controller switched on catches up now, not at the next write.
        self.inner.paused.send_modify(|_| {});
    }

    /// Sets the test hook deciding job scripts (before the rules).
    pub fn set_job_hook(&self, hook: JobHook) {
        self.inner.controllers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).job_hook =
            Some(hook);
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.store.read().rv
    }

    /// Every Job's life so far (creation and end, in creation order; the
    /// most recent 100,000 only): what ran at
    /// once, as the cluster saw it, whatever its clients believe.
    pub fn job_history(&self) -> Vec<crate::JobRecord> {
        self.inner.store.read().jobs.records()
    }

    /// Number of stored objects of all resources.
    pub fn object_count(&self) -> usize {
        self.inner.store.read().objects.iter().map(std::collections::BTreeMap::len).sum()
    }

    /// Number of HTTP API requests served so far.
    pub fn request_count(&self) -> u64 {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// Number of Deployment reconciles the simulated controller ran (a
    /// measure of its work, for tests of what triggers one).
    pub fn deployment_reconciles(&self) -> u64 {
        self.inner.deployment_reconciles.load(Ordering::Relaxed)
    }

    /// Creates an object without HTTP (for seeding benchmarks and tests),
    /// with the same defaulting and validation as a POST.
    /// `resource` is the plural name, e.g. `deployments`.
    pub fn create(&self, resource: &str, namespace: &str, object: Value) -> Result<Value> {
        let res = find_plural(resource)?;
        let (_, body) = self
            .inner
            .create(res, namespace, object, &WriteOpts::default())
            .map_err(|e| Error::Api { source: e })?;
        serde_json::from_slice(&body).map_err(|e| Error::Json { source: e })
    }

    /// Ensures a namespace exists.
    pub fn create_namespace(&self, name: &str) -> Result<()> {
        self.inner.ensure_namespace(name)
    }

    /// The stored object, if any.
    pub fn get(&self, resource: &str, namespace: &str, name: &str) -> Result<Option<Value>> {
        let res = find_plural(resource)?;
        match self.inner.get(res, namespace, name) {
            Ok(o) => Ok(Some(o.value())),
            Err(e) if e.code == 404 => Ok(None),
            Err(e) => Err(Error::Api { source: e }),
        }
    }

    /// All stored objects of a resource in a namespace (all when `None`).
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> Result<Vec<Value>> {
        let res = find_plural(resource)?;
        let (_, body) = self
            .inner
            .list(res, namespace, &ListQuery::default())
            .map_err(|e| Error::Api { source: e })?;
        let list: Value = serde_json::from_slice(&body).map_err(|e| Error::Json { source: e })?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// Sets the log of a pod's container.
    pub fn set_pod_log(&self, namespace: &str, pod: &str, container: &str, log: &str) {
        self.inner
            .logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((namespace.into(), pod.into(), container.into()), log.into());
        self.inner.logs_changed.send_modify(|v| *v += 1);
    }

    /// Log requests served so far: `(reads, follows)`.
    pub fn log_requests(&self) -> (u64, u64) {
        (
            self.inner.log_reads.load(Ordering::Relaxed),
            self.inner.log_follows.load(Ordering::Relaxed),
        )
    }

    /// Waits until `condition` holds, checking after every change of the
    /// store, for at most `timeout`. Returns whether it held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&Handle) -> bool,
    ) -> bool {
        let mut rx = self.inner.store.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if condition(self) {
                return true;
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return condition(self),
            }
        }
    }
}

fn find_plural(resource: &str) -> Result<usize> {
    resources::RESOURCES
        .iter()
        .position(|r| r.plural == resource)
        .ok_or_else(|| Error::UnknownResource { resource: resource.to_string() })
}

fn client_for(url: &str, token: Option<&str>) -> Result<kube::Client> {
    let uri: http::Uri =
        url.parse().map_err(|e: http::uri::InvalidUri| Error::Client { message: e.to_string() })?;
    let mut config = kube::Config::new(uri);
    if let Some(token) = token {
        // AuthInfo's token is a secrecy::SecretString: build it through
        // serde rather than depending on secrecy.
        config.auth_info = serde_json::from_value(serde_json::json!({"token": token}))
            .map_err(|e| Error::Client { message: e.to_string() })?;
    }
    config.default_namespace = "default".into();
    config.read_timeout = Some(Duration::from_secs(300));
    kube::Client::try_from(config).map_err(|e| Error::Client { message: e.to_string() })
}

/// A running simulated API server. Dropping it stops the server.
pub struct KubeSim {
    handle: Handle,
    client: kube::Client,
    tasks: Vec<JoinHandle<()>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl std::fmt::Debug for KubeSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeSim").field("url", &self.handle.url).finish_non_exhaustive()
    }
}

impl std::ops::Deref for KubeSim {
    type Target = Handle;

    fn deref(&self) -> &Handle {
        &self.handle
    }
}

impl KubeSim {
    /// Starts a server on a free port of 127.0.0.1 with the default
    /// configuration (controllers on, about a second of simulated delays).
    pub async fn start() -> Result<Self> {
        Self::start_with(Config::default()).await
    }

    /// Starts a server with controllers on and no simulated delays.
    pub async fn start_instant() -> Result<Self> {
        Self::start_with(Config { controllers: ControllerConfig::instant(), ..Config::default() })
            .await
    }

    pub async fn start_with(config: Config) -> Result<Self> {
        let inner = Arc::new(Inner::new(&config));
        for ns in &config.namespaces {
            inner.ensure_namespace(ns)?;
        }
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .map_err(|e| Error::Bind { addr: config.addr, source: e })?;
        let addr =
            listener.local_addr().map_err(|e| Error::Bind { addr: config.addr, source: e })?;
        let url = format!("http://{addr}");
        let router = crate::server::router(inner.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let shutdown = async {
                let _ = rx.await;
            };
            if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
                tracing::error!(error = %e, "kubesim server failed");
            }
        });
        let controllers = tokio::spawn(crate::controllers::run(inner.clone()));
        let handle = Handle { inner, url };
        let client = handle.client()?;
        Ok(KubeSim { handle, client, tasks: vec![server, controllers], shutdown: Some(tx) })
    }

    /// A ready kube client for this server (namespace `default`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A cloneable handle for fault injection and waiting.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Stops the server: open watches end, then the listener closes.
    pub async fn shutdown(mut self) {
        self.stop();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    fn stop(&mut self) {
        self.handle.inner.shutting_down.store(true, Ordering::Relaxed);
        self.handle.close_watches();
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Serves until the future completes (the binary's main loop).
    pub async fn serve_until(mut self, until: impl std::future::Future<Output = ()>) {
        until.await;
        self.stop();
        for task in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for KubeSim {
    fn drop(&mut self) {
        self.stop();
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A kubeconfig pointing at `url`, with a context named `kubesim`.
pub fn kubeconfig_yaml(url: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster:\n    server: {url}\ncontexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    user: kubesim\n    namespace: {namespace}\ncurrent-context: kubesim\nusers:\n- name: kubesim\n  user: {{}}\npreferences: {{}}\n"
    )
}

/// A kubeconfig pointing at `url` that authenticates with a bearer token.
pub fn kubeconfig_yaml_with_token(url: &str, namespace: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: kubesim\n  cluster:\n    server: {url}\ncontexts:\n- name: kubesim\n  context:\n    cluster: kubesim\n    user: kubesim\n    namespace: {namespace}\ncurrent-context: kubesim\nusers:\n- name: kubesim\n  user:\n    token: {token}\npreferences: {{}}\n"
    )
}
