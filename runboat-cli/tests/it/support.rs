//! The server under test and a runner of the `runboat` binary.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use runboat_core::forge::NoForge;
use runboat_core::sim::{JobOutcome, JobScript, SimCluster, SimConfig};
use runboat_core::{Cluster, CommitInfo, Controller, ControllerConfig, ControllerHandle, Settings};
use runboat_github::{ClientError, PullRequestInfo};
use runboat_server::{AppState, GitHubLookup, ServerOptions, app};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub(crate) const SETTINGS: &str = r#"
api_admin_user = "admin"
api_admin_passwd = "hunter2"
build_namespace = "runboat-builds"
build_domain = "runboat.example.com"
base_url = "https://runboat.example.com"

[[repos]]
repo = "^oca/.*"
branch = "^1[5-7]\\.0$"
builds = [{ image = "ghcr.io/oca/oca-ci/py3.10-odoo16.0:latest" }]
"#;

/// How long any awaited condition may take.
pub(crate) const PATIENCE: Duration = Duration::from_secs(60);

pub(crate) fn sha(n: u32) -> String {
    format!("{:040x}", u128::from(n) + 0xabc0_0000)
}

/// A GitHub whose branch heads and pull requests are what the test says.
#[derive(Default)]
pub(crate) struct FakeGitHub {
    heads: Mutex<HashMap<String, String>>,
}

#[async_trait]
impl GitHubLookup for FakeGitHub {
    async fn branch_head(&self, repo: &str, branch: &str) -> Result<String, ClientError> {
        let heads = self.heads.lock().expect("lock");
        heads
            .get(&format!("{repo}@{branch}"))
            .cloned()
            .ok_or_else(|| ClientError::NotFound { what: format!("branch {branch} of {repo}") })
    }

    async fn pull_request(&self, repo: &str, pr: u64) -> Result<PullRequestInfo, ClientError> {
        let heads = self.heads.lock().expect("lock");
        let head = heads.get(&format!("{repo}#{pr}")).cloned().ok_or_else(|| {
            ClientError::NotFound { what: format!("pull request #{pr} of {repo}") }
        })?;
        Ok(PullRequestInfo { base_branch: "16.0".to_owned(), head_sha: head, open: true })
    }
}

impl FakeGitHub {
    pub(crate) fn set_branch(&self, repo: &str, branch: &str, sha: &str) {
        self.heads.lock().expect("lock").insert(format!("{repo}@{branch}"), sha.to_owned());
    }

    pub(crate) fn set_pr(&self, repo: &str, pr: u64, sha: &str) {
        self.heads.lock().expect("lock").insert(format!("{repo}#{pr}"), sha.to_owned());
    }
}

pub(crate) fn sim_config() -> SimConfig {
    let quick = |outcome| JobScript {
        pending: Duration::from_millis(20),
        run: Duration::from_millis(100),
        outcome,
    };
    SimConfig {
        scale_delay: Duration::from_millis(30),
        init_job: quick(JobOutcome::Succeed),
        cleanup_job: quick(JobOutcome::Succeed),
        ..SimConfig::default()
    }
}

/// runboat-server on 127.0.0.1 over a controller on a simulated cluster.
pub(crate) struct Server {
    pub(crate) url: String,
    pub(crate) addr: SocketAddr,
    pub(crate) sim: SimCluster,
    pub(crate) handle: ControllerHandle,
    pub(crate) state: AppState,
    pub(crate) github: Arc<FakeGitHub>,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<()>>,
}

impl Server {
    pub(crate) async fn start() -> Server {
        Server::start_on("127.0.0.1:0".parse().expect("addr"), SimCluster::new(sim_config())).await
    }

