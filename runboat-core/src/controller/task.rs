//! The actions: sequences of cluster calls for one build, each call retried
//! on transient errors.

use std::future::Future;
use std::sync::Arc;

use crate::build::Build;
use crate::cluster::{Cluster, ClusterError, ClusterResult, JobKind, KubefilesMode};
use crate::commit::CommitInfo;
use crate::forge::{CommitState, CommitStatus, Forge};
use crate::settings::Settings;
use crate::status::InitStatus;

use super::RetryPolicy;

/// What an action does (see [`run`] for the calls of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TaskKind {
    Deploy,
    Initialize,
    Start,
    Stop,
    Reset,
    Undeploy,
    Cleanup,
    InitStarted,
    InitSucceeded,
    InitFailed,
    CleanupSucceeded,
    DeleteOrphan,
    Requeue,
}

impl TaskKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TaskKind::Deploy => "deploy",
            TaskKind::Initialize => "initialize",
            TaskKind::Start => "start",
            TaskKind::Stop => "stop",
            TaskKind::Reset => "reset",
            TaskKind::Undeploy => "undeploy",
            TaskKind::Cleanup => "cleanup",
            TaskKind::InitStarted => "init-started",
            TaskKind::InitSucceeded => "init-succeeded",
            TaskKind::InitFailed => "init-failed",
            TaskKind::CleanupSucceeded => "cleanup-succeeded",
            TaskKind::DeleteOrphan => "delete-orphan",
            TaskKind::Requeue => "requeue",
        }
    }
}

/// One action for one build.
#[derive(Debug, Clone)]
pub(crate) struct Task {
    pub(crate) kind: TaskKind,
    pub(crate) build_name: String,
    /// Known for every action but `DeleteOrphan`.
    pub(crate) commit: Option<CommitInfo>,
}

impl Task {
    pub(crate) fn for_build(kind: TaskKind, build: &Build) -> Task {
        Task { kind, build_name: build.name.clone(), commit: Some(build.commit_info.clone()) }
    }
}

/// What actions need besides the task itself.
pub(crate) struct Ctx {
    pub(crate) cluster: Arc<dyn Cluster>,
    pub(crate) forge: Arc<dyn Forge>,
    pub(crate) settings: Arc<Settings>,
    pub(crate) retry: RetryPolicy,
}

/// A small deterministic generator for backoff jitter (splitmix64).
#[derive(Debug, Clone)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Jitter {
        Jitter(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration uniform in `[ceiling/2, ceiling]`.
    pub(crate) fn half_to_full(&mut self, ceiling: std::time::Duration) -> std::time::Duration {
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let half = nanos / 2;
        let extra = if half == 0 { 0 } else { self.next_u64() % (half + 1) };
        std::time::Duration::from_nanos(half + extra)
    }
}

fn missing_commit(task: &Task) -> ClusterError {
    ClusterError::Invalid(format!("{} of {} needs its commit", task.kind.as_str(), task.build_name))
}

