//! Test helpers: settings, requests, answers.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use http_body_util::BodyExt;
use jiff::Timestamp;
use runboat_core::forge::NoForge;
use runboat_core::sim::{JobScript, SimCluster, SimConfig};
use runboat_core::{
    Build, BuildStatus, Cluster, CommitInfo, Controller, ControllerConfig, ControllerHandle,
    InitStatus, Settings,
};
use runboat_server::{AppState, GitHubLookup, ServerOptions, app};
use serde_json::Value;
use tower::ServiceExt;

use crate::fake::FakeGitHub;

pub(crate) const SETTINGS: &str = r#"
api_admin_user = "admin"
api_admin_passwd = "hunter2"
build_namespace = "runboat-builds"
build_domain = "runboat.example.com"
base_url = "https://runboat.example.com"
github_webhook_secret = "whsecret"
additional_footer_html = "<b>footer-marker</b>"

[[repos]]
repo = "^oca/.*"
branch = "^1[5-7]\\.0$"
builds = [{ image = "ghcr.io/oca/oca-ci/py3.10-odoo16.0:latest" }]
"#;

pub(crate) fn settings() -> Arc<Settings> {
    settings_with("")
}

/// [`SETTINGS`] with top-level `extra` keys (e.g. limits).
pub(crate) fn settings_with(extra: &str) -> Arc<Settings> {
    Arc::new(Settings::from_toml_str(&format!("{extra}\n{SETTINGS}")).expect("test settings"))
}

/// The router over the real controller on a simulated cluster.
pub(crate) struct Harness {
    pub(crate) state: AppState,
    pub(crate) sim: SimCluster,
    pub(crate) handle: ControllerHandle,
    pub(crate) github: Arc<FakeGitHub>,
}

/// A simulated cluster where nothing moves for an hour: init jobs stay
/// pending, replicas do not follow a scale, cleanup jobs run.
pub(crate) fn still() -> SimConfig {
    let hour = Duration::from_secs(3600);
    SimConfig {
        scale_delay: hour,
        init_job: JobScript { pending: hour, ..JobScript::succeed_after(hour) },
        cleanup_job: JobScript::succeed_after(hour),
        ..SimConfig::default()
    }
}

/// How long a test waits for the controller to show a change.
const PATIENCE: Duration = Duration::from_secs(20);

impl Harness {
    /// A harness where builds keep the state tests put them in: init jobs
    /// stay pending for an hour (so a build to initialize stays `todo`),
    /// replicas take an hour to follow a scale and cleanup jobs an hour to
    /// run, so a started build is `starting` and an undeployed one
    /// `undeploying` for the whole test.
    pub(crate) async fn new() -> Self {
        Harness::with_options(ServerOptions::default()).await
    }

    pub(crate) async fn with_options(options: ServerOptions) -> Self {
        Harness::build(settings(), still(), options).await
    }

    /// The simulated cluster's own timings (2 s scaling, 30 s init jobs,
    /// 5 s cleanup jobs), for tests on tokio's paused clock that watch
    /// builds move.
    pub(crate) async fn moving() -> Self {
        Harness::build(settings(), SimConfig::default(), ServerOptions::default()).await
    }

    pub(crate) async fn build(
        settings: Arc<Settings>,
        sim: SimConfig,
        options: ServerOptions,
    ) -> Self {
        let sim = SimCluster::new(sim);
        let cluster: Arc<dyn Cluster> = Arc::new(sim.clone());
        let handle =
            Controller::spawn(cluster, Arc::new(NoForge), settings, ControllerConfig::default());
        handle.ready().await;
        let github = Arc::new(FakeGitHub::default());
        let lookup: Arc<dyn GitHubLookup> = github.clone();
        let state = AppState::new(handle.clone(), Some(lookup), options);
        Harness { state, sim, handle, github }
    }

    pub(crate) fn app(&self) -> Router {
        app(self.state.clone())
    }

    pub(crate) async fn send(&self, req: Request<Body>) -> Answer {
        send(self.app(), req).await
    }

    /// Adds an existing build (a Deployment the controller lists) with
    /// `status` (started, stopped, failed, initializing or undeploying),
    /// created `created_s` seconds after an epoch, and waits until the
    /// controller shows it.
    pub(crate) async fn add(
        &self,
        repo: &str,
        branch: &str,
        pr: Option<u64>,
        sha: &str,
        status: BuildStatus,
        created_s: i64,
    ) -> Build {
        let commit = CommitInfo::new(repo, branch, pr, sha).expect("commit");
        let (init, replicas) = match status {
            BuildStatus::Started => (InitStatus::Succeeded, 1),
            BuildStatus::Stopped | BuildStatus::Undeploying => (InitStatus::Succeeded, 0),
            BuildStatus::Failed => (InitStatus::Failed, 0),
            BuildStatus::Initializing => (InitStatus::Todo, 0),
            other => panic!("cannot add a {other} build: start or stop one instead"),
        };
        let created = Timestamp::from_second(1_700_000_000 + created_s).expect("ts");
        let name = self.sim.insert_deployment(&commit, init, replicas, created);
        if status == BuildStatus::Undeploying {
            self.wait_status(&name, None).await;
            let outcome = self.handle.undeploy(&name).await.expect("undeploy");
            assert_eq!(outcome, runboat_core::CommandOutcome::Done);
        }
        self.wait_status(&name, Some(status)).await
    }

    /// Waits until the build `name` exists (with `status`, when given) and
    /// returns it.
    pub(crate) async fn wait_status(&self, name: &str, status: Option<BuildStatus>) -> Build {
        let found =
            self.wait_for(|h| h.get(name).filter(|b| status.is_none_or(|s| b.status == s))).await;
        found.unwrap_or_else(|| panic!("build {name} not {status:?} within {PATIENCE:?}"))
    }

    /// Waits (on index changes, with a deadline) until `check` gives
    /// something.
    pub(crate) async fn wait_for<T>(
        &self,
        check: impl Fn(&ControllerHandle) -> Option<T>,
    ) -> Option<T> {
        let mut changes = self.handle.subscribe();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(found) = check(&self.handle) {
                return Some(found);
            }
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Err(_) => return None,
                // Lagged: look again; closed: the controller stopped.
                Ok(Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    return check(&self.handle);
                }
            }
        }
    }
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: axum::http::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn detail(&self) -> String {
        self.json()["detail"].as_str().expect("detail").to_owned()
    }

    pub(crate) fn content_type(&self) -> String {
        self.headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().expect("ascii").to_owned())
            .unwrap_or_default()
    }
}

/// Only the status of an answer (the body is dropped unread: streams).
pub(crate) trait StatusOnly {
    async fn oneshot_status(self, req: Request<Body>) -> StatusCode;
}

impl StatusOnly for Router {
    async fn oneshot_status(self, req: Request<Body>) -> StatusCode {
        self.oneshot(req).await.expect("infallible").status()
    }
}

pub(crate) async fn send(app: Router, req: Request<Body>) -> Answer {
    let resp = app.oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes().to_vec();
    Answer { status, headers, body }
}

pub(crate) fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).expect("request")
}

pub(crate) fn req(method: &str, uri: &str) -> Request<Body> {
    Request::builder().method(method).uri(uri).body(Body::empty()).expect("request")
}

pub(crate) fn basic(user: &str, passwd: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{passwd}"))
    )
}

pub(crate) fn admin(method: &str, uri: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, basic("admin", "hunter2"))
        .body(Body::empty())
        .expect("request")
}

pub(crate) fn sha(n: u8) -> String {
    format!("{:040x}", u128::from(n) + 0xabc0_0000)
}