    /// A server on `addr` (a restart: same cluster, new controller).
    pub(crate) async fn start_on(addr: SocketAddr, sim: SimCluster) -> Server {
        let settings = Arc::new(Settings::from_toml_str(SETTINGS).expect("settings"));
        let cluster: Arc<dyn Cluster> = Arc::new(sim.clone());
        let handle = Controller::spawn(
            cluster,
            Arc::new(NoForge),
            settings.clone(),
            ControllerConfig::default(),
        );
        handle.ready().await;
        let github = Arc::new(FakeGitHub::default());
        let lookup: Arc<dyn GitHubLookup> = github.clone();
        let options =
            ServerOptions { keep_alive: Duration::from_secs(1), ..ServerOptions::default() };
        let state = AppState::new(handle.clone(), Some(lookup), options);
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let router = app(state.clone());
        let serving = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        Server {
            url: format!("http://{addr}"),
            addr,
            sim,
            handle,
            state,
            github,
            stop: Some(stop),
            serving: Some(serving),
        }
    }

    /// Stops serving (event streams end) and the controller.
    pub(crate) async fn stop(mut self) {
        self.state.shutdown();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            tokio::time::timeout(PATIENCE, serving).await.expect("server stops").expect("join");
        }
        self.handle.shutdown().await;
    }

    /// Deploys a commit directly through the controller; returns the name.
    pub(crate) async fn deploy(&self, branch: &str, pr: Option<u64>, n: u32) -> String {
        let commit = CommitInfo::new("oca/web", branch, pr, &sha(n)).expect("commit");
        let name = commit.build_name();
        let outcome = self.handle.deploy_commit(commit).await.expect("deploy");
        assert_eq!(outcome, runboat_core::CommandOutcome::Done);
        name
    }

    /// The status of build `name`, `None` when it does not exist.
    pub(crate) fn status(&self, name: &str) -> Option<String> {
        self.handle.with_index(|index| index.get(name).map(|b| b.status.as_str().to_owned()))
    }

    /// Waits until build `name` is pinned (or not).
    pub(crate) async fn until_pinned(&self, name: &str, pinned: bool) {
        let mut rx = self.handle.with_index(|index| index.subscribe());
        let deadline = Instant::now() + PATIENCE;
        while self.handle.get(name).map(|b| b.pinned) != Some(pinned) {
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await;
            assert!(Instant::now() < deadline, "{name} did not become pinned={pinned}");
        }
    }

    /// Waits until build `name` has `status` (`None`: is gone).
    pub(crate) async fn until_status(&self, name: &str, status: Option<&str>) {
        let rx = self.handle.with_index(|index| index.subscribe());
        let mut rx = rx;
        let deadline = Instant::now() + PATIENCE;
        while self.status(name).as_deref() != status {
            // Wake on the next index change (or a short tick, in case the
            // change happened between the check and the subscription).
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.recv()).await;
            assert!(Instant::now() < deadline, "{name} did not reach {status:?}");
        }
    }
}

/// The result of one run of the binary.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    pub(crate) fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "{self:?}");
        assert!(!self.stderr.contains("hunter2") && !self.stdout.contains("hunter2"), "{self:?}");
        self
    }
}

/// A directory for this test's files.
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("runboat-cli-{name}"));
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// `runboat` with a clean environment (no config file, no credentials)
/// pointed at `url`.
pub(crate) fn runboat(url: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_runboat"));
    let home = temp_dir("home");
    cmd.env_clear()
        .env("HOME", &home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("RUNBOAT_URL", url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// `runboat` with the admin credentials in the environment.
pub(crate) fn admin(url: &str) -> tokio::process::Command {
    let mut cmd = runboat(url);
    cmd.env("RUNBOAT_USER", "admin").env("RUNBOAT_PASSWORD", "hunter2");
    cmd
}

/// Runs `cmd` with `args` to its end (a `'static` future: it can be
/// spawned).
pub(crate) fn run(
    mut cmd: tokio::process::Command,
    args: &[&str],
) -> impl Future<Output = Run> + Send + 'static {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    async move {
        cmd.args(&args);
        let out = tokio::time::timeout(PATIENCE, cmd.output())
            .await
            .unwrap_or_else(|_| panic!("runboat {args:?} did not end"))
            .expect("runs");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