impl Ctx {
    /// Calls `f` until it succeeds, fails for good, or the attempts run out.
    async fn call<T, F, Fut>(&self, jitter: &mut Jitter, what: &str, mut f: F) -> ClusterResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ClusterResult<T>>,
    {
        let mut retry = 0;
        loop {
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_transient() && retry + 1 < self.retry.max_attempts => {
                    let wait = jitter.half_to_full(self.retry.ceiling(retry));
                    tracing::debug!(call = what, error = %e, ?wait, "retrying cluster call");
                    tokio::time::sleep(wait).await;
                    retry += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn apply(
        &self,
        j: &mut Jitter,
        name: &str,
        commit: &CommitInfo,
        mode: KubefilesMode,
    ) -> ClusterResult<()> {
        self.call(j, mode.as_str(), || self.cluster.apply_kubefiles(name, commit, mode)).await
    }

    async fn scale(&self, j: &mut Jitter, name: &str, replicas: i32) -> ClusterResult<()> {
        self.call(j, "scale", || self.cluster.scale(name, replicas)).await
    }

    async fn set_init(&self, j: &mut Jitter, name: &str, st: InitStatus) -> ClusterResult<()> {
        self.call(j, "set_init_status", || self.cluster.set_init_status(name, st)).await
    }

    async fn kill(&self, j: &mut Jitter, name: &str, kind: JobKind) -> ClusterResult<()> {
        ok_if_gone(self.call(j, "kill_jobs", || self.cluster.kill_jobs(name, kind)).await)
    }

    async fn delete_resources(&self, j: &mut Jitter, name: &str) -> ClusterResult<()> {
        ok_if_gone(
            self.call(j, "delete_build_resources", || self.cluster.delete_build_resources(name))
                .await,
        )
    }

    async fn remove_finalizer(&self, j: &mut Jitter, name: &str) -> ClusterResult<()> {
        ok_if_gone(self.call(j, "remove_finalizer", || self.cluster.remove_finalizer(name)).await)
    }

    /// The build's init status read from the cluster now (`None`: no
    /// Deployment, or not a readable runboat build).
    async fn current_init_status(
        &self,
        j: &mut Jitter,
        name: &str,
    ) -> ClusterResult<Option<(InitStatus, bool)>> {
        let facts = self.call(j, "get_deployment", || self.cluster.get_deployment(name)).await?;
        Ok(facts
            .and_then(|f| Build::from_deployment_facts(&f).ok())
            .map(|b| (b.init_status, b.status == crate::status::BuildStatus::Undeploying)))
    }

    fn post(&self, task: &Task, commit: &CommitInfo, state: CommitState, description: &str) {
        if self.settings.disable_commit_statuses {
            return;
        }
        // The build page with `?live`, as the original posts: a reviewer
        // following GitHub's "Details" lands on the running instance once
        // it is started, and on the build page otherwise.
        let target_url = format!(
            "{}/builds/{}?live",
            self.settings.base_url.trim_end_matches('/'),
            task.build_name
        );
        self.forge.post_status(CommitStatus {
            repo: commit.repo().to_owned(),
            git_commit: commit.git_commit().to_owned(),
            state,
            target_url,
            description: description.to_owned(),
        });
    }

    /// Runs the cluster calls of `task`, then posts the commit statuses
    /// they earned (also when a later call failed): statuses never come
    /// between two cluster calls, so even a forge that blocks could not
    /// delay one.
    pub(crate) async fn run(&self, task: &Task, j: &mut Jitter) -> ClusterResult<()> {
        let mut posts = Vec::new();
        let result = self.calls(task, j, &mut posts).await;
        if let Some(commit) = &task.commit {
            for (state, description) in posts {
                self.post(task, commit, state, description);
            }
        }
        result
    }

    async fn calls(
        &self,
        task: &Task,
        j: &mut Jitter,
        posts: &mut Vec<(CommitState, &'static str)>,
    ) -> ClusterResult<()> {
        let name = task.build_name.as_str();
        let commit = task.commit.as_ref();
        match task.kind {
            TaskKind::Deploy => {
                let c = commit.ok_or_else(|| missing_commit(task))?;
                self.apply(j, name, c, KubefilesMode::Deployment).await?;
                posts.push((CommitState::Pending, "build queued"));
            }
            TaskKind::Initialize => {
                let c = commit.ok_or_else(|| missing_commit(task))?;
                self.apply(j, name, c, KubefilesMode::Initialize).await?;
            }
            TaskKind::Start => {
                let c = commit.ok_or_else(|| missing_commit(task))?;
                self.apply(j, name, c, KubefilesMode::Start).await?;
                self.scale(j, name, 1).await?;
            }
            TaskKind::Stop => {
                let c = commit.ok_or_else(|| missing_commit(task))?;
                self.scale(j, name, 0).await?;
                self.apply(j, name, c, KubefilesMode::Stop).await?;
            }
            TaskKind::Reset => {
                let c = commit.ok_or_else(|| missing_commit(task))?;
                self.kill(j, name, JobKind::Initialize).await?;
                self.kill(j, name, JobKind::Cleanup).await?;
                self.apply(j, name, c, KubefilesMode::Deployment).await?;
                posts.push((CommitState::Pending, "build queued"));
            }
            TaskKind::Undeploy => {
                ok_if_gone(
                    self.call(j, "delete_deployment", || self.cluster.delete_deployment(name))
                        .await,
                )?;
            }
            TaskKind::Cleanup => {
                self.kill(j, name, JobKind::Initialize).await?;
                ok_if_gone(self.scale(j, name, 0).await)?;
                if self.settings.no_cleanup_job {
                    self.delete_resources(j, name).await?;
                    self.remove_finalizer(j, name).await?;
                } else {
                    let c = commit.ok_or_else(|| missing_commit(task))?;
                    self.apply(j, name, c, KubefilesMode::Cleanup).await?;
                }
            }
            TaskKind::InitStarted => {
                if !matches!(
                    self.current_init_status(j, name).await?,
                    Some((InitStatus::Todo, false))
                ) {
                    return Ok(());
                }
                self.set_init(j, name, InitStatus::Started).await?;
                posts.push((CommitState::Pending, "initializing"));
            }
            TaskKind::InitSucceeded => {
                let c = commit.ok_or_else(|| missing_commit(task))?;
                // Job completions are acted on once: re-read the init
                // status so that a stale or replayed event cannot act twice.
                if !self.still_initializing(j, name).await? {
                    return Ok(());
                }
                self.apply(j, name, c, KubefilesMode::Stop).await?;
                self.set_init(j, name, InitStatus::Succeeded).await?;
                posts.push((CommitState::Success, "build ready"));
                if self.settings.start_after_init {
                    self.apply(j, name, c, KubefilesMode::Start).await?;
                    self.scale(j, name, 1).await?;
                }
            }
            TaskKind::InitFailed => {
                let c = commit.ok_or_else(|| missing_commit(task))?;
                if !self.still_initializing(j, name).await? {
                    return Ok(());
                }
                self.scale(j, name, 0).await?;
                self.apply(j, name, c, KubefilesMode::Stop).await?;
                self.set_init(j, name, InitStatus::Failed).await?;
                posts.push((CommitState::Failure, "initialization failed"));
            }
            TaskKind::Requeue => {
                if !matches!(
                    self.current_init_status(j, name).await?,
                    Some((InitStatus::Started, false))
                ) {
                    return Ok(());
                }
                tracing::warn!(build = name, "initializing without init job: back to todo");
                self.set_init(j, name, InitStatus::Todo).await?;
                posts.push((CommitState::Pending, "build queued"));
            }
            TaskKind::CleanupSucceeded => {
                self.delete_resources(j, name).await?;
                self.remove_finalizer(j, name).await?;
            }
            TaskKind::DeleteOrphan => {
                let existing =
                    self.call(j, "get_deployment", || self.cluster.get_deployment(name)).await?;
                if existing.is_none() {
                    tracing::info!(
                        build = name,
                        "deleting resources of a build without deployment"
                    );
                    self.delete_resources(j, name).await?;
                }
            }
        }
        Ok(())
    }

    async fn still_initializing(&self, j: &mut Jitter, name: &str) -> ClusterResult<bool> {
        Ok(matches!(
            self.current_init_status(j, name).await?,
            Some((InitStatus::Todo | InitStatus::Started, false))
        ))
    }
}

fn ok_if_gone(r: ClusterResult<()>) -> ClusterResult<()> {
    match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        assert_eq!(p.ceiling(0), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(400));
        assert_eq!(p.ceiling(4), Duration::from_secs(1));
        assert_eq!(p.ceiling(200), Duration::from_secs(1));
        let mut j = Jitter::new(7);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let d = j.half_to_full(Duration::from_millis(400));
            assert!(d >= Duration::from_millis(200) && d <= Duration::from_millis(400));
            seen.insert(d);
        }
        assert!(seen.len() > 100, "jitter spreads the waits");
    }
}
