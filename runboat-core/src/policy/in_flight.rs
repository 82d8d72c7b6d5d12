//! What the controller is doing right now, per build: the bookkeeping that
//! keeps the step from issuing an action twice while events lag behind.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

use super::jobs::JobTable;
use super::task::{Task, TaskKind};
use crate::cluster::JobKind;
use crate::index::BuildIndex;
use crate::status::{BuildStatus, InitStatus};

/// A build in backoff after failed actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    until: Instant,
    failures: u32,
}

/// The actions of the controller that are running or whose effect has not
/// shown yet, per build. Plain data: the loop records what it spawned and
/// what ended, the step reads it, and [`InFlight::settle`] drops what the
/// events now show.
///
/// A build is *busy* while an action runs for it, while a finished action
/// awaits its effect (until the events show it or the reflect timeout
/// passes), and while it is in backoff after a failure: the step issues
/// nothing for a busy build.
#[derive(Debug, Default, Clone)]
pub struct InFlight {
    running: HashMap<String, TaskKind>,
    /// Finished actions whose effect has not shown in the events yet, with
    /// the deadline after which the build is considered again anyway.
    awaiting: HashMap<String, (TaskKind, Instant)>,
    /// Builds with an initialize action running, or finished (even with an
    /// error: the Job may exist all the same) and its Job not seen yet,
    /// until the given deadline. They count against `max_initializing`.
    initializing: HashMap<String, Instant>,
    backoff: HashMap<String, Backoff>,
}

/// What [`InFlight::end`] recorded for a finished action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The action's kind.
    pub kind: TaskKind,
    /// When the build must be looked at again: the reflect deadline (after
    /// a success, and after any initialize action) and the end of its
    /// backoff (after a failure).
    pub wake_at: Vec<Instant>,
    /// How many failures in a row the build has had (0 on success).
    pub failures: u32,
}

impl InFlight {
    /// Nothing in flight.
    pub fn new() -> InFlight {
        InFlight::default()
    }

    /// Records that `task` was spawned at `now`.
    pub fn begin(&mut self, task: &Task, now: Instant, reflect_timeout: Duration) {
        let name = task.build_name().to_owned();
        if task.kind() == TaskKind::Initialize {
            self.initializing.insert(name.clone(), now + reflect_timeout);
        }
        self.running.insert(name, task.kind());
    }

    /// Forgets everything about `build`: its action was aborted because
    /// this replica lost the leadership (a later leader decides again from
    /// the cluster alone).
    pub fn forget(&mut self, build: &str) {
        self.running.remove(build);
        self.awaiting.remove(build);
        self.initializing.remove(build);
        self.backoff.remove(build);
    }

    /// Records that the action running for `build` ended, successfully or
    /// not; `backoff(failures)` gives the wait before the build may be
    /// retried after its `failures`-th failure in a row. `None` when no
    /// action was recorded as running for `build`.
    pub fn end(
        &mut self,
        build: &str,
        ok: bool,
        now: Instant,
        reflect_timeout: Duration,
        backoff: impl FnOnce(u32) -> Duration,
    ) -> Option<Ended> {
        let kind = self.running.remove(build)?;
        let deadline = now + reflect_timeout;
        if kind == TaskKind::Initialize {
            self.initializing.insert(build.to_owned(), deadline);
        }
        if ok {
            self.backoff.remove(build);
            self.awaiting.insert(build.to_owned(), (kind, deadline));
            return Some(Ended { kind, wake_at: vec![deadline], failures: 0 });
        }
        let entry =
            self.backoff.entry(build.to_owned()).or_insert(Backoff { until: now, failures: 0 });
        entry.failures = entry.failures.saturating_add(1);
        entry.until = now + backoff(entry.failures);
        let mut wake_at = vec![entry.until];
        if kind == TaskKind::Initialize {
            wake_at.push(deadline);
        }
        Some(Ended { kind, wake_at, failures: entry.failures })
    }

