//! An in-memory backend: commands change the index at once, following
//! SPEC's state rules, so each HTTP answer can be checked exactly. And a
//! fake GitHub.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use jiff::Timestamp;
use runboat_core::{
    Build, BuildIndex, BuildStatus, CommitInfo, InitStatus, SearchFilters, Settings,
};
use runboat_github::{ClientError, PullRequestInfo};
use runboat_server::{Backend, BackendError, GitHubLookup, Outcome};

pub(crate) struct FakeBackend {
    settings: Arc<Settings>,
    pub(crate) index: RwLock<BuildIndex>,
    pub(crate) ready: AtomicBool,
    pub(crate) failing: AtomicBool,
    pub(crate) logs: Mutex<HashMap<String, String>>,
    pub(crate) init_logs: Mutex<HashMap<String, String>>,
    pub(crate) calls: Mutex<Vec<String>>,
}

impl FakeBackend {
    pub(crate) fn new(settings: Arc<Settings>) -> Self {
        FakeBackend {
            settings,
            index: RwLock::new(BuildIndex::new()),
            ready: AtomicBool::new(true),
            failing: AtomicBool::new(false),
            logs: Mutex::default(),
            init_logs: Mutex::default(),
            calls: Mutex::default(),
        }
    }

    /// Adds a build with `status`, created `age_s` seconds after an epoch.
    pub(crate) fn add(
        &self,
        repo: &str,
        branch: &str,
        pr: Option<u64>,
        sha: &str,
        status: BuildStatus,
        created_s: i64,
    ) -> Build {
        let commit = CommitInfo::new(repo, branch, pr, sha).expect("commit");
        let init_status = match status {
            BuildStatus::Initializing => InitStatus::Todo,
            BuildStatus::Failed => InitStatus::Failed,
            _ => InitStatus::Succeeded,
        };
        let build = Build {
            name: commit.build_name(),
            deployment_name: commit.build_name(),
            commit_info: commit,
            status,
            init_status,
            desired_replicas: i32::from(status == BuildStatus::Started),
            created: Timestamp::from_second(1_700_000_000 + created_s).expect("ts"),
            last_scaled: None,
        };
        self.index.write().expect("lock").upsert(build.clone());
        build
    }

    pub(crate) fn set_status(&self, name: &str, status: BuildStatus) {
        let mut index = self.index.write().expect("lock");
        let mut b = index.get(name).cloned().expect("build");
        b.status = status;
        index.upsert(b);
    }

    pub(crate) fn remove(&self, name: &str) {
        self.index.write().expect("lock").remove(name);
    }

    pub(crate) fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }

    fn record(&self, call: String) -> Result<(), BackendError> {
        self.calls.lock().expect("lock").push(call);
        if self.failing.load(Ordering::SeqCst) {
            Err(BackendError::new("simulated cluster failure: connection refused"))
        } else {
            Ok(())
        }
    }

    fn transition(
        &self,
        name: &str,
        from: &[BuildStatus],
        to: BuildStatus,
    ) -> Result<Outcome, BackendError> {
        let mut index = self.index.write().expect("lock");
        let Some(mut b) = index.get(name).cloned() else { return Ok(Outcome::NotFound) };
        if !from.contains(&b.status) {
            return Ok(Outcome::Ignored { reason: format!("build is {}", b.status) });
        }
        b.status = to;
        index.upsert(b);
        Ok(Outcome::Done)
    }
}

