//! What the step asks the loop to do: one [`Task`] per build, each variant
//! carrying exactly the data its cluster calls need.

use std::fmt;

use crate::build::Build;
use crate::commit::CommitInfo;
use crate::status::InitStatus;

/// A build and the commit it deploys: what every task that applies kubefiles
/// or posts a commit status needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The build name (the `runboat/build` label).
    pub name: String,
    /// Its commit.
    pub commit: CommitInfo,
}

impl Target {
    /// The target of an existing build.
    pub fn of(build: &Build) -> Target {
        Target { name: build.name.clone(), commit: build.commit_info.clone() }
    }
}

/// A build superseded by a newer build of its pull request or branch (see
/// [`supersede`](super::supersede)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superseded {
    /// The old build and its commit.
    pub target: Target,
    /// The name of the build superseding it.
    pub by: String,
    /// The old build's init status (what its last commit status said).
    pub init_status: InitStatus,
}

/// One action for one build. The loop runs at most one per build at a time
/// (see [`InFlight`](super::InFlight)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Apply mode `deployment` for a new commit, post `pending`.
    Deploy(Target),
    /// Apply mode `initialize` (the init Job).
    Initialize(Target),
    /// Apply mode `start`, then scale to 1.
    Start(Target),
    /// Scale to 0, then apply mode `stop`.
    Stop(Target),
    /// Kill the jobs, apply mode `deployment` again (init status `todo`),
    /// post `pending`.
    Reset(Target),
    /// Delete the Deployment (the finalizer makes the build `undeploying`).
    Undeploy(String),
    /// Undeploy a superseded build (delete its Deployment), and say so in
    /// its commit status.
    Supersede(Superseded),
    /// Kill the init job, scale to 0 and apply mode `cleanup` (or, with
    /// `no_cleanup_job`, delete the resources and remove the finalizer).
    Cleanup(Target),
    /// The init Job runs: init status `started`, post `pending`.
    InitStarted(Target),
    /// The init Job succeeded: apply mode `stop`, init status `succeeded`,
    /// post `success` (and start with `start_after_init`).
    InitSucceeded(Target),
    /// The init Job failed: scale to 0, apply mode `stop`, init status
    /// `failed`, post `failure`.
    InitFailed(Target),
    /// Init status `started` but no init Job at all: back to `todo`.
    Requeue(Target),
    /// The cleanup Job succeeded: delete the build's resources, remove the
    /// finalizer.
    CleanupSucceeded(String),
    /// Jobs of a build that has no Deployment: delete its resources (after
    /// checking the Deployment really is gone).
    DeleteOrphan(String),
    /// Write `runboat/pinned: "true"` on the Deployment.
    Pin(String),
    /// Remove `runboat/pinned` from the Deployment.
    Unpin(String),
    /// Point the build's Ingress backends at this route and record it in
    /// `runboat/route` (with `wake_service` set).
    Route(String, crate::build::Route),
}

/// The kind of a [`Task`], without its data: what in-flight bookkeeping and
/// metrics need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskKind {
    /// [`Task::Deploy`].
    Deploy,
    /// [`Task::Initialize`].
    Initialize,
    /// [`Task::Start`].
    Start,
    /// [`Task::Stop`].
    Stop,
    /// [`Task::Reset`].
    Reset,
    /// [`Task::Undeploy`].
    Undeploy,
    /// [`Task::Supersede`].
    Supersede,
    /// [`Task::Cleanup`].
    Cleanup,
    /// [`Task::InitStarted`].
    InitStarted,
    /// [`Task::InitSucceeded`].
    InitSucceeded,
    /// [`Task::InitFailed`].
    InitFailed,
    /// [`Task::Requeue`].
    Requeue,
    /// [`Task::CleanupSucceeded`].
    CleanupSucceeded,
    /// [`Task::DeleteOrphan`].
    DeleteOrphan,
    /// [`Task::Pin`].
    Pin,
    /// [`Task::Unpin`].
    Unpin,
    /// [`Task::Route`] to the build.
    RouteBuild,
    /// [`Task::Route`] to the wake Service.
    RouteWake,
}

