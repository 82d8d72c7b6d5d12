//! Fixtures shared by the integration tests.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use runboat_core::forge::{CommitStatus, Forge};
use runboat_core::sim::{SimCluster, SimConfig};
use runboat_core::{
    Cluster, CommitInfo, Controller, ControllerConfig, ControllerHandle, RetryPolicy, Settings,
};

/// Settings supporting every repo and branch, with these limits.
pub(crate) fn settings(
    max_initializing: usize,
    max_started: usize,
    max_deployed: usize,
    start_after_init: bool,
    no_cleanup_job: bool,
) -> Arc<Settings> {
    let toml = format!(
        r#"
api_admin_user = "admin"
api_admin_passwd = "pw"
build_namespace = "runboat-builds"
build_domain = "runboat.example.com"
base_url = "https://runboat.example.com"
max_initializing = {max_initializing}
max_started = {max_started}
max_deployed = {max_deployed}
start_after_init = {start_after_init}
no_cleanup_job = {no_cleanup_job}

[[repos]]
repo = "oca/.*"
branch = ".*"
builds = [{{ image = "ghcr.io/oca/oca-ci:latest" }}]
"#
    );
    Arc::new(Settings::from_toml_str(&toml).expect("valid settings"))
}

/// [`settings`] (init 2, no start after init, cleanup jobs) with
/// `extra` TOML lines (such as `idle_stop_after` or `max_pinned`).
pub(crate) fn settings_with(max_started: usize, max_deployed: usize, extra: &str) -> Arc<Settings> {
    let toml = format!(
        r#"
api_admin_user = "admin"
api_admin_passwd = "pw"
build_namespace = "runboat-builds"
build_domain = "runboat.example.com"
base_url = "https://runboat.example.com"
max_initializing = 2
max_started = {max_started}
max_deployed = {max_deployed}
{extra}

[[repos]]
repo = "oca/.*"
branch = ".*"
builds = [{{ image = "ghcr.io/oca/oca-ci:latest" }}]
"#
    );
    Arc::new(Settings::from_toml_str(&toml).expect("valid settings"))
}

/// A commit of `oca/repo<repo>` on `branch`, pr optional, sha from `n`.
pub(crate) fn commit(repo: usize, branch: &str, pr: Option<u64>, n: u64) -> CommitInfo {
    CommitInfo::new(&format!("oca/repo{repo}"), branch, pr, &format!("{n:040x}"))
        .expect("valid commit")
}

/// A forge that remembers what it was given.
#[derive(Debug, Default)]
pub(crate) struct RecordingForge(pub(crate) Mutex<Vec<CommitStatus>>);

impl Forge for RecordingForge {
    fn post_status(&self, status: CommitStatus) {
        self.0.lock().expect("forge lock").push(status);
    }
}

impl RecordingForge {
    pub(crate) fn states_for(&self, git_commit: &str) -> Vec<String> {
        self.0
            .lock()
            .expect("forge lock")
            .iter()
            .filter(|s| s.git_commit == git_commit)
            .map(|s| s.state.as_str().to_owned())
            .collect()
    }
}

/// Controller tuning for simulations: fixed seed, quick retries.
pub(crate) fn config(seed: u64) -> ControllerConfig {
    ControllerConfig {
        seed,
        retry: RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        },
        reflect_timeout: Duration::from_secs(10),
        failure_backoff_max: Duration::from_secs(10),
        resubscribe_delay: Duration::from_millis(500),
        ..ControllerConfig::default()
    }
}

pub(crate) fn spawn(
    sim: &SimCluster,
    forge: Arc<dyn Forge>,
    settings: Arc<Settings>,
    seed: u64,
) -> ControllerHandle {
    let cluster: Arc<dyn Cluster> = Arc::new(sim.clone());
    // Idle stop compares the sim's `last-scaled` with the controller's
    // wall clock: both count from now on tokio's clock.
    let config = ControllerConfig { wall_clock_start: Some(sim.wall_now()), ..config(seed) };
    Controller::spawn(cluster, forge, settings, config)
}

pub(crate) fn sim(config: SimConfig) -> SimCluster {
    SimCluster::new(config)
}

/// Polls `cond` every 100 ms of (paused) time until it holds or
/// `deadline` passes; returns whether it held.
pub(crate) async fn eventually(deadline: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