#[async_trait]
impl Backend for FakeBackend {
    fn with_index(&self, f: &mut dyn FnMut(&BuildIndex)) {
        f(&self.index.read().expect("lock"));
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    async fn deploy_commit(&self, commit: CommitInfo) -> Result<Outcome, BackendError> {
        self.record(format!("deploy {}", commit.build_name()))?;
        if !self.settings.is_supported(commit.repo(), commit.target_branch()) {
            return Ok(Outcome::Unsupported { reason: "unsupported".into() });
        }
        let mut index = self.index.write().expect("lock");
        if let Some(b) = index.get_by_commit(&commit) {
            return Ok(Outcome::Ignored {
                reason: format!("commit already deployed as {}", b.name),
            });
        }
        index.upsert(Build {
            name: commit.build_name(),
            deployment_name: commit.build_name(),
            commit_info: commit,
            status: BuildStatus::Initializing,
            init_status: InitStatus::Todo,
            desired_replicas: 0,
            created: Timestamp::now(),
            last_scaled: None,
        });
        Ok(Outcome::Done)
    }

    async fn start(&self, name: &str) -> Result<Outcome, BackendError> {
        self.record(format!("start {name}"))?;
        self.transition(name, &[BuildStatus::Stopped, BuildStatus::Stopping], BuildStatus::Starting)
    }

    async fn stop(&self, name: &str) -> Result<Outcome, BackendError> {
        self.record(format!("stop {name}"))?;
        self.transition(name, &[BuildStatus::Started], BuildStatus::Stopping)
    }

    async fn reset(&self, name: &str) -> Result<Outcome, BackendError> {
        self.record(format!("reset {name}"))?;
        let all: Vec<BuildStatus> =
            BuildStatus::ALL.into_iter().filter(|s| *s != BuildStatus::Undeploying).collect();
        self.transition(name, &all, BuildStatus::Initializing)
    }

    async fn undeploy(&self, name: &str) -> Result<Outcome, BackendError> {
        self.record(format!("undeploy {name}"))?;
        let all: Vec<BuildStatus> =
            BuildStatus::ALL.into_iter().filter(|s| *s != BuildStatus::Undeploying).collect();
        self.transition(name, &all, BuildStatus::Undeploying)
    }

    async fn undeploy_matching(&self, filters: SearchFilters) -> Result<usize, BackendError> {
        self.record(format!("undeploy_matching {filters:?}"))?;
        let names: Vec<String> = {
            let index = self.index.read().expect("lock");
            index
                .search(&filters, runboat_core::SortOrder::Asc)
                .into_iter()
                .filter(|b| b.status != BuildStatus::Undeploying)
                .map(|b| b.name.clone())
                .collect()
        };
        for n in &names {
            self.set_status(n, BuildStatus::Undeploying);
        }
        Ok(names.len())
    }

    async fn init_log(&self, name: &str) -> Result<Option<String>, BackendError> {
        self.record(format!("init_log {name}"))?;
        Ok(self.init_logs.lock().expect("lock").get(name).cloned())
    }

    async fn log(&self, name: &str) -> Result<Option<String>, BackendError> {
        self.record(format!("log {name}"))?;
        Ok(self.logs.lock().expect("lock").get(name).cloned())
    }

    fn write_metrics(&self, out: &mut String) {
        out.push_str("# TYPE fake_controller_metric gauge\nfake_controller_metric 1\n");
    }
}

/// GitHub answers by (repo, branch) and (repo, pr); anything else is
/// not found; `down` makes every call fail like an outage.
#[derive(Default)]
pub(crate) struct FakeGitHub {
    pub(crate) branches: Mutex<HashMap<(String, String), String>>,
    pub(crate) prs: Mutex<HashMap<(String, u64), PullRequestInfo>>,
    pub(crate) down: AtomicBool,
}

fn outage(path: String) -> ClientError {
    ClientError::Status {
        method: http::Method::GET,
        path,
        status: http::StatusCode::SERVICE_UNAVAILABLE,
        body: "unicorn".into(),
    }
}

#[async_trait]
impl GitHubLookup for FakeGitHub {
    async fn branch_head(&self, repo: &str, branch: &str) -> Result<String, ClientError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(outage(format!("/repos/{repo}/branches/{branch}")));
        }
        self.branches
            .lock()
            .expect("lock")
            .get(&(repo.to_owned(), branch.to_owned()))
            .cloned()
            .ok_or_else(|| ClientError::NotFound { what: format!("{repo} branch {branch}") })
    }

    async fn pull_request(&self, repo: &str, pr: u64) -> Result<PullRequestInfo, ClientError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(outage(format!("/repos/{repo}/pulls/{pr}")));
        }
        self.prs
            .lock()
            .expect("lock")
            .get(&(repo.to_owned(), pr))
            .cloned()
            .ok_or_else(|| ClientError::NotFound { what: format!("{repo} pull request {pr}") })
    }
}