    /// Drops, for the builds in `names`, the awaited effects that now show
    /// in the index and the job table (or whose deadline passed), and the
    /// initialize actions whose Job appeared.
    pub fn settle(
        &mut self,
        index: &BuildIndex,
        jobs: &JobTable,
        names: &BTreeSet<String>,
        now: Instant,
        no_cleanup_job: bool,
    ) {
        for name in names {
            if let Some(&(kind, deadline)) = self.awaiting.get(name)
                && (deadline <= now || reflected(index, jobs, kind, name, no_cleanup_job))
            {
                if deadline <= now {
                    tracing::debug!(
                        build = name,
                        action = kind.as_str(),
                        "effect not seen in time"
                    );
                }
                self.awaiting.remove(name);
            }
            if let Some(&deadline) = self.initializing.get(name)
                && ((deadline <= now && !self.running.contains_key(name))
                    || index.get(name).is_none_or(|b| b.status == BuildStatus::Undeploying)
                    || jobs.has_live(name, JobKind::Initialize))
            {
                self.initializing.remove(name);
            }
            if self.backoff.get(name).is_some_and(|b| b.until <= now)
                && index.get(name).is_none()
                && jobs.all(name).next().is_none()
            {
                // Gone for good (no Deployment, no Job left to delete):
                // nothing left to retry. While jobs are left, the failure
                // count stays, so a failing orphan deletion backs off more
                // each time.
                self.backoff.remove(name);
            }
        }
    }

    /// True when nothing may be issued for `build` now.
    pub fn busy(&self, build: &str, now: Instant) -> bool {
        self.running.contains_key(build)
            || self.awaiting.contains_key(build)
            || self.backoff.get(build).is_some_and(|b| b.until > now)
    }

    /// The kind of the action running for `build`, if any.
    pub fn running(&self, build: &str) -> Option<TaskKind> {
        self.running.get(build).copied()
    }

    /// How many actions of `kind` run or await their effect.
    pub fn count_of(&self, kind: TaskKind) -> usize {
        self.running.values().filter(|k| **k == kind).count()
            + self.awaiting.values().filter(|(k, _)| *k == kind).count()
    }

    /// How many actions run.
    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// Builds with an initialize action not reflected by a Job yet.
    pub fn initializing(&self) -> impl Iterator<Item = &str> {
        self.initializing.keys().map(String::as_str)
    }

    /// True when no action runs, none awaits its effect and no backoff is
    /// pending.
    pub fn is_quiet(&self, now: Instant) -> bool {
        self.running.is_empty()
            && self.awaiting.is_empty()
            && self.backoff.values().all(|b| b.until <= now)
    }
}

/// Whether the effect of a finished `kind` action on `name` shows in the
/// index and the job table.
fn reflected(
    index: &BuildIndex,
    jobs: &JobTable,
    kind: TaskKind,
    name: &str,
    no_cleanup_job: bool,
) -> bool {
    let build = index.get(name);
    let undeploying = build.is_some_and(|b| b.status == BuildStatus::Undeploying);
    let init = build.map(|b| b.init_status);
    match kind {
        TaskKind::Deploy => build.is_some(),
        // Only the Job itself: a stale Deployment event may show a non-todo
        // init status while the new Job is not counted yet.
        TaskKind::Initialize => {
            build.is_none() || undeploying || jobs.has_live(name, JobKind::Initialize)
        }
        TaskKind::Start => build.is_none_or(|b| undeploying || b.desired_replicas > 0),
        TaskKind::Stop => build.is_none_or(|b| b.desired_replicas == 0),
        TaskKind::Reset => {
            build.is_none()
                || undeploying
                || (init == Some(InitStatus::Todo) && !jobs.has_live(name, JobKind::Initialize))
        }
        TaskKind::Undeploy | TaskKind::Supersede => build.is_none() || undeploying,
        TaskKind::Cleanup => {
            build.is_none() || (!no_cleanup_job && jobs.has_live(name, JobKind::Cleanup))
        }
        TaskKind::InitStarted => init != Some(InitStatus::Todo) || undeploying,
        TaskKind::Requeue => init != Some(InitStatus::Started) || undeploying,
        TaskKind::InitSucceeded | TaskKind::InitFailed => {
            !matches!(init, Some(InitStatus::Todo | InitStatus::Started)) || undeploying
        }
        TaskKind::CleanupSucceeded => build.is_none(),
        TaskKind::DeleteOrphan => build.is_some() || jobs.live(name, None).next().is_none(),
        TaskKind::Pin => build.is_none_or(|b| b.pinned || undeploying),
        TaskKind::Unpin => build.is_none_or(|b| !b.pinned),
        TaskKind::RouteBuild => build.is_none_or(|b| b.route == Some(crate::build::Route::Build)),
        TaskKind::RouteWake => build.is_none_or(|b| b.route == Some(crate::build::Route::Wake)),
    }
}
