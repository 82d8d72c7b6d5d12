//! The effects of the step's [`Task`]s: sequences of cluster calls for one
//! build, each call retried on transient errors, then the commit statuses
//! they earned.

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;

use crate::build::Build;
use crate::cluster::{Cluster, ClusterResult, JobKind, KubefilesMode};
use crate::commit::CommitInfo;
use crate::forge::{CommitState, CommitStatus, DeploymentState, DeploymentUpdate, Forge};

/// A commit status (if any) and a deployment state a task earned, with
/// their description.
type Post = (Option<CommitState>, DeploymentState, Cow<'static, str>);
use crate::policy::{Superseded, Target, Task};
use crate::progress::{Progress, Step, ready_in};
use crate::rng::SeededRng;
use crate::settings::Settings;
use crate::status::InitStatus;

/// The backoff jitter of one action.
pub(super) type Jitter = SeededRng;

use super::RetryPolicy;

/// What actions need besides the task itself.
pub(super) struct Ctx {
    pub(super) cluster: Arc<dyn Cluster>,
    pub(super) forge: Arc<dyn Forge>,
    pub(super) settings: Arc<Settings>,
    pub(super) retry: RetryPolicy,
    /// The duration estimates, for the "ready in ~N min" of a status.
    pub(super) progress: Arc<std::sync::Mutex<Progress>>,
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
                    tracing::debug!(call = what, error = %crate::error::chain(&e), ?wait, "retrying cluster call");
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

    fn post(&self, name: &str, commit: &CommitInfo, state: CommitState, description: &str) {
        if self.settings.disable_commit_statuses {
            return;
        }
        // The build page with `?live`, as the original posts: a reviewer
        // following GitHub's "Details" lands on the running instance once
        // it is started, and on the build page otherwise.
        let target_url =
            format!("{}/builds/{}?live", self.settings.base_url.trim_end_matches('/'), name);
        self.forge.post_status(CommitStatus {
            repo: commit.repo().to_owned(),
            git_commit: commit.git_commit().to_owned(),
            state,
            target_url,
            description: description.to_owned(),
        });
    }

    /// Queues the deployment update of `state` for build `name`, when
    /// `github_deployments` is on.
    fn post_deployment(
        &self,
        name: &str,
        commit: &CommitInfo,
        state: DeploymentState,
        description: &str,
    ) {
        if !self.settings.github_deployments {
            return;
        }
        let s = &self.settings;
        let base = s.base_url.trim_end_matches('/');
        let (environment, transient) = match commit.pr() {
            Some(pr) => (format!("runboat/{}-pr{pr}", commit.target_branch()), true),
            None => (format!("runboat/{}", commit.target_branch()), false),
        };
        let build_page = format!("{base}/builds/{name}");
        let (environment_url, log_url) = match state {
            DeploymentState::Success => {
                let slug = commit.slug();
                (format!("http://{slug}.{}", s.build_domain), build_page)
            }
            DeploymentState::Failure | DeploymentState::Error => {
                (String::new(), format!("{base}/api/v1/builds/{name}/init-log"))
            }
            _ => (String::new(), build_page),
        };
        self.forge.post_deployment(DeploymentUpdate {
            repo: commit.repo().to_owned(),
            git_commit: commit.git_commit().to_owned(),
            build_name: name.to_owned(),
            environment,
            transient,
            state,
            environment_url,
            log_url,
            description: description.to_owned(),
        });
    }

    /// Runs the cluster calls of `task`, then posts the commit statuses
    /// they earned (also when a later call failed): statuses never come
    /// between two cluster calls, so even a forge that blocks could not
    /// delay one.
    pub(super) async fn run(&self, task: &Task, j: &mut Jitter) -> ClusterResult<()> {
        let mut posts = Vec::new();
        let result = self.calls(task, j, &mut posts).await;
        if let Some(commit) = task.commit() {
            for (state, deployment, description) in posts {
                if let Some(state) = state {
                    self.post(task.build_name(), commit, state, &description);
                }
                self.post_deployment(task.build_name(), commit, deployment, &description);
            }
        }
        result
    }

    async fn calls(&self, task: &Task, j: &mut Jitter, posts: &mut Vec<Post>) -> ClusterResult<()> {
        match task {
            Task::Deploy(Target { name, commit }) => {
                self.apply(j, name, commit, KubefilesMode::Deployment).await?;
                posts.push((
                    Some(CommitState::Pending),
                    DeploymentState::Queued,
                    Cow::Borrowed("build queued"),
                ));
            }
            Task::Initialize(Target { name, commit }) => {
                self.apply(j, name, commit, KubefilesMode::Initialize).await?;
            }
            Task::Start(Target { name, commit }) => {
                self.apply(j, name, commit, KubefilesMode::Start).await?;
                self.scale(j, name, 1).await?;
            }
            Task::Stop(Target { name, commit }) => {
                self.scale(j, name, 0).await?;
                self.apply(j, name, commit, KubefilesMode::Stop).await?;
            }
            Task::Reset(Target { name, commit }) => {
                self.kill(j, name, JobKind::Initialize).await?;
                self.kill(j, name, JobKind::Cleanup).await?;
                self.apply(j, name, commit, KubefilesMode::Deployment).await?;
                posts.push((
                    Some(CommitState::Pending),
                    DeploymentState::Queued,
                    Cow::Borrowed("build queued"),
                ));
            }
            Task::Undeploy(name) => {
                ok_if_gone(
                    self.call(j, "delete_deployment", || self.cluster.delete_deployment(name))
                        .await,
                )?;
            }
            Task::Supersede(Superseded { target, by, init_status }) => {
                ok_if_gone(
                    self.call(j, "delete_deployment", || {
                        self.cluster.delete_deployment(&target.name)
                    })
                    .await,
                )?;
                // The old commit's status says what happened to its build;
                // its state stays what the build had earned.
                let state = match init_status {
                    InitStatus::Succeeded => CommitState::Success,
                    InitStatus::Failed => CommitState::Failure,
                    InitStatus::Todo | InitStatus::Started => CommitState::Error,
                };
                posts.push((
                    Some(state),
                    DeploymentState::Inactive,
                    Cow::Owned(format!("superseded by {by}")),
                ));
            }
            Task::Cleanup(Target { name, commit }) => {
                // Undeploying: the deployment goes inactive (no commit
                // status: the commit's stays what the build earned).
                posts.push((None, DeploymentState::Inactive, Cow::Borrowed("undeployed")));
                self.kill(j, name, JobKind::Initialize).await?;
                ok_if_gone(self.scale(j, name, 0).await)?;
                if self.settings.no_cleanup_job {
                    self.delete_resources(j, name).await?;
                    self.remove_finalizer(j, name).await?;
                } else {
                    self.apply(j, name, commit, KubefilesMode::Cleanup).await?;
                }
            }
            Task::InitStarted(Target { name, commit }) => {
                if !matches!(
                    self.current_init_status(j, name).await?,
                    Some((InitStatus::Todo, false))
                ) {
                    return Ok(());
                }
                self.set_init(j, name, InitStatus::Started).await?;
                let estimate = self
                    .progress
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .estimator()
                    .estimate(Step::Initialize, commit.repo(), commit.target_branch());
                let description = match estimate {
                    Some(d) => Cow::Owned(format!("initializing, {}", ready_in(d.as_secs()))),
                    None => Cow::Borrowed("initializing"),
                };
                posts.push((Some(CommitState::Pending), DeploymentState::InProgress, description));
            }
            Task::InitSucceeded(Target { name, commit }) => {
                // Job completions are acted on once: re-read the init
                // status so that a stale or replayed event cannot act twice.
                if !self.still_initializing(j, name).await? {
                    return Ok(());
                }
                self.apply(j, name, commit, KubefilesMode::Stop).await?;
                self.set_init(j, name, InitStatus::Succeeded).await?;
                posts.push((
                    Some(CommitState::Success),
                    DeploymentState::Success,
                    Cow::Borrowed("build ready"),
                ));
                if self.settings.start_after_init {
                    self.apply(j, name, commit, KubefilesMode::Start).await?;
                    self.scale(j, name, 1).await?;
                }
            }
            Task::InitFailed(Target { name, commit }) => {
                if !self.still_initializing(j, name).await? {
                    return Ok(());
                }
                self.scale(j, name, 0).await?;
                self.apply(j, name, commit, KubefilesMode::Stop).await?;
                self.set_init(j, name, InitStatus::Failed).await?;
                posts.push((
                    Some(CommitState::Failure),
                    DeploymentState::Failure,
                    Cow::Borrowed("initialization failed"),
                ));
            }
            Task::Requeue(Target { name, .. }) => {
                if !matches!(
                    self.current_init_status(j, name).await?,
                    Some((InitStatus::Started, false))
                ) {
                    return Ok(());
                }
                tracing::warn!(build = name, "initializing without init job: back to todo");
                self.set_init(j, name, InitStatus::Todo).await?;
                posts.push((
                    Some(CommitState::Pending),
                    DeploymentState::Queued,
                    Cow::Borrowed("build queued"),
                ));
            }
            Task::CleanupSucceeded(name) => {
                self.delete_resources(j, name).await?;
                self.remove_finalizer(j, name).await?;
            }
            Task::Pin(name) => {
                self.call(j, "set_pinned", || self.cluster.set_pinned(name, true)).await?;
            }
            Task::Route(name, route) => {
                self.call(j, "set_route", || self.cluster.set_route(name, *route)).await?;
            }
            Task::Unpin(name) => {
                self.call(j, "set_pinned", || self.cluster.set_pinned(name, false)).await?;
            }
            Task::DeleteOrphan(name) => {
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
    fn backoff_ceiling_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        assert_eq!(p.ceiling(0), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(400));
        assert_eq!(p.ceiling(4), Duration::from_secs(1));
        assert_eq!(p.ceiling(200), Duration::from_secs(1));
    }
}