impl TaskKind {
    /// The label in logs and metrics: `deploy`, `init-succeeded`, …
    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Deploy => "deploy",
            TaskKind::Initialize => "initialize",
            TaskKind::Start => "start",
            TaskKind::Stop => "stop",
            TaskKind::Reset => "reset",
            TaskKind::Undeploy => "undeploy",
            TaskKind::Supersede => "supersede",
            TaskKind::Cleanup => "cleanup",
            TaskKind::InitStarted => "init-started",
            TaskKind::InitSucceeded => "init-succeeded",
            TaskKind::InitFailed => "init-failed",
            TaskKind::CleanupSucceeded => "cleanup-succeeded",
            TaskKind::DeleteOrphan => "delete-orphan",
            TaskKind::Requeue => "requeue",
            TaskKind::Pin => "pin",
            TaskKind::Unpin => "unpin",
            TaskKind::RouteBuild => "route-build",
            TaskKind::RouteWake => "route-wake",
        }
    }
}

impl Task {
    /// The build and commit, for the tasks that have a commit.
    pub fn target(&self) -> Option<&Target> {
        match self {
            Task::Deploy(t)
            | Task::Initialize(t)
            | Task::Start(t)
            | Task::Stop(t)
            | Task::Reset(t)
            | Task::Cleanup(t)
            | Task::InitStarted(t)
            | Task::InitSucceeded(t)
            | Task::InitFailed(t)
            | Task::Requeue(t) => Some(t),
            Task::Supersede(s) => Some(&s.target),
            Task::Undeploy(_)
            | Task::CleanupSucceeded(_)
            | Task::DeleteOrphan(_)
            | Task::Pin(_)
            | Task::Unpin(_)
            | Task::Route(..) => None,
        }
    }

    /// The build the task is about.
    pub fn build_name(&self) -> &str {
        match self {
            Task::Undeploy(n)
            | Task::CleanupSucceeded(n)
            | Task::DeleteOrphan(n)
            | Task::Pin(n)
            | Task::Unpin(n)
            | Task::Route(n, _) => n,
            // Every other variant has a target.
            other => other.target().map_or("", |t| &t.name),
        }
    }

    /// The commit, for the tasks that have one.
    pub fn commit(&self) -> Option<&CommitInfo> {
        self.target().map(|t| &t.commit)
    }

    /// The task's kind.
    pub fn kind(&self) -> TaskKind {
        match self {
            Task::Deploy(_) => TaskKind::Deploy,
            Task::Initialize(_) => TaskKind::Initialize,
            Task::Start(_) => TaskKind::Start,
            Task::Stop(_) => TaskKind::Stop,
            Task::Reset(_) => TaskKind::Reset,
            Task::Undeploy(_) => TaskKind::Undeploy,
            Task::Supersede(_) => TaskKind::Supersede,
            Task::Cleanup(_) => TaskKind::Cleanup,
            Task::InitStarted(_) => TaskKind::InitStarted,
            Task::InitSucceeded(_) => TaskKind::InitSucceeded,
            Task::InitFailed(_) => TaskKind::InitFailed,
            Task::Requeue(_) => TaskKind::Requeue,
            Task::CleanupSucceeded(_) => TaskKind::CleanupSucceeded,
            Task::DeleteOrphan(_) => TaskKind::DeleteOrphan,
            Task::Pin(_) => TaskKind::Pin,
            Task::Unpin(_) => TaskKind::Unpin,
            Task::Route(_, crate::build::Route::Build) => TaskKind::RouteBuild,
            Task::Route(_, crate::build::Route::Wake) => TaskKind::RouteWake,
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind().as_str(), self.build_name())
    }
}
